"""Stored SMTP relays: one row per relay, keyed by the name users type."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select, update

from herald.store.dialect import insert_ignore
from herald.store.tables import relays


def insert_relay(conn: Connection, values: dict[str, Any], *, now: datetime) -> bool:
    """Insert a relay row; False (and nothing written) when the name is taken."""
    row = {**values, "created_at": now, "updated_at": now}
    # RETURNING rather than rowcount: psycopg reports -1 for an INSERT … RETURNING.
    inserted = conn.execute(insert_ignore(conn, relays).values(**row).returning(relays.c.id))
    return inserted.first() is not None


def get_relay(conn: Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(select(relays).where(relays.c.name == name)).mappings().first()
    return None if row is None else dict(row)


def list_relays(conn: Connection, *, enabled_only: bool = False) -> list[dict[str, Any]]:
    """Every relay row (sealed password included), in name order."""
    query = select(relays).order_by(relays.c.name)
    if enabled_only:
        query = query.where(relays.c.enabled.is_(True))
    return [dict(r) for r in conn.execute(query).mappings()]


def update_relay(conn: Connection, name: str, values: dict[str, Any], *, now: datetime) -> bool:
    """Change columns of relay ``name``; False when there is no such relay."""
    result = conn.execute(
        update(relays).where(relays.c.name == name).values(**values, updated_at=now)
    )
    return result.rowcount == 1


def delete_relay(conn: Connection, name: str) -> bool:
    """Delete relay ``name``; False when there is no such relay."""
    return conn.execute(delete(relays).where(relays.c.name == name)).rowcount == 1


def record_activity(
    conn: Connection,
    name: str,
    *,
    sent: int,
    deferred: int,
    failed: int,
    latency_ms: float | None,
    state: str | None,
    last_error: str | None,
    now: datetime,
) -> None:
    """Add a node's outcome counts to relay ``name`` (an increment in SQL: nodes never
    overwrite each other's counts); with ``state``, also store the breaker's new state.

    A relay removed meanwhile is silently skipped.
    """
    values: dict[str, Any] = {
        "sent": relays.c.sent + sent,
        "deferred": relays.c.deferred + deferred,
        "failed": relays.c.failed + failed,
    }
    if latency_ms is not None:
        values["latency_ms"] = latency_ms
    if last_error is not None:
        values["last_error"] = last_error[:500]
    if state is not None:
        values.update(state=state, state_at=now)
    conn.execute(update(relays).where(relays.c.name == name).values(**values))
