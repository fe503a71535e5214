"""Whole tables in and out, for backups: snapshots, streamed reads, batched loads.

The tables are Herald's (``tables.metadata``) as they exist in the database
at hand, which may be at an older schema revision than this code: a table's
columns are the metadata's that the database has, in metadata order, then
any the database has beyond them (with the database's own types).
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg import sql as psycopg_sql
from psycopg.types.json import Json
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Date,
    DateTime,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    exists,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.types import TypeEngine

from herald.domain.backupformat import ColumnSpec
from herald.errors import InvalidInput
from herald.store.engine import MIGRATIONS_DIR, alembic_config, current_revision, make_engine
from herald.store.tables import campaigns, metadata

# A backup or restore reads or writes for as long as the data takes; the
# session limits meant for the send path's millisecond transactions would end it.
_PG_BULK_SETTINGS = (
    "SET LOCAL statement_timeout = 0",
    "SET LOCAL idle_in_transaction_session_timeout = '5min'",
)


@dataclass(frozen=True)
class TableSpec:
    """One table as it is read or loaded: a lean Table (no defaults) and the value kinds."""

    table: Table
    columns: tuple[ColumnSpec, ...]
    order_by: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.table.name


def kind_of(type_: TypeEngine[Any]) -> str:
    """The backup value kind of a column type. Raises InvalidInput for a type it cannot carry."""
    for cls, kind in (
        (Boolean, "boolean"),
        (DateTime, "datetime"),
        (Date, "date"),
        (JSON, "json"),
        (Integer, "integer"),
        (Float, "float"),
        (LargeBinary, "bytes"),
        (String, "string"),
    ):
        if isinstance(type_, cls):
            return kind
    raise InvalidInput(f"a column of type {type_!r} cannot be backed up")


@contextmanager
def snapshot(engine: Engine, workdir: Path) -> Iterator[Connection]:
    """A connection whose reads all see the database at one instant, while writers go on.

    PostgreSQL: one ``REPEATABLE READ`` read-only transaction. SQLite: the
    online backup API copies the database into ``workdir`` in one step (under
    WAL a read transaction, so writers are not blocked), the connection reads
    that copy, and the copy is deleted afterwards. Nothing is written to the
    source.
    """
    if engine.dialect.name == "postgresql":
        opts = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        with engine.connect().execution_options(**opts) as conn, conn.begin():
            for statement in _PG_BULK_SETTINGS:
                conn.execute(text(statement))
            yield conn
        return
    copy = workdir / "snapshot.db"
    _copy_sqlite(engine, copy)
    reader = make_engine(f"sqlite:///{copy}")
    try:
        with reader.connect().execution_options(sqlite_begin="DEFERRED") as conn, conn.begin():
            yield conn
    finally:
        reader.dispose()
        for suffix in ("", "-wal", "-shm"):
            copy.with_name(copy.name + suffix).unlink(missing_ok=True)


def _copy_sqlite(engine: Engine, dest: Path) -> None:
    raw = engine.raw_connection()
    try:
        source = raw.driver_connection
        assert isinstance(source, sqlite3.Connection)
        target = sqlite3.connect(dest)
        try:
            # One step (pages=-1): a stepwise copy restarts whenever another
            # process writes, which a busy node does all the time.
            source.backup(target)
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc):
                raise
            # The copy's disk is full: say so like any other write that hit it.
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from exc
        finally:
            target.close()
    finally:
        raw.close()


def relax_timeouts(conn: Connection) -> None:
    """Lift PostgreSQL's per-session statement limits for this bulk transaction."""
    if conn.dialect.name == "postgresql":
        for statement in _PG_BULK_SETTINGS:
            conn.execute(text(statement))


def revision_of(conn: Connection) -> str | None:
    """The Alembic revision the database (as this connection sees it) is at."""
    return MigrationContext.configure(conn).get_current_revision()


def table_specs(
    conn: Connection, columns: dict[str, Sequence[str]] | None = None
) -> list[TableSpec]:
    """Herald's tables present in the database, in dependency order.

    With ``columns`` (table → column names, e.g. from a manifest): exactly
    those tables and columns, in the mapping's order. Raises InvalidInput if
    one is missing from the database.
    """
    inspector = inspect(conn)
    present = set(inspector.get_table_names())
    if columns is None:
        names = [t.name for t in metadata.sorted_tables if t.name in present]
    else:
        names = list(columns)
        if missing := [n for n in names if n not in present]:
            raise InvalidInput(f"the database has no table {', '.join(missing)}")
    specs = []
    for name in names:
        reflected = {c["name"]: c["type"] for c in inspector.get_columns(name)}
        wanted = None if columns is None else list(columns[name])
        specs.append(_spec(name, reflected, wanted))
    return specs


def _spec(name: str, reflected: dict[str, Any], wanted: list[str] | None) -> TableSpec:
    known = metadata.tables.get(name)
    types = {c.name: c.type for c in known.columns} if known is not None else {}
    if wanted is None:
        wanted = [c for c in types if c in reflected] + [c for c in reflected if c not in types]
    elif missing := [c for c in wanted if c not in reflected]:
        raise InvalidInput(f"table {name} has no column {', '.join(missing)}")
    lean = Table(name, MetaData(), *(Column(c, types.get(c, reflected[c])) for c in wanted))
    keys = [c.name for c in known.primary_key] if known is not None else []
    order = tuple(k for k in keys if k in wanted) or tuple(wanted)
    cols = tuple(ColumnSpec(c, kind_of(lean.c[c].type)) for c in wanted)
    return TableSpec(table=lean, columns=cols, order_by=order)


def count_rows(conn: Connection, spec: TableSpec) -> int:
    return int(conn.scalar(select(func.count()).select_from(spec.table)) or 0)


def read_rows(conn: Connection, spec: TableSpec, *, batch: int = 1000) -> Iterator[Sequence[Any]]:
    """Every row of the table in primary-key order, streamed ``batch`` rows at a time
    (a server-side cursor on PostgreSQL), never the whole table in memory."""
    stmt = select(*spec.table.columns).order_by(*(spec.table.c[k] for k in spec.order_by))
    result = conn.execution_options(yield_per=batch).execute(stmt)
    for part in result.partitions():
        yield from part


def insert_rows(conn: Connection, spec: TableSpec, rows: Sequence[Sequence[Any]]) -> int:
    """Insert rows given in the spec's column order; returns how many.

    PostgreSQL: ``COPY … FROM STDIN`` inside the connection's transaction.
    SQLite: one executemany of a statement compiled once, each value put
    through its column type's own bind processor (JSON serialised,
    timestamps formatted), the conversion SQLAlchemy would apply. Both skip
    SQLAlchemy's per-row parameter handling, which would make a restore
    several times slower.

    Raises InvalidInput when the database refuses a value or a constraint
    (e.g. a NUL character, which PostgreSQL text cannot hold).
    """
    if not rows:
        return 0
    try:
        if conn.dialect.name == "postgresql":
            _copy_rows(conn, spec, rows)
        else:
            _executemany_rows(conn, spec, rows)
    except (psycopg.DataError, psycopg.IntegrityError, IntegrityError, DataError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise InvalidInput(f"table {spec.name} does not load: {reason}") from exc
    return len(rows)


def _copy_rows(conn: Connection, spec: TableSpec, rows: Sequence[Sequence[Any]]) -> None:
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    statement = psycopg_sql.SQL("COPY {} ({}) FROM STDIN").format(
        psycopg_sql.Identifier(spec.name),
        psycopg_sql.SQL(", ").join(psycopg_sql.Identifier(c.name) for c in spec.columns),
    )
    # psycopg adapts every value by its Python type; JSON values are wrapped
    # (a JSON string or null is still JSON, not text or SQL NULL).
    wrap = [j for j, c in enumerate(spec.columns) if c.kind == "json"]
    with raw.cursor() as cur, cur.copy(statement) as copy:
        for row in rows:
            if wrap:
                row = list(row)
                for j in wrap:
                    row[j] = Json(row[j])
            copy.write_row(row)


def _executemany_rows(conn: Connection, spec: TableSpec, rows: Sequence[Sequence[Any]]) -> None:
    compiled = insert(spec.table).compile(dialect=conn.dialect)
    index = {c.name: i for i, c in enumerate(spec.columns)}
    names = list(compiled.positiontup or []) if compiled.positional else list(index)
    order = [index[n] for n in names]
    procs = [(j, p) for j, n in enumerate(names) if (p := _bind_processor(spec.table.c[n], conn))]
    params: list[Any] = []
    for row in rows:
        values = [row[i] for i in order]
        for j, proc in procs:
            # None goes through too: a JSON column's processor makes it JSON
            # null, as SQLAlchemy does; the others return None for it.
            values[j] = proc(values[j])
        params.append(
            tuple(values) if compiled.positional else dict(zip(names, values, strict=True))
        )
    conn.exec_driver_sql(compiled.string, params)


def _bind_processor(column: Column[Any], conn: Connection) -> Callable[[Any], Any] | None:
    return column.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)


def has_rows(conn: Connection) -> list[str]:
    """Names of Herald's tables in the database that hold at least one row."""
    present = set(inspect(conn).get_table_names())
    return [
        t.name
        for t in metadata.sorted_tables
        if t.name in present and conn.scalar(select(exists().select_from(t)))
    ]


def empty_tables(conn: Connection) -> None:
    """Side effect: deletes every row of every Herald table present (children first)."""
    present = set(inspect(conn).get_table_names())
    for table in reversed(metadata.sorted_tables):
        if table.name in present:
            conn.execute(delete(table))


def reset_sequences(conn: Connection, specs: Sequence[TableSpec]) -> None:
    """PostgreSQL: point each table's id sequence past the largest id loaded.

    Rows were inserted with their ids, which leaves the sequences where they
    were; the next insert would collide. SQLite needs nothing (a rowid goes
    past the largest present).
    """
    if conn.dialect.name != "postgresql":
        return
    for spec in specs:
        if spec.order_by != ("id",):
            continue
        seq = conn.scalar(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": spec.name})
        if seq is None:
            continue
        top = conn.scalar(select(func.max(spec.table.c.id)))
        # setval(seq, n, false): the next value handed out is n.
        conn.execute(text("SELECT setval(:s, :n, false)"), {"s": seq, "n": int(top or 0) + 1})


def known_revisions() -> list[str]:
    """Every revision this code has, oldest first."""
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    return [rev.revision for rev in script.walk_revisions()][::-1]


def migrate_to(engine: Engine, revision: str) -> None:
    """Bring the schema to ``revision`` (up or down; down only ever on empty tables).

    Raises InvalidInput if the database is at a revision this code does not know.
    """
    order = known_revisions()
    current = current_revision(engine)
    if current == revision:
        return
    if current is not None and current not in order:
        raise InvalidInput(f"the database is at schema revision {current}, unknown to this Herald")
    cfg = alembic_config(engine)
    if current is None or order.index(current) < order.index(revision):
        command.upgrade(cfg, revision)
    else:
        command.downgrade(cfg, revision)


def pause_running(conn: Connection) -> list[int]:
    """Pause the campaigns that were running when the backup was taken; returns their ids.

    Only the status changes (``updated_at`` stays as the snapshot had it).
    """
    running = select(campaigns.c.id).where(campaigns.c.status == "running")
    ids = sorted(int(i) for i in conn.scalars(running))
    if ids:
        conn.execute(update(campaigns).where(campaigns.c.id.in_(ids)).values(status="paused"))
    return ids
