"""``herald migrate`` while nodes hold table locks (a rolling upgrade, PostgreSQL).

A migration that cannot get a table lock gives up after the lock timeout
instead of making every sender queue behind it, then tries again; each
migration commits on its own, so a retry keeps the ones already done.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

import psycopg
import pytest

from herald.store import dump
from herald.store.engine import current_revision, head_revision, make_engine, migrate
from tests.processes import wait_until

BEFORE = "0008"  # 0009 creates tables only; 0010 alters campaigns
BLOCKED = "0009"  # where the migration stands while campaigns is locked
WAIT_TIMEOUT = 30.0


def _waiting(monitor: psycopg.Connection[tuple[object, ...]]) -> bool:
    """Whether a connection waits for a lock on campaigns (the migration's ALTER TABLE)."""
    query = "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'campaigns'::regclass"
    row = monitor.execute(query).fetchone()
    return bool(row and row[0])


def _not(condition: Callable[[], bool]) -> bool:
    return not condition()


def test_it_retries_a_migration_that_waited_too_long_for_a_lock(
    empty_database: Callable[[str], str],
) -> None:
    url = empty_database("postgresql")
    engine = make_engine(url)
    done: list[tuple[str | None, str]] = []
    try:
        dump.migrate_to(engine, BEFORE)
        with (
            psycopg.connect(url, autocommit=True) as monitor,
            psycopg.connect(url) as sender,  # no timeouts: it holds its lock as long as asked
        ):
            sender.execute("LOCK TABLE campaigns IN ACCESS SHARE MODE")  # as a claim's read does
            worker = threading.Thread(target=lambda: done.append(migrate(engine)), daemon=True)
            worker.start()
            waiting = functools.partial(_waiting, monitor)
            wait_until(waiting, WAIT_TIMEOUT, "the migration to wait for campaigns")
            wait_until(functools.partial(_not, waiting), WAIT_TIMEOUT, "it to give up")
            assert current_revision(engine) == BLOCKED  # the migration before it is kept
            wait_until(waiting, WAIT_TIMEOUT, "it to try again")
            sender.rollback()  # the sender's transaction ends
        worker.join(timeout=WAIT_TIMEOUT)
        assert done == [(BEFORE, head_revision())]
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_it_migrates_from_any_revision_to_the_newest(
    backend: str, empty_database: Callable[[str], str]
) -> None:
    engine = make_engine(empty_database(backend))
    try:
        dump.migrate_to(engine, BEFORE)
        assert migrate(engine) == (BEFORE, head_revision())
        assert migrate(engine) == (head_revision(), head_revision())  # idempotent
    finally:
        engine.dispose()
