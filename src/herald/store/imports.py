"""CSV imports run through the API: their progress row and their error rows.

The node running an import is the only writer of its row while it runs (a
heartbeat in ``updated_at``); any node may mark a silent one failed, guarded
on the heartbeat it saw so a live node's next update is never overwritten.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from herald.store.dialect import insert_ignore
from herald.store.tables import import_errors, imports


def insert_import(conn: Connection, values: Mapping[str, Any], *, now: datetime) -> int:
    """Insert a queued import; returns its id."""
    result = conn.execute(
        insert(imports).values(**values, status="queued", created_at=now, updated_at=now)
    )
    pk = result.inserted_primary_key
    assert pk is not None
    return int(pk[0])


def get_import(conn: Connection, import_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(imports).where(imports.c.id == import_id)).mappings().first()
    return None if row is None else dict(row)


def set_progress(
    conn: Connection, import_id: int, values: Mapping[str, Any], *, now: datetime
) -> bool:
    """Update counters or status of an import still queued or running (the heartbeat).

    False when it is no longer open: another node declared it failed.
    """
    result = conn.execute(
        update(imports)
        .where(imports.c.id == import_id, imports.c.status.in_(["queued", "running"]))
        .values(**values, updated_at=now)
    )
    return result.rowcount == 1


def fail_if_silent(
    conn: Connection, import_id: int, *, heartbeat: datetime, detail: str, now: datetime
) -> bool:
    """Mark an open import failed if its heartbeat is still ``heartbeat``.

    The guard on ``updated_at`` means a node that is alive after all and
    updated the row meanwhile wins; returns whether this call marked it.
    """
    result = conn.execute(
        update(imports)
        .where(
            imports.c.id == import_id,
            imports.c.status.in_(["queued", "running"]),
            imports.c.updated_at == heartbeat,
        )
        .values(status="failed", detail=detail, finished_at=now, updated_at=now)
    )
    return result.rowcount == 1


def count_errors(conn: Connection, import_id: int) -> int:
    query = select(func.count()).where(import_errors.c.import_id == import_id)
    return int(conn.scalar(query) or 0)


def insert_errors(conn: Connection, import_id: int, rows: Sequence[tuple[int, str, str]]) -> None:
    """Store refused rows (line, email as given, error) of an import; a row
    already stored (a re-run batch) is kept as it is."""
    if rows:
        conn.execute(
            insert_ignore(conn, import_errors),
            [{"import_id": import_id, "line": ln, "email": e, "error": m} for ln, e, m in rows],
        )


def error_rows(conn: Connection, import_id: int) -> list[tuple[int, str, str]]:
    """The stored refused rows of an import, by line."""
    query = (
        select(import_errors.c.line, import_errors.c.email, import_errors.c.error)
        .where(import_errors.c.import_id == import_id)
        .order_by(import_errors.c.line)
    )
    return [(int(r.line), str(r.email), str(r.error)) for r in conn.execute(query)]
