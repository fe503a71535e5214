"""Database URLs (libpq multi-host lists) and transactions retried after a lost connection.

The PostgreSQL tests use the local server (``HERALD_TEST_PG_URL``, default
127.0.0.1:5432) as every live host, and a closed loopback port as a dead one.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, ProgrammingError

from herald.errors import DatabaseUnavailable
from herald.store.engine import make_engine, normalise_url
from herald.store.retry import run_in_transaction
from tests.ci import unavailable

PG_ADMIN_URL = os.environ.get("HERALD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _closed_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def live() -> str:
    """``user@host:port`` of the reachable local PostgreSQL server."""
    url = make_url(PG_ADMIN_URL)
    try:
        psycopg.connect(PG_ADMIN_URL, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        unavailable(
            f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}",
            in_ci=f"PostgreSQL is required in CI but unreachable: {exc}",
        )
    return f"{url.username}@{url.host}:{url.port or 5432}"


@pytest.fixture
def pg_engine(live: str) -> Iterator[Engine]:
    """An engine on the local server's admin database, through a dead host first."""
    user, _, hostport = live.partition("@")
    engine = make_engine(
        f"postgresql://{user}@127.0.0.1:{_closed_port()},{hostport}/postgres"
        "?target_session_attrs=read-write"
    )
    yield engine
    engine.dispose()


def test_it_rewrites_a_libpq_host_list_into_repeated_host_parameters() -> None:
    url = normalise_url(
        "postgresql://app:pw@10.0.0.1:5432,10.0.0.2:5433/herald?target_session_attrs=read-write"
    )

    parsed = make_url(url)
    assert parsed.drivername == "postgresql+psycopg"
    assert parsed.username == "app"
    assert parsed.password == "pw"
    assert parsed.database == "herald"
    assert parsed.query["host"] == ("10.0.0.1:5432", "10.0.0.2:5433")
    assert parsed.query["target_session_attrs"] == "read-write"


def test_it_keeps_a_host_without_a_port_in_the_list() -> None:
    parsed = make_url(normalise_url("postgres://app@db1,db2:6432/herald"))

    assert parsed.query["host"] == ("db1", "db2:6432")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://app@db:5432/herald", "postgresql+psycopg://app@db:5432/herald"),
        (
            "postgres://app@db/herald?sslmode=require",
            "postgresql+psycopg://app@db/herald?sslmode=require",
        ),
        ("sqlite:///var/herald.db", "sqlite:///var/herald.db"),
    ],
)
def test_it_leaves_single_host_urls_as_they_were(given: str, expected: str) -> None:
    assert normalise_url(given) == expected


def test_it_connects_past_a_dead_host_to_a_live_one(pg_engine: Engine) -> None:
    with pg_engine.connect() as conn:
        port = conn.execute(text("SELECT inet_server_port()")).scalar_one()

    assert port == (make_url(PG_ADMIN_URL).port or 5432)


def test_it_sets_a_connect_timeout_unless_the_url_has_one(live: str) -> None:
    default = make_engine(f"postgresql://{live}/postgres", connect_timeout=4)
    explicit = make_engine(f"postgresql://{live}/postgres?connect_timeout=7")
    try:
        assert _connect_timeout(default) == "4"
        assert _connect_timeout(explicit) == "7"
    finally:
        default.dispose()
        explicit.dispose()


def _connect_timeout(engine: Engine) -> str:
    with engine.connect() as conn:
        driver_conn = conn.connection.driver_connection
        assert isinstance(driver_conn, psycopg.Connection)
        return driver_conn.info.get_parameters()["connect_timeout"]


def test_it_retries_a_transaction_whose_connection_was_terminated(pg_engine: Engine) -> None:
    calls: list[int] = []

    def work(conn: Connection) -> int:
        calls.append(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        if len(calls) == 1:
            # The server ends this session (SQLSTATE 57P01), as a failover would.
            conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return 42

    assert run_in_transaction(pg_engine, work, deadline_seconds=10) == 42
    assert len(calls) == 2
    assert calls[0] != calls[1], "the retry must run on a new connection"


def test_it_retries_a_transaction_refused_as_read_only(pg_engine: Engine) -> None:
    attempts: list[int] = []

    def work(conn: Connection) -> str:
        attempts.append(1)
        if len(attempts) == 1:
            # What a connection that landed on a standby sees (SQLSTATE 25006).
            conn.execute(text("SET TRANSACTION READ ONLY"))
        conn.execute(text("CREATE TEMPORARY TABLE probe (x int)"))
        return "written"

    assert run_in_transaction(pg_engine, work, deadline_seconds=10) == "written"
    assert len(attempts) == 2


def test_it_propagates_other_database_errors_without_retrying(pg_engine: Engine) -> None:
    calls: list[int] = []

    def work(conn: Connection) -> None:
        calls.append(1)
        conn.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(ProgrammingError):
        run_in_transaction(pg_engine, work, deadline_seconds=10)
    assert calls == [1]


def test_it_propagates_errors_raised_by_the_work_itself(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'herald.db'}")

    def work(conn: Connection) -> None:
        conn.execute(text("CREATE TABLE t (x int)"))
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        run_in_transaction(engine, work)
    with engine.connect() as conn:
        tables = conn.execute(text("SELECT name FROM sqlite_master")).all()
    engine.dispose()
    assert tables == [], "the transaction must have been rolled back"


def test_it_raises_database_unavailable_when_no_host_answers() -> None:
    engine = make_engine(
        f"postgresql://postgres@127.0.0.1:{_closed_port()},127.0.0.1:{_closed_port()}/herald"
    )
    calls: list[int] = []
    retries: list[int] = []

    with pytest.raises(DatabaseUnavailable) as raised:
        run_in_transaction(
            engine,
            lambda conn: calls.append(1),
            deadline_seconds=0.5,
            on_retry=lambda _exc, attempt: retries.append(attempt),
        )
    engine.dispose()

    assert calls == [], "no connection, so the work never ran"
    assert isinstance(raised.value.__cause__, DBAPIError)
    assert retries == list(range(1, len(retries) + 1))
    assert retries, "it retried before giving up"


def test_it_gives_up_after_the_given_number_of_attempts() -> None:
    engine = make_engine(f"postgresql://postgres@127.0.0.1:{_closed_port()}/herald")
    retries: list[int] = []

    with pytest.raises(DatabaseUnavailable):
        run_in_transaction(
            engine,
            lambda conn: None,
            attempts=3,
            deadline_seconds=30,
            on_retry=lambda _exc, attempt: retries.append(attempt),
        )
    engine.dispose()

    assert retries == [1, 2]
