"""What the public pages write: subscriptions by consent, consent records, throttles."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update

from herald.domain.clock import as_utc
from herald.store.dialect import insert_ignore
from herald.store.tables import consents, lists, public_throttle, subscribers, subscriptions


def hit(conn: Connection, key: str, *, limit: int, window: timedelta, now: datetime) -> float:
    """Count one hit on ``key``; returns 0 when within ``limit`` per ``window``,
    else the seconds until the window ends.

    Side effect: creates or updates the key's row (a fixed window). On
    PostgreSQL the row is locked, so two nodes cannot both take the last hit.
    """
    conn.execute(insert_ignore(conn, public_throttle).values(key=key, hits=0, window_start=now))
    query = select(public_throttle.c.hits, public_throttle.c.window_start).where(
        public_throttle.c.key == key
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).one()
    start = as_utc(row.window_start)
    if now - start >= window:
        values: dict[str, Any] = {"hits": 1, "window_start": now}
    elif row.hits < limit:
        values = {"hits": row.hits + 1}
    else:
        return max((start + window - now).total_seconds(), 1.0)
    conn.execute(update(public_throttle).where(public_throttle.c.key == key).values(**values))
    return 0.0


def public_lists(conn: Connection) -> list[dict[str, Any]]:
    """Id, name, description and opt-in of every public list, by name."""
    query = select(lists.c.id, lists.c.name, lists.c.description, lists.c.optin)
    rows = conn.execute(query.where(lists.c.public.is_(True)).order_by(lists.c.name))
    return [dict(r) for r in rows.mappings()]


def subscription_status(conn: Connection, subscriber_id: int, list_id: int) -> str | None:
    return conn.scalar(
        select(subscriptions.c.status).where(
            subscriptions.c.subscriber_id == subscriber_id, subscriptions.c.list_id == list_id
        )
    )


def set_subscription(
    conn: Connection, subscriber_id: int, list_id: int, *, status: str, now: datetime
) -> bool:
    """Make the subscription ``status`` (inserting it if missing); False if it already was."""
    inserted = conn.execute(
        insert_ignore(conn, subscriptions).values(
            subscriber_id=subscriber_id,
            list_id=list_id,
            status=status,
            created_at=now,
            updated_at=now,
        )
    ).rowcount
    if inserted == 1:
        return True
    result = conn.execute(
        update(subscriptions)
        .where(
            subscriptions.c.subscriber_id == subscriber_id,
            subscriptions.c.list_id == list_id,
            subscriptions.c.status != status,
        )
        .values(status=status, updated_at=now)
    )
    return result.rowcount == 1


def confirm(conn: Connection, subscriber_id: int, list_id: int, *, now: datetime) -> bool:
    """``unconfirmed`` → ``confirmed`` (a guarded update); False when it was not unconfirmed."""
    result = conn.execute(
        update(subscriptions)
        .where(
            subscriptions.c.subscriber_id == subscriber_id,
            subscriptions.c.list_id == list_id,
            subscriptions.c.status == "unconfirmed",
        )
        .values(status="confirmed", updated_at=now)
    )
    return result.rowcount == 1


def record_consent(
    conn: Connection,
    subscriber_id: int,
    list_id: int,
    *,
    action: str,
    source: str,
    ip: str | None,
    now: datetime,
) -> None:
    """Append a consent record (subscribe, confirm, preferences)."""
    conn.execute(
        insert(consents).values(
            subscriber_id=subscriber_id,
            list_id=list_id,
            action=action,
            source=source[:64],
            ip=ip,
            at=now,
        )
    )


def consent_log(conn: Connection, subscriber_id: int) -> list[dict[str, Any]]:
    """A subscriber's consent records, oldest first."""
    query = select(consents).where(consents.c.subscriber_id == subscriber_id)
    return [dict(r) for r in conn.execute(query.order_by(consents.c.id)).mappings()]


def subscriber(conn: Connection, subscriber_id: int) -> dict[str, Any] | None:
    """Id, email, name and status of a subscriber, or None."""
    query = select(subscribers.c.id, subscribers.c.email, subscribers.c.name, subscribers.c.status)
    row = conn.execute(query.where(subscribers.c.id == subscriber_id)).mappings().first()
    return None if row is None else dict(row)
