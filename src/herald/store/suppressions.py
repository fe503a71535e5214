"""The suppression list: addresses Herald must never mail again."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select

from herald.store.dialect import insert_ignore
from herald.store.tables import suppressions


def suppress(
    conn: Connection, emails: Iterable[str], *, reason: str, source: str, now: datetime
) -> None:
    """Add addresses to the suppression list; existing entries are kept as they are."""
    rows = [
        {"email": e, "reason": reason, "source": source[:500], "created_at": now} for e in emails
    ]
    if rows:
        conn.execute(insert_ignore(conn, suppressions), rows)


def is_suppressed(conn: Connection, email: str) -> bool:
    return (
        conn.scalar(select(suppressions.c.email).where(suppressions.c.email == email)) is not None
    )


def search_suppressions(
    conn: Connection, *, email: str | None, after: str, limit: int
) -> list[dict[str, Any]]:
    """Suppressions whose address contains ``email``, by address, after ``after`` (keyset)."""
    query = select(suppressions).where(suppressions.c.email > after)
    if email:
        escaped = email.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(suppressions.c.email.like(f"%{escaped}%", escape="\\"))
    query = query.order_by(suppressions.c.email).limit(limit)
    return [dict(r) for r in conn.execute(query).mappings()]


def get_suppression(conn: Connection, email: str) -> dict[str, Any] | None:
    row = conn.execute(select(suppressions).where(suppressions.c.email == email)).mappings()
    found = row.first()
    return None if found is None else dict(found)


def unsuppress(conn: Connection, email: str) -> bool:
    """Remove an address from the suppression list; False when it was not there."""
    return conn.execute(delete(suppressions).where(suppressions.c.email == email)).rowcount == 1
