"""kill -9 of a sending process mid-campaign, then a restart: nothing lost.

Duplicates are possible only for rows the dead process had claimed and not
acknowledged (it may have sent them); the test counts them exactly by
Message-ID at the sink and checks every duplicate is one of those.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, select

from herald.store.tables import deliveries
from tests.factories import add_subscribers, finished, make_campaign, make_list
from tests.sinks import Sink

TOTAL = 3000


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def spawn(database_url: str, sink: Sink) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(node: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "HERALD_DATABASE_URL": database_url,
            "HERALD_RELAYS": sink.url,
            "HERALD_NODE_NAME": node,
            "HERALD_SECRET_KEY": "crash-test",
            "HERALD_LEASE_TTL": "2",
            "HERALD_BATCH_SIZE": "100",
            "HERALD_CONCURRENCY": "4",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "herald", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_it_resumes_after_kill_9_with_nothing_lost(
    engine: Engine, sink: Sink, spawn: Callable[[str], subprocess.Popen[bytes]]
) -> None:
    list_id = make_list(engine)
    emails = add_subscribers(engine, list_id, TOTAL)
    campaign_id = make_campaign(engine)

    first = spawn("node-a")
    _wait(lambda: sink.count() >= TOTAL // 3, 60, "a third of the campaign")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    with engine.begin() as conn:
        unacked = set(
            conn.scalars(
                select(deliveries.c.id).where(
                    deliveries.c.status == "sending", deliveries.c.lease_owner == "node-a"
                )
            )
        )
    assert sink.count() < TOTAL, "the kill came too late to test anything"

    spawn("node-b")
    _wait(finished(engine, campaign_id), 120, "the campaign to finish")

    counts = sink.message_ids()
    received = {r for m in sink.messages for r in m.rcpts}
    assert received == set(emails)  # lost = 0
    duplicated = {mid for mid, n in counts.items() if n > 1}
    dup = sum(n - 1 for n in counts.values())
    with engine.begin() as conn:
        dup_ids = set(
            conn.scalars(select(deliveries.c.id).where(deliveries.c.message_id.in_(duplicated)))
        )
        statuses = set(
            conn.scalars(select(deliveries.c.status).where(deliveries.c.campaign_id == campaign_id))
        )
    assert statuses == {"sent"}
    assert dup_ids <= unacked  # every duplicate was in flight, unacknowledged, at the kill
    assert dup <= len(unacked)
    print(f"kill -9: unacknowledged in flight {len(unacked)}, duplicates {dup}")
