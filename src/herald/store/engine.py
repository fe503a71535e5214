"""Engine construction for both backends, and the schema migrator.

SQLite (embedded default): WAL, ``synchronous=FULL``, foreign keys on, a busy
timeout, and every transaction opened with ``BEGIN IMMEDIATE`` so that two
processes never deadlock upgrading a read lock to a write lock.
PostgreSQL: psycopg 3; ``pool_pre_ping`` so a connection that died with a
failed-over primary is replaced rather than handed out. A libpq multi-host URL
(``postgresql://u@h1:p1,h2:p2/db?target_session_attrs=read-write``) is
accepted and rewritten to SQLAlchemy's multi-host form (``?host=h1:p1&host=h2:p2``);
libpq then tries the hosts in order and keeps the first that accepts writes.
A ``connect_timeout`` is always set so a host that does not answer is skipped
after a few seconds instead of the OS default of minutes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg.types.array import ListBinaryDumper
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from herald.errors import ConfigError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
PG_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")
DEFAULT_CONNECT_TIMEOUT = 3
IDLE_TX_TIMEOUT_MS = 2000
STATEMENT_TIMEOUT_MS = 10000
MIGRATE_ATTEMPTS = 8
LOCK_CONFLICTS = frozenset({"40P01", "55P03"})  # deadlock_detected, lock_not_available


def normalise_url(url: str) -> str:
    """Map the user-facing URL forms to SQLAlchemy URLs (psycopg 3 driver).

    ``postgres://`` and ``postgresql://`` become ``postgresql+psycopg://``; a
    comma-separated host list in the authority becomes repeated ``host=h:p``
    query parameters, the form SQLAlchemy's PostgreSQL dialects accept.
    Anything else is returned unchanged.
    """
    for scheme in PG_SCHEMES:
        if url.startswith(scheme):
            return _multihost_to_query("postgresql+psycopg://" + url[len(scheme) :])
    return url


def _multihost_to_query(url: str) -> str:
    """Rewrite ``s://user@h1:p1,h2:p2/db?q`` as ``s://user@/db?host=h1:p1&host=h2:p2&q``."""
    scheme, _, rest = url.partition("://")
    authority, slash, path_query = rest.partition("/")
    userinfo, at, hostlist = authority.rpartition("@")
    if "," not in hostlist:
        return url
    path, _, query = path_query.partition("?")
    hosts = [("host", h.strip()) for h in hostlist.split(",") if h.strip()]
    params = urlencode(hosts + parse_qsl(query, keep_blank_values=True), safe=":,")
    return f"{scheme}://{userinfo}{at}{slash or '/'}{path}?{params}"


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(
    url: str,
    *,
    pool_size: int = 5,
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
    node_name: str | None = None,
) -> Engine:
    """Create an engine for ``url``; SQLite parent directories are created.

    ``connect_timeout`` (seconds, per PostgreSQL host) applies unless the URL
    sets its own. On PostgreSQL the sessions carry ``node_name`` as their
    application name, so other nodes can fence a frozen one (store.nodes.fence).
    Raises ConfigError for an unsupported URL.
    """
    url = normalise_url(url)
    if url.startswith("sqlite:"):
        return _sqlite_engine(url)
    if url.startswith("postgresql+psycopg:"):
        return _postgres_engine(
            url, pool_size=pool_size, connect_timeout=connect_timeout, node_name=node_name
        )
    raise ConfigError(f"unsupported database URL {url!r}: use sqlite:/// or postgresql://")


def _postgres_engine(
    url: str, *, pool_size: int, connect_timeout: int, node_name: str | None
) -> Engine:
    connect_args: dict[str, Any] = {}
    if node_name:
        connect_args["application_name"] = application_name(node_name)
    if "connect_timeout" not in make_url(url).query:
        connect_args["connect_timeout"] = connect_timeout
    # Herald's transactions last milliseconds. A session idle inside one for
    # seconds belongs to a frozen or stuck node: the server ends it, so the
    # row locks it holds cannot stall the nodes taking over its work.
    # The same holds for a node frozen in the middle of a pipelined statement
    # (the server then waits for the client, "active"): statement_timeout ends it.
    connect_args["options"] = (
        f"-c idle_in_transaction_session_timeout={IDLE_TX_TIMEOUT_MS}"
        f" -c statement_timeout={STATEMENT_TIMEOUT_MS}"
    )
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args=connect_args,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # A list parameter (the arrays of acks, renewals and claims) goes in
        # PostgreSQL's binary array format: psycopg's text format quotes each
        # element in Python, and a group of 100 acks took four times as long.
        dbapi_conn.adapters.register_dumper(list, ListBinaryDumper)

    return engine


def application_name(node_name: str) -> str:
    """The PostgreSQL application name of a node's sessions (at most 63 bytes)."""
    return f"herald:{node_name}".encode()[:63].decode(errors="ignore")


def _sqlite_engine(url: str) -> Engine:
    path = url.split("///", 1)[1] if "///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the driver; "begin" below issues it.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def alembic_config(engine: Engine) -> Config:
    """Alembic configuration bound to ``engine`` (for migrating to a given revision)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to the newest revision; idempotent.

    Safe while nodes send (a rolling upgrade): on PostgreSQL a migration that
    waits too long for a table lock, or deadlocks with a sender, is rolled
    back and tried again from the last migration committed, up to
    MIGRATE_ATTEMPTS times (see migrations/env.py). Returns (revision before,
    revision after); raises the last database error when every attempt failed.
    """
    before = current_revision(engine)
    for attempt in range(1, MIGRATE_ATTEMPTS + 1):
        try:
            command.upgrade(alembic_config(engine), "head")
            break
        except OperationalError as exc:
            if attempt == MIGRATE_ATTEMPTS or not _lock_conflict(exc):
                raise
            time.sleep(min(0.25 * 2**attempt, 5.0))
    return before, head_revision()


def _lock_conflict(exc: OperationalError) -> bool:
    """A deadlock or an exceeded lock_timeout: nothing wrong that a retry cannot fix."""
    return getattr(exc.orig, "sqlstate", None) in LOCK_CONFLICTS


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None
    return head


def schema_behind(revision: str | None) -> bool:
    """True when the database lacks migrations this code needs.

    A revision this code does not know is newer (a later version migrated
    the database): migrations are expand/contract, so an older node keeps
    working during a rolling upgrade and is not reported behind.
    """
    if revision == head_revision():
        return False
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    known = {rev.revision for rev in script.walk_revisions()}
    return revision is None or revision in known
