"""Two worker processes finish a campaign across a PostgreSQL primary failover.

RELIABILITY row 10. A real primary with a synchronous streaming standby
(``PgPair``); the schema is migrated and the workers connect through the
libpq multi-host URL (``target_session_attrs=read-write``). Once about a
third of the campaign has been sent, the primary's postmaster is SIGKILLed;
while no server accepts writes the workers must stay up; then the standby is
promoted and they must resume by themselves.

The duplicate bound is read, not guessed: after the kill and before the
promotion the standby (hot standby, read-only) holds exactly what the old
primary acknowledged, because replication is synchronous. The rows it shows
``sending`` are the only ones that may have been sent without a durable ack,
so every duplicate Message-ID must belong to one of them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from subprocess import Popen

import psycopg
import pytest
from sqlalchemy import Engine, func, select

from herald.domain.clock import utcnow
from herald.store.engine import make_engine, migrate
from herald.store.tables import deliveries
from tests.chaos.pgcluster import PgPair
from tests.factories import add_subscribers, finished, make_campaign, make_list
from tests.processes import Nodes, wait_until
from tests.sinks import Sink

TOTAL = 5_000
LEASE = "3"
BATCH = "200"
WORKERS = ("a", "b")
# Bounds, not expectations: a stuck run fails well inside two minutes.
PROGRESS_TIMEOUT = 40.0
OUTAGE_NOTICED_TIMEOUT = 15.0
FINISH_TIMEOUT = 60.0


def _delivery_id(message_id: str | None) -> int:
    """Herald's Message-IDs start with the delivery id: ``<ID.CAMPAIGN.MAC@domain>``."""
    return int((message_id or "<0.").strip("<").split(".", 1)[0])


def _standby_caught_up(pair: PgPair) -> bool:
    """Whether the standby has replayed every WAL record it received from the primary."""
    with psycopg.connect(pair.node_url(pair.standby_port), connect_timeout=2) as conn:
        row = conn.execute(
            "SELECT pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn()"
        ).fetchone()
    return bool(row and row[0])


def _unacked_on_standby(pair: PgPair) -> set[int]:
    """Deliveries the dead primary had durably recorded as claimed but not acknowledged."""
    with psycopg.connect(pair.node_url(pair.standby_port), connect_timeout=2) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM deliveries WHERE status = 'sending'")}


def _first_ack_after(engine: Engine, moment: datetime) -> datetime | None:
    with engine.begin() as conn:
        first: datetime | None = conn.scalar(
            select(func.min(deliveries.c.sent_at)).where(deliveries.c.sent_at > moment)
        )
    return first


def _status_counts(engine: Engine) -> dict[str, int]:
    with engine.begin() as conn:
        rows = conn.execute(
            select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
        ).all()
    return {str(status): int(n) for status, n in rows}


def _sent(sinks: dict[str, Sink]) -> int:
    return sum(sink.count() for sink in sinks.values())


@dataclass
class Failover:
    """What happened around one primary failure, as seen from outside the workers."""

    killed_at: datetime  # just before the SIGKILL
    kill_done_at: datetime  # the old primary's port is closed
    promoted_at: datetime  # promotion asked for
    writable_at: datetime  # the promoted server accepts writes
    received_at_kill: int
    received_at_promote: int
    unacked: set[int]  # ``sending`` on the standby at the kill
    alive_in_outage: bool


def _fail_over(
    pair: PgPair, nodes: Nodes, procs: dict[str, Popen[str]], sinks: dict[str, Sink], outage: float
) -> Failover:
    """Kill the primary, read what it had acknowledged, keep no primary for a while, promote.

    The outage lasts until both workers have noticed it and at least ``outage``
    seconds have passed since the kill (the HA manager's delay, chosen by the test).
    """
    killed_at, started = utcnow(), time.monotonic()
    pair.kill_primary()
    kill_done_at = utcnow()
    received_at_kill = _sent(sinks)
    wait_until(lambda: _standby_caught_up(pair), 10, "the standby to replay all it received")
    unacked = _unacked_on_standby(pair)
    wait_until(
        lambda: (
            all("heartbeat failed" in nodes.log(n) for n in WORKERS)
            and time.monotonic() - started >= outage
        ),
        outage + OUTAGE_NOTICED_TIMEOUT,
        "both workers to notice that no server accepts writes",
    )
    alive = all(proc.poll() is None for proc in procs.values())
    received_at_promote = _sent(sinks)
    promoted_at = utcnow()
    pair.promote_standby()
    return Failover(
        killed_at=killed_at,
        kill_done_at=kill_done_at,
        promoted_at=promoted_at,
        writable_at=utcnow(),
        received_at_kill=received_at_kill,
        received_at_promote=received_at_promote,
        unacked=unacked,
        alive_in_outage=alive,
    )


# "short": promoted as soon as both workers saw the outage, within their leases.
# "past-lease": no primary for longer than the lease, so every held lease runs
# out on the workers' clocks and is re-queued after the promotion.
@pytest.mark.slow
@pytest.mark.parametrize("outage", [0.0, float(LEASE) + 1.0], ids=["short", "past-lease"])
def test_it_finishes_a_campaign_across_a_primary_failover(
    pg_pair: PgPair, sink_factory: Callable[..., Sink], tmp_path: Path, outage: float
) -> None:
    engine = make_engine(pg_pair.url, connect_timeout=2)
    migrate(engine)
    emails = add_subscribers(engine, make_list(engine), TOTAL)
    campaign_id = make_campaign(engine)
    sinks = {name: sink_factory() for name in WORKERS}
    nodes = Nodes(pg_pair.url, tmp_path / "data")
    try:
        procs = {
            name: nodes.start(
                name, sinks[name].url, lease_ttl=LEASE, batch_size=BATCH, concurrency="4"
            )
            for name in WORKERS
        }
        wait_until(lambda: _sent(sinks) >= TOTAL // 3, PROGRESS_TIMEOUT, "a third to be sent")
        fo = _fail_over(pg_pair, nodes, procs, sinks, outage)
        engine.dispose()  # its pooled connections died with the old primary
        wait_until(finished(engine, campaign_id), FINISH_TIMEOUT, "the campaign to finish")
        dead = {n: nodes.log(n)[-3000:] for n, proc in procs.items() if proc.poll() is not None}
        first_ack = _first_ack_after(engine, fo.kill_done_at)
        counts = _status_counts(engine)
    finally:
        nodes.stop_all()
        engine.dispose()

    assert fo.alive_in_outage
    assert not dead, dead
    received: Counter[str | None] = Counter()
    for sink in sinks.values():
        received.update(sink.message_ids())
    rcpts = {r for sink in sinks.values() for m in sink.messages for r in m.rcpts}
    assert rcpts == set(emails)  # lost = 0
    assert counts == {"sent": TOTAL}
    # Without a database a node sends only rows it had claimed before the kill.
    assert fo.received_at_promote - fo.received_at_kill <= len(fo.unacked)
    duplicated = {_delivery_id(mid) for mid, n in received.items() if n > 1}
    dup = sum(n - 1 for n in received.values())
    assert duplicated <= fo.unacked, f"not in flight at the kill: {duplicated - fo.unacked}"
    assert dup <= len(fo.unacked)
    assert first_ack is not None
    _report(fo, first_ack, dup)


def _report(fo: Failover, first_ack: datetime, dup: int) -> None:
    def secs(a: datetime, b: datetime) -> str:
        return f"{(b - a).total_seconds():.2f}s"

    print(
        f"\ndb failover: {fo.received_at_kill}/{TOTAL} received at the kill, "
        f"{fo.received_at_promote - fo.received_at_kill} more before the promotion; "
        f"{len(fo.unacked)} claimed but unacknowledged at the kill; duplicates {dup}; "
        f"kill→promote {secs(fo.killed_at, fo.promoted_at)}, "
        f"promotion {secs(fo.promoted_at, fo.writable_at)}; write outage (kill→first ack on "
        f"the promoted server) {secs(fo.killed_at, first_ack)}, "
        f"of which since the promotion was asked for {secs(fo.promoted_at, first_ack)}"
    )
