"""The few statements whose SQL differs between SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import BigInteger, Connection, Table, any_, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert


def insert_ignore(conn: Connection, table: Table) -> Insert:
    """``INSERT … ON CONFLICT DO NOTHING`` for the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def upsert(conn: Connection, table: Table, row: dict[str, Any], *, key: list[str]) -> Insert:
    """``INSERT … ON CONFLICT (key) DO UPDATE`` setting every other column of ``row``."""
    if conn.dialect.name == "postgresql":
        pg = postgresql.insert(table).values(**row)
        return pg.on_conflict_do_update(
            index_elements=key, set_={k: pg.excluded[k] for k in row if k not in key}
        )
    lite = sqlite.insert(table).values(**row)
    return lite.on_conflict_do_update(
        index_elements=key, set_={k: lite.excluded[k] for k in row if k not in key}
    )


def among_ids(conn: Connection, column: Any, ids: Iterable[int]) -> Any:
    """``column IN (ids)`` for up to a few thousand ids.

    PostgreSQL: ``column = ANY(:ids)``, one array parameter (binary, see
    store.engine), where ``IN`` would render and parse one parameter per id.
    SQLite: ``IN`` with a parameter per id.
    """
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, list(ids), type_=postgresql.ARRAY(BigInteger)))
    return column.in_(list(ids))
