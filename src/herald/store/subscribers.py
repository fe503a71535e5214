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
    func,
    insert,
    literal,
    select,
    update,
)

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
