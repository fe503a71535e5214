"""Failover figures: a worker killed with SIGKILL, and a PostgreSQL primary failover.

    .venv/bin/python bench/failover.py [-n 10000] [--runs 3] [--failover-runs 1]
                                       [--lease 3] [--ha-delay 0] [--skip-kill|--skip-db]

Worker kill (``--runs`` times, RELIABILITY row 1): a fresh database on the
server at HERALD_BENCH_PG_URL (default postgresql://postgres@127.0.0.1:5432/postgres),
N subscribers, three ``herald worker`` processes each sending to its own
aiosmtpd sink. At 40 % one worker gets SIGKILL. Printed: seconds from the kill
until the dead node's unacknowledged rows are re-queued (first re-claim), until
the first of them is sent by another node and until all are; messages/s
before the kill (three nodes) and after the re-queue (two nodes); duplicates
(same Message-ID at the sinks). Re-queued rows are due "now", so they are
claimed behind the rows that were due earlier: the first re-send measures the
backlog as much as the takeover. Baseline: the takeover should take about the
lease TTL (plus up to half a second of housekeeping interval).

Database failover (``--failover-runs`` times, row 10): a primary with a
synchronous standby (tests/chaos/pgcluster.py), two workers on the multi-host
URL. At a third the primary's postmaster gets SIGKILL; once both workers have
noticed and ``--ha-delay`` seconds have passed, the standby is promoted.
Printed: seconds from asking for the promotion until the first ack on the
promoted server (``pg_ctl promote`` itself takes about a tenth of a second),
from the kill until then (the write outage), the longest gap in messages
arriving at the sinks, the rows claimed but unacknowledged at the kill (read
from the standby) and duplicates. Baseline: Patroni's default failover takes
tens of seconds; Herald's own share is the time after the promotion.

Figures are medians over the runs. Every wait has a deadline.
"""

from __future__ import annotations

import argparse
import bisect
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from subprocess import Popen

# The harness (PostgreSQL pair, SMTP sinks, node processes, factories) lives in tests/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from sqlalchemy import Engine, func, select
from tests.chaos.pgcluster import PgPair
from tests.factories import add_subscribers, finished, make_campaign, make_list
from tests.processes import Nodes, wait_until
from tests.sinks import Sink

from herald.domain.clock import utcnow
from herald.store.engine import make_engine, migrate
from herald.store.tables import deliveries

PG_ADMIN = os.environ.get("HERALD_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CAMPAIGN_TIMEOUT = 300.0
POLL = 0.05
Figures = dict[str, float]


class Timeline:
    """Samples the sinks' total message count every few ms, in a thread."""

    def __init__(self, sinks: list[Sink], interval: float = 0.02) -> None:
        self.sinks = sinks
        self.interval = interval
        self.times: list[float] = []
        self.counts: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.times.append(time.monotonic())
            self.counts.append(sum(s.count() for s in self.sinks))
            self._stop.wait(self.interval)

    def __enter__(self) -> Timeline:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def total(self) -> int:
        return sum(s.count() for s in self.sinks)

    def when(self, count: int) -> float:
        """First sample time at which at least ``count`` messages had arrived."""
        i = bisect.bisect_left(self.counts, count)
        return self.times[min(i, len(self.times) - 1)]

    def count_at(self, moment: float) -> int:
        i = bisect.bisect_right(self.times, moment) - 1
        return self.counts[max(i, 0)]

    def rate(self, start: float, end: float) -> float:
        """Messages per second arriving between two monotonic times."""
        span = end - start
        return (self.count_at(end) - self.count_at(start)) / span if span > 0 else float("nan")

    def longest_gap(self, start: float, end: float) -> float:
        """Longest time in [start, end] during which no message arrived."""
        gap, last_change, last_count = 0.0, start, self.count_at(start)
        for t, n in zip(self.times, self.counts, strict=False):
            if start < t <= end and n != last_count:
                gap, last_change, last_count = max(gap, t - last_change), t, n
        return max(gap, end - last_change)


@contextmanager
def scratch_database() -> Iterator[str]:
    """A new empty database on the server at PG_ADMIN, dropped afterwards."""
    name = f"herald_failover_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rpartition("/")[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@dataclass
class Cluster:
    """Worker processes, each sending to its own sink, and the sinks' timeline."""

    sinks: dict[str, Sink]
    nodes: Nodes
    procs: dict[str, Popen[str]]
    timeline: Timeline

    def duplicates(self) -> tuple[int, set[int]]:
        """(copies beyond the first, delivery ids received more than once)."""
        received: Counter[str | None] = Counter()
        for sink in self.sinks.values():
            received.update(sink.message_ids())
        dup_ids = {_delivery_id(mid) for mid, n in received.items() if n > 1}
        return sum(n - 1 for n in received.values()), dup_ids


@contextmanager
def cluster(url: str, names: tuple[str, ...], lease: str) -> Iterator[Cluster]:
    """Start one sink and one ``herald worker`` per name; stop everything on exit."""
    with ExitStack() as stack:
        sinks = {name: stack.enter_context(Sink()) for name in names}
        nodes = Nodes(url, Path(stack.enter_context(tempfile.TemporaryDirectory())))
        stack.callback(nodes.stop_all)
        procs = {
            n: nodes.start(n, sinks[n].url, lease_ttl=lease, batch_size="200", concurrency="4")
            for n in names
        }
        timeline = stack.enter_context(Timeline(list(sinks.values())))
        yield Cluster(sinks, nodes, procs, timeline)


def _delivery_id(message_id: str | None) -> int:
    """Herald's Message-IDs start with the delivery id: ``<ID.CAMPAIGN.MAC@domain>``."""
    return int((message_id or "<0.").strip("<").split(".", 1)[0])


def seed(engine: Engine, count: int) -> int:
    """Migrate, add ``count`` subscribers to a list and start a campaign to it."""
    migrate(engine)
    add_subscribers(engine, make_list(engine), count)
    return make_campaign(engine)


def seen_at(condition: Callable[[], bool], what: str, timeout: float = CAMPAIGN_TIMEOUT) -> float:
    """Wait for ``condition``; return the monotonic time it was first seen true."""
    wait_until(condition, timeout, what)
    return time.monotonic()


def held_by(engine: Engine, node: str) -> set[int]:
    with engine.begin() as conn:
        return set(
            conn.scalars(
                select(deliveries.c.id).where(
                    deliveries.c.status == "sending", deliveries.c.lease_owner == node
                )
            )
        )


def states_of(engine: Engine, ids: set[int]) -> Counter[tuple[str, str | None]]:
    """How many of ``ids`` are in each (status, lease owner)."""
    with engine.begin() as conn:
        rows = conn.execute(
            select(deliveries.c.status, deliveries.c.lease_owner).where(
                deliveries.c.id.in_(list(ids))
            )
        ).all()
    return Counter((str(status), owner) for status, owner in rows)


def kill_run(n: int, lease: str) -> Figures:
    """One worker SIGKILLed at 40 % of the campaign; see the module docstring."""
    with ExitStack() as stack:
        url = stack.enter_context(scratch_database())
        engine = make_engine(url)
        stack.callback(engine.dispose)
        campaign_id = seed(engine, n)
        c = stack.enter_context(cluster(url, ("a", "b", "c"), lease))
        seen_at(lambda: c.timeline.total() >= n * 4 // 10, "40 % sent")
        killed = time.monotonic()
        c.procs["a"].send_signal(signal.SIGKILL)
        c.procs["a"].wait(timeout=10)
        unacked = held_by(engine, "a")
        if unacked:
            moved = seen_at(
                lambda: states_of(engine, unacked)[("sending", "a")] < len(unacked), "re-claim"
            )
            first = seen_at(lambda: states_of(engine, unacked)[("sent", None)] > 0, "a re-send")
            done = seen_at(
                lambda: states_of(engine, unacked)[("sent", None)] == len(unacked), "all re-sent"
            )
        else:
            moved = first = done = killed
        wait_until(finished(engine, campaign_id), CAMPAIGN_TIMEOUT, "the campaign to finish")
        dup, dup_ids = c.duplicates()
        tl = c.timeline
        return {
            "unacked": len(unacked),
            "kill_to_requeue_s": moved - killed,
            "kill_to_first_resend_s": first - killed,
            "kill_to_all_resent_s": done - killed,
            "rate_before": tl.rate(tl.when(n // 10), killed),
            "rate_after": tl.rate(moved, tl.when(n * 95 // 100)),
            "dup": dup,
            "dup_outside_unacked": len(dup_ids - unacked),
        }


def noticed(nodes: Nodes, names: list[str]) -> bool:
    """Whether every node has logged a failed heartbeat (it saw no writable server)."""
    return all("heartbeat failed" in nodes.log(name) for name in names)


def unacked_on_standby(pair: PgPair) -> set[int]:
    """Rows ``sending`` on the standby once it replayed all it got: claimed, not acked.

    Replication is synchronous, so this is exactly what the dead primary had
    acknowledged; only these rows can be sent twice.
    """
    standby = pair.node_url(pair.standby_port)

    def caught_up() -> bool:
        with psycopg.connect(standby, connect_timeout=2) as conn:
            row = conn.execute(
                "SELECT pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn()"
            ).fetchone()
        return bool(row and row[0])

    wait_until(caught_up, 10, "the standby to replay all it received")
    with psycopg.connect(standby, connect_timeout=2) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM deliveries WHERE status = 'sending'")}


def db_run(n: int, lease: str, ha_delay: float) -> Figures:
    """The primary SIGKILLed at a third of the campaign, the standby promoted."""
    with ExitStack() as stack:
        pair = stack.enter_context(PgPair())
        engine = make_engine(pair.url, connect_timeout=2)
        stack.callback(engine.dispose)
        campaign_id = seed(engine, n)
        c = stack.enter_context(cluster(pair.url, ("a", "b"), lease))
        seen_at(lambda: c.timeline.total() >= n // 3, "a third sent")
        killed, killed_wall = time.monotonic(), utcnow()
        pair.kill_primary()
        kill_done_wall = utcnow()
        unacked = unacked_on_standby(pair)
        seen_at(
            lambda: noticed(c.nodes, list(c.procs)) and time.monotonic() - killed >= ha_delay,
            "the workers to notice the outage",
            ha_delay + 15,
        )
        promoting, promoting_wall = time.monotonic(), utcnow()
        pair.promote_standby()
        promoted = time.monotonic()
        engine.dispose()  # its pooled connections died with the old primary
        wait_until(finished(engine, campaign_id), CAMPAIGN_TIMEOUT, "the campaign to finish")
        end = time.monotonic()
        with engine.begin() as conn:
            first_ack = conn.scalar(
                select(func.min(deliveries.c.sent_at)).where(deliveries.c.sent_at > kill_done_wall)
            )
        alive = all(p.poll() is None for p in c.procs.values())
        dup, dup_ids = c.duplicates()
        return {
            "kill_to_promote_s": promoting - killed,
            "promotion_s": promoted - promoting,
            "promote_to_first_ack_s": _secs(promoting_wall, first_ack),
            "write_outage_s": _secs(killed_wall, first_ack),
            "longest_send_gap_s": c.timeline.longest_gap(killed, end),
            "unacked_at_kill": len(unacked),
            "dup": dup,
            "dup_outside_unacked": len(dup_ids - unacked),
            "workers_alive": float(alive),
        }


def _secs(start: datetime, end: datetime | None) -> float:
    return float("nan") if end is None else (end - start).total_seconds()


def report(title: str, runs: list[Figures]) -> None:
    print(f"\n{title} ({len(runs)} run{'s' if len(runs) != 1 else ''}; median, then each run)")
    for key in runs[0]:
        values = [r[key] for r in runs]
        each = "  ".join(f"{v:.2f}" for v in values)
        print(f"  {key:<26} {statistics.median(values):>9.2f}   [{each}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-n", type=int, default=10_000, help="subscribers per run")
    parser.add_argument("--runs", type=int, default=3, help="worker-kill runs")
    parser.add_argument("--failover-runs", type=int, default=1, help="database failover runs")
    parser.add_argument("--lease", default="3", help="HERALD_LEASE_TTL of the workers (s)")
    parser.add_argument("--ha-delay", type=float, default=0.0, help="kill→promote at least (s)")
    parser.add_argument("--skip-kill", action="store_true")
    parser.add_argument("--skip-db", action="store_true")
    args = parser.parse_args()
    if not args.skip_kill:
        runs = [kill_run(args.n, args.lease) for _ in range(args.runs)]
        report(
            f"worker SIGKILL, 3 workers, n={args.n}, lease {args.lease}s "
            f"(baseline: takeover ≈ lease)",
            runs,
        )
    if not args.skip_db:
        runs = [db_run(args.n, args.lease, args.ha_delay) for _ in range(args.failover_runs)]
        report(
            f"PostgreSQL primary SIGKILL + promotion, 2 workers, n={args.n} "
            f"(baseline: Patroni's default failover, tens of seconds)",
            runs,
        )


if __name__ == "__main__":
    main()
