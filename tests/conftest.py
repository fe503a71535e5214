"""Shared fixtures: a fresh, migrated database per test on SQLite and PostgreSQL.

PostgreSQL is the server at ``HERALD_TEST_PG_URL`` (default: the local one on
127.0.0.1:5432, trust auth). Each test gets its own database, cloned from a
template migrated once per session. Outside CI a missing server skips the
PostgreSQL half; with ``CI=true`` it fails instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from sqlalchemy import Engine

from herald.store.engine import make_engine, migrate
from tests.ci import unavailable

# Real SMTP sink fixtures (sink, sink_factory) for every test.
pytest_plugins = [
    "tests.sinks",
    "tests.processes",
    "tests.postfix",
    "tests.webhooks",
    "tests.apiclient",
]

PG_ADMIN_URL = os.environ.get("HERALD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_TEMPLATE = f"herald_tpl_{os.getpid()}"


def _pg_url(dbname: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{dbname}"


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """Name of a migrated template database (created once per test session)."""
    try:
        admin = _admin()
    except psycopg.OperationalError as exc:
        unavailable(
            f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}",
            in_ci=f"PostgreSQL is required in CI but unreachable: {exc}",
        )
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{PG_TEMPLATE}"')
        admin.execute(f'CREATE DATABASE "{PG_TEMPLATE}"')
    engine = make_engine(_pg_url(PG_TEMPLATE))
    migrate(engine)
    engine.dispose()
    yield PG_TEMPLATE
    with _admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{PG_TEMPLATE}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """URL of an empty, migrated database of each backend."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "herald.db"
        engine = make_engine(f"sqlite:///{path}")
        migrate(engine)
        engine.dispose()
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("pg_template")
    name = f"herald_t_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield _pg_url(name)
    with _admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], str]]:
    """Factory: the URL of a new database of a backend (``sqlite`` or ``postgresql``)
    with no schema at all; PostgreSQL ones are dropped after the test."""
    created: list[str] = []

    def make(backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path_factory.mktemp('empty') / 'herald.db'}"
        request.getfixturevalue("pg_template")  # skips or fails as database_url does
        name = f"herald_e_{uuid.uuid4().hex[:12]}"
        with _admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return _pg_url(name)

    yield make
    if created:
        with _admin() as admin:
            for name in created:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a fresh migrated database; each test runs on both backends."""
    eng = make_engine(database_url)
    yield eng
    eng.dispose()
