"""A backup taken by ``herald backup create`` while a node sends a campaign and
answers a stream of real opens and clicks restores, into the other backend,
to exactly the source as it was at the snapshot.

A real ``herald up`` node sends a rate-limited campaign to a real SMTP sink;
a thread reads each message the sink receives and requests its open pixel
and click link from the node, over and over, so the node writes tracking
events all along. Mid-way the command line takes a backup. Sending and
clicking go on, then the campaign finishes. Then:

- the restored database equals the archive row by row (the running campaign
  paused, as a restore does);
- the archive equals the source as of the snapshot: the tables neither
  sending nor tracking writes are equal now; tracking events are only ever
  added, by one node, in id order, so the snapshot holds exactly the
  source's events up to its newest one; a delivery the snapshot holds as
  sent is unchanged since, and every other delivery of it is the same
  message (id, campaign, subscriber, any Message-ID it had) sent later; every other
  table's rows still exist in the source;
- the snapshot was taken in the middle of both: some but not all messages
  sent, some but not all events recorded.

The existing tests/integration/test_backups.py covers the value encodings,
damaged archives and non-empty targets; this one adds a real node under
tracking load and the command line.
"""

from __future__ import annotations

import email
import email.policy
import html
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from herald.services import backups, campaigns
from herald.store.engine import make_engine
from herald.store.tables import tracking_events
from tests.factories import SECRET, add_subscribers, finished, make_campaign, make_list
from tests.integration.test_backups import (
    archive_rows,
    assert_database_equals_archive,
    db_rows,
)
from tests.processes import HeraldUp, wait_until
from tests.sinks import Received, Sink

OTHER = {"sqlite": "postgresql", "postgresql": "sqlite"}
TOTAL = 600
RATE = 40.0  # messages/s: 15 s of sending, the backup lands inside it
HTML = '<p>Hi {{ subscriber.name }}</p><p><a href="https://shop.example.com/sale">Sale</a></p>'
# Tables neither sending nor tracking writes to: the source still equals the snapshot.
STILL_TABLES = ("lists", "subscribers", "subscriptions", "templates", "campaign_lists")
# Bounds, not expectations.
PROGRESS_TIMEOUT = 60.0
FINISH_TIMEOUT = 120.0
COMMAND_TIMEOUT = 120.0


def _links(message: Received) -> tuple[str, str]:
    """(click link, open pixel) of one received message."""
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    part = parsed.get_body(("html",))
    assert part is not None
    text = part.get_content()
    [click] = [html.unescape(h) for h in re.findall(r'href="([^"]+/t/c/[^"]+)"', text)]
    [pixel] = [html.unescape(p) for p in re.findall(r'<img src="([^"]+)"', text)]
    return click, pixel


class Reader(threading.Thread):
    """Opens and clicks every message the sink has received, round after round,
    until stopped; counts the answers the node acknowledged (200 and 302)."""

    def __init__(self, sink: Sink) -> None:
        super().__init__(daemon=True)
        self.sink = sink
        self.stop = threading.Event()
        self.acknowledged = 0
        self.failures: list[str] = []

    def run(self) -> None:
        links: list[tuple[str, str]] = []
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                received = self.sink.messages
                links.extend(_links(m) for m in received[len(links) :])
                for click, pixel in links[-50:]:  # the newest, then again next round
                    self._get(client, pixel, 200)
                    self._get(client, click, 302)
                self.stop.wait(0.05)

    def _get(self, client: httpx.Client, url: str, expect: int) -> None:
        try:
            status = client.get(url).status_code
        except httpx.HTTPError as exc:
            self.failures.append(f"{url}: {exc!r}")
            return
        if status == expect:
            self.acknowledged += 1
        else:
            self.failures.append(f"{url}: {status}")


@pytest.fixture
def reader(sink: Sink) -> Iterator[Reader]:
    thread = Reader(sink)
    yield thread
    thread.stop.set()
    if thread.is_alive():
        thread.join(timeout=30)


def _count(engine: Engine, table: Any, *where: Any) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table).where(*where)) or 0)


def _backup(database_url: str, data_dir: Path, dest: Path) -> Path:
    """``herald backup create --to dest --json`` as an operator runs it; the archive."""
    env = {
        **os.environ,
        "HERALD_DATABASE_URL": database_url,
        "HERALD_DATA_DIR": str(data_dir),
        "HERALD_SECRET_KEY": SECRET,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "herald", "backup", "create", "--to", str(dest), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return Path(json.loads(proc.stdout)["path"])


def _columns(manifest: Any, table: str) -> list[str]:
    return [c.name for c in next(t for t in manifest.tables if t.name == table).columns]


def assert_archive_is_the_source_at_the_snapshot(engine: Engine, path: Path) -> dict[str, int]:
    """The checks of the module docstring, source against archive; returns the
    archive's counts of sent deliveries and of tracking events."""
    manifest, archived = archive_rows(path)
    for name in STILL_TABLES:
        assert db_rows(engine, name, _columns(manifest, name)) == archived[name], name

    cols = _columns(manifest, "tracking_events")
    events = archived["tracking_events"]
    newest = max(key[0] for key in events)
    source_events = db_rows(engine, "tracking_events", cols)
    assert {k: r for k, r in source_events.items() if k[0] <= newest} == events

    cols = _columns(manifest, "deliveries")
    status, message_id = cols.index("status"), cols.index("message_id")
    same = [cols.index(c) for c in ("id", "campaign_id", "subscriber_id")]
    source = db_rows(engine, "deliveries", cols)
    for key, row in archived["deliveries"].items():
        now = source[key]
        if row[status] == "sent":
            assert now == row, key
        else:  # pending then (no Message-ID yet) or in flight (the same one)
            assert [now[i] for i in same] == [row[i] for i in same], key
            assert row[message_id] in (None, now[message_id]), key
            assert now[status] == "sent", key

    for entry in manifest.tables:
        assert set(archived[entry.name]) <= set(
            db_rows(engine, entry.name, _columns(manifest, entry.name))
        ), entry.name
    sent = sum(r[status] == "sent" for r in archived["deliveries"].values())
    return {"sent": sent, "events": len(events), "source_events": len(source_events)}


def _state(engine: Engine, node: HeraldUp, reader: Reader) -> str:
    """What a timeout needs explained: the node, the reader, the spool, the node's log."""
    alive = node.proc is not None and node.proc.poll() is None
    spool = sorted(p.name for p in node.data_dir.rglob("*.jsonl"))
    log = (node.data_dir / "node.log").read_text(errors="replace")[-3000:]
    return (
        f"node running: {alive}; reader alive: {reader.is_alive()}, "
        f"{reader.acknowledged} answered, {len(reader.failures)} failed {reader.failures[:3]}; "
        f"{_count(engine, tracking_events)} events stored; spool files {spool}\n"
        f"node log:\n{log}"
    )


@pytest.mark.slow
def test_it_backs_up_a_node_under_campaign_and_tracking_load_consistently(
    database_url: str,
    engine: Engine,
    sink: Sink,
    reader: Reader,
    empty_database: Callable[[str], str],
    tmp_path: Path,
) -> None:
    add_subscribers(engine, make_list(engine), TOTAL)
    campaign_id = make_campaign(engine, html=HTML, start=False)
    campaigns.set_rate(engine, campaign_id, RATE)
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    node = HeraldUp(database_url, node_dir, sink.url)
    try:
        node.start()
        campaigns.change_status(engine, campaign_id, "start")  # links point at the node
        reader.start()
        wait_until(lambda: _count(engine, tracking_events) >= 50, PROGRESS_TIMEOUT, "50 events")

        path = _backup(database_url, node_dir, tmp_path / "backups")
        at_backup = _count(engine, tracking_events)
        wait_until(
            lambda: _count(engine, tracking_events) > at_backup + 50,
            PROGRESS_TIMEOUT,
            "events recorded after the backup",
        )
        reader.stop.set()
        reader.join(timeout=30)
        campaigns.set_rate(engine, campaign_id, None)  # the rest at full speed
        wait_until(finished(engine, campaign_id), FINISH_TIMEOUT, "the campaign to finish")
        wait_until(
            lambda: _count(engine, tracking_events) == reader.acknowledged,
            PROGRESS_TIMEOUT,
            "every acknowledged open and click in the database",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_state(engine, node, reader)}") from exc
    finally:
        reader.stop.set()
        node.stop()
    assert not reader.failures, reader.failures[:5]

    counts = assert_archive_is_the_source_at_the_snapshot(engine, path)
    assert 0 < counts["sent"] < TOTAL, "the snapshot was not taken mid-campaign"
    assert 0 < counts["events"] < counts["source_events"], "nor mid-tracking"

    target_url = empty_database(OTHER[engine.dialect.name])
    restored = backups.restore_backup(path, target_url)
    assert restored.paused == [campaign_id]
    target = make_engine(target_url)
    try:
        assert_database_equals_archive(target, path, paused=(campaign_id,))
    finally:
        target.dispose()
    print(
        f"\nbackup under load ({engine.dialect.name} → {OTHER[engine.dialect.name]}): "
        f"{counts['sent']} of {TOTAL} sent and {counts['events']} of "
        f"{counts['source_events']} events in the snapshot, "
        f"{reader.acknowledged} opens and clicks answered"
    )
