"""The engine survives a PostgreSQL failover without losing an acknowledged write.

A writer thread inserts numbered rows, one transaction each, through
``run_in_transaction`` on the multi-host URL. Part-way through, the primary's
postmaster is SIGKILLed and the (synchronous) standby promoted. Every insert
that returned must be on the promoted server; the writer must finish.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from dataclasses import dataclass, field

import psycopg
import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from herald.store.engine import make_engine
from herald.store.retry import run_in_transaction
from tests.chaos.pgcluster import PgPair
from tests.processes import wait_until

ROWS = 2_000
KILL_AFTER = 400
# Bounds, not expectations: the whole test stays under a minute even if stuck.
TEST_BUDGET = 45.0
RETRY_DEADLINE = 15.0

# Idempotent by its key: a retry after an ambiguous COMMIT inserts nothing twice.
INSERT_PROBE = text("INSERT INTO failover_probe (id) VALUES (:id) ON CONFLICT (id) DO NOTHING")


@dataclass
class Writer:
    """Inserts rows 0..ROWS-1 in order, recording when each insert was acknowledged."""

    engine: Engine
    acked: list[tuple[int, float]] = field(default_factory=list)
    error: BaseException | None = None
    retries: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def _count_retry(self, _error: DBAPIError, _attempt: int) -> None:
        self.retries += 1

    def run(self) -> None:
        try:
            for i in range(ROWS):
                if self.stop.is_set():
                    return
                insert = functools.partial(_insert_probe, probe_id=i)
                run_in_transaction(
                    self.engine,
                    insert,
                    attempts=1_000,
                    deadline_seconds=RETRY_DEADLINE,
                    on_retry=self._count_retry,
                )
                self.acked.append((i, time.monotonic()))
        except BaseException as exc:
            self.error = exc


def _insert_probe(conn: Connection, *, probe_id: int) -> None:
    conn.execute(INSERT_PROBE, {"id": probe_id})


def _rows_on(url: str) -> set[int]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM failover_probe")}


def _longest_gap(acked: list[tuple[int, float]]) -> float:
    times = [t for _, t in acked]
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


@pytest.mark.slow
def test_it_keeps_every_acknowledged_write_when_the_primary_is_killed(pg_pair: PgPair) -> None:
    budget_ends = time.monotonic() + TEST_BUDGET
    engine = make_engine(pg_pair.url, connect_timeout=2)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE failover_probe (id integer PRIMARY KEY)"))
    writer = Writer(engine)
    thread = threading.Thread(target=writer.run, name="failover-writer", daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: len(writer.acked) >= KILL_AFTER or not thread.is_alive(),
            timeout=TEST_BUDGET,
            what=f"{KILL_AFTER} acknowledged inserts",
        )
        killed_at = time.monotonic()
        pg_pair.kill_primary()
        # Promote only once the writer has also failed against "no writable
        # server" (its in-flight transaction is the first retry), so the
        # window with only a read-only standby is exercised, not skipped.
        wait_until(
            lambda: writer.retries >= 2 or not thread.is_alive(),
            timeout=TEST_BUDGET,
            what="the writer to retry while no server accepts writes",
        )
        pg_pair.promote_standby()
        thread.join(timeout=max(0.0, budget_ends - time.monotonic()))
    finally:
        writer.stop.set()
        thread.join(timeout=RETRY_DEADLINE)
        engine.dispose()

    assert not thread.is_alive(), "the writer did not finish in time"

    assert writer.error is None, f"writer failed: {writer.error!r}"
    assert writer.retries >= 2
    assert [i for i, _ in writer.acked] == list(range(ROWS))
    acked_before_kill = sum(1 for _, t in writer.acked if t < killed_at)
    assert 0 < acked_before_kill < ROWS, "the kill must land mid-run"
    present = _rows_on(pg_pair.node_url(pg_pair.standby_port))
    assert present == set(range(ROWS)), f"lost: {sorted(set(range(ROWS)) - present)[:20]}"
    print(
        f"\nfailover: {acked_before_kill} acked before the kill; "
        f"write outage {_longest_gap(writer.acked):.3f}s (longest gap between acks); "
        f"{writer.retries} retried attempts"
    )
