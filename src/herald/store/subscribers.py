"""Subscribers, and their subscriptions as seen from the subscriber.

Addresses are stored normalised (see ``domain.addresses``): callers pass
normalised addresses. The batch functions serve bulk imports: one statement per
batch, never one per row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    DateTime,
    String,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)

from herald.store.dialect import insert_ignore
from herald.store.tables import Id, subscribers, subscriptions, suppressions


def get_subscriber_by_email(conn: Connection, email: str) -> dict[str, Any] | None:
    """The subscriber row for a normalised address, or None."""
    row = conn.execute(select(subscribers).where(subscribers.c.email == email)).mappings().first()
    return None if row is None else dict(row)


def count_subscribers(conn: Connection) -> int:
    return int(conn.scalar(select(func.count()).select_from(subscribers)) or 0)


def find_for_import(
    conn: Connection, emails: Sequence[str], *, list_id: int
) -> dict[str, dict[str, Any]]:
    """Existing subscribers among ``emails``, keyed by email, in one SELECT.

    Each value has id, name, attribs, status and ``subscription``: the status of
    the subscription to ``list_id``, or None if there is none.
    """
    joined = subscribers.outerjoin(
        subscriptions,
        and_(subscriptions.c.subscriber_id == subscribers.c.id, subscriptions.c.list_id == list_id),
    )
    stmt = (
        select(
            subscribers.c.id,
            subscribers.c.email,
            subscribers.c.name,
            subscribers.c.attribs,
            subscribers.c.status,
            subscriptions.c.status.label("subscription"),
        )
        .select_from(joined)
        .where(subscribers.c.email.in_(emails))
    )
    return {row["email"]: dict(row) for row in conn.execute(stmt).mappings()}


def suppressed_among(conn: Connection, emails: Sequence[str]) -> dict[str, str]:
    """The addresses among ``emails`` on the suppression list, with their reason."""
    stmt = select(suppressions.c.email, suppressions.c.reason).where(
        suppressions.c.email.in_(emails)
    )
    return {email: reason for email, reason in conn.execute(stmt)}


def insert_subscribers(
    conn: Connection, rows: Sequence[Mapping[str, Any]], *, status: str, now: datetime
) -> None:
    """Insert new subscribers (keys: email, name, attribs) with ``status``.

    Raises IntegrityError if an address already exists (a concurrent insert).
    """
    if not rows:
        return
    params = [
        {
            "email": r["email"],
            "name": r["name"],
            "attribs": r["attribs"],
            "status": status,
            "created_at": now,
            "updated_at": now,
        }
        for r in rows
    ]
    conn.execute(insert(subscribers), params)


def update_subscriber_data(
    conn: Connection, changes: Sequence[Mapping[str, Any]], *, now: datetime
) -> None:
    """Set name and attribs (keys: id, name, attribs) and bump ``updated_at``.

    Status is left alone: a blocklisted subscriber stays blocklisted.
    """
    if not changes:
        return
    stmt = (
        update(subscribers)
        .where(subscribers.c.id == bindparam("b_id"))
        .values(
            name=bindparam("b_name"),
            attribs=bindparam("b_attribs", type_=subscribers.c.attribs.type),
            updated_at=now,
        )
    )
    params = [{"b_id": c["id"], "b_name": c["name"], "b_attribs": c["attribs"]} for c in changes]
    conn.execute(stmt, params)


def subscribe_emails(
    conn: Connection, emails: Sequence[str], *, list_id: int, status: str, now: datetime
) -> None:
    """Subscribe the subscribers with these addresses to ``list_id`` with ``status``.

    One ``INSERT … SELECT``. Raises IntegrityError if one of them is already
    subscribed (a concurrent insert) or the list was deleted.
    """
    if not emails:
        return
    stamp = DateTime(timezone=True)
    source = select(
        literal(list_id, Id),
        subscribers.c.id,
        literal(status, String()),
        literal(now, stamp),
        literal(now, stamp),
    ).where(subscribers.c.email.in_(emails))
    columns = ["list_id", "subscriber_id", "status", "created_at", "updated_at"]
    conn.execute(insert(subscriptions).from_select(columns, source))


def get_subscriber(conn: Connection, subscriber_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).mappings()
    found = row.first()
    return None if found is None else dict(found)


def insert_subscriber(conn: Connection, values: Mapping[str, Any], *, now: datetime) -> int | None:
    """Insert one subscriber; None (nothing written) when the address exists."""
    row = {**values, "created_at": now, "updated_at": now}
    result = conn.execute(
        insert_ignore(conn, subscribers).values(**row).returning(subscribers.c.id)
    )
    return result.scalar()


def update_subscriber(
    conn: Connection, subscriber_id: int, values: Mapping[str, Any], *, now: datetime
) -> bool:
    stmt = update(subscribers).where(subscribers.c.id == subscriber_id)
    return conn.execute(stmt.values(**values, updated_at=now)).rowcount == 1


def delete_subscriber(conn: Connection, subscriber_id: int) -> bool:
    """Delete a subscriber with their subscriptions and deliveries (the foreign keys cascade)."""
    stmt = delete(subscribers).where(subscribers.c.id == subscriber_id)
    return conn.execute(stmt).rowcount == 1


def search_subscribers(
    conn: Connection,
    *,
    email: str | None = None,
    status: str | None = None,
    list_id: int | None = None,
    attribute: tuple[str, str] | None = None,
    after: int = 0,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Subscribers matching every filter given, by id, from id ``after`` on (keyset paging).

    ``email`` matches a substring of the (normalised) address; ``attribute``
    is (key, value) compared as text.
    """
    query = select(subscribers).where(subscribers.c.id > after)
    if email:
        escaped = email.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(subscribers.c.email.like(f"%{escaped}%", escape="\\"))
    if status:
        query = query.where(subscribers.c.status == status)
    if list_id is not None:
        member = select(subscriptions.c.subscriber_id).where(subscriptions.c.list_id == list_id)
        query = query.where(subscribers.c.id.in_(member))
    if attribute is not None:
        key, value = attribute
        query = query.where(subscribers.c.attribs[key].as_string() == value)
    query = query.order_by(subscribers.c.id).limit(limit)
    return [dict(r) for r in conn.execute(query).mappings()]


def subscriptions_of(conn: Connection, subscriber_id: int) -> list[dict[str, Any]]:
    query = (
        select(subscriptions.c.list_id, subscriptions.c.status, subscriptions.c.updated_at)
        .where(subscriptions.c.subscriber_id == subscriber_id)
        .order_by(subscriptions.c.list_id)
    )
    return [dict(r) for r in conn.execute(query).mappings()]


def set_subscription(
    conn: Connection, subscriber_id: int, list_id: int, status: str, *, now: datetime
) -> None:
    """Subscribe, or change the status of an existing subscription."""
    changed = conn.execute(
        update(subscriptions)
        .where(subscriptions.c.list_id == list_id, subscriptions.c.subscriber_id == subscriber_id)
        .values(status=status, updated_at=now)
    )
    if changed.rowcount == 0:
        values = {"list_id": list_id, "subscriber_id": subscriber_id, "status": status}
        conn.execute(
            insert_ignore(conn, subscriptions).values(**values, created_at=now, updated_at=now)
        )
