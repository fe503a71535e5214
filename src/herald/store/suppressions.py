"""The suppression list: addresses Herald must never mail again."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, select

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
