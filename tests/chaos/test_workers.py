"""Three worker processes share a 20,000-recipient campaign; one is killed, one frozen.

Each worker sends through its own sink, so the test knows who sent what.
Invariants checked: every subscriber receives the message (lost = 0); every
duplicate was in flight, unacknowledged, at the kill; the frozen node, once
woken past its lease, sends nothing another node already sent (dup from the
woken node = 0).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

import pytest
from sqlalchemy import Engine, func, select

from herald.store.tables import deliveries
from tests.factories import add_subscribers, finished, make_campaign, make_list
from tests.processes import Nodes, wait_until
from tests.sinks import Sink

TOTAL = 20_000
LEASE = "3"


def _delivery_id(message_id: str | None) -> int:
    """Herald's Message-IDs start with the delivery id: ``<ID.CAMPAIGN.MAC@domain>``."""
    return int((message_id or "<0.").strip("<").split(".", 1)[0])


def _owned(engine: Engine, node: str) -> set[int]:
    with engine.begin() as conn:
        return set(
            conn.scalars(
                select(deliveries.c.id).where(
                    deliveries.c.status == "sending", deliveries.c.lease_owner == node
                )
            )
        )


def _sent_count(engine: Engine) -> int:
    with engine.begin() as conn:
        return int(conn.scalar(select(func.count()).where(deliveries.c.status == "sent")) or 0)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_it_survives_a_kill_and_a_freeze(
    engine: Engine, herald_nodes: Nodes, sink_factory: type[Sink]
) -> None:
    list_id = make_list(engine)
    emails = add_subscribers(engine, list_id, TOTAL)
    campaign_id = make_campaign(engine)
    sinks = {name: sink_factory() for name in ("a", "b", "c")}
    procs = {
        name: herald_nodes.start(name, sinks[name].url, lease_ttl=LEASE, concurrency="4")
        for name in sinks
    }

    wait_until(lambda: _sent_count(engine) >= TOTAL // 3, 120, "a third of the campaign")
    procs["a"].send_signal(signal.SIGKILL)
    procs["a"].wait(timeout=10)
    unacked = _owned(engine, "a")

    wait_until(lambda: bool(_owned(engine, "b")), 30, "b to hold claimed work")
    os.kill(procs["b"].pid, signal.SIGSTOP)
    frozen_held = _owned(engine, "b")
    # Frozen past its lease: everything it held has been re-queued or re-claimed.
    wait_until(lambda: not (_owned(engine, "b") & frozen_held), 60, "b's leases to expire")
    before_wake = sinks["b"].count()
    os.kill(procs["b"].pid, signal.SIGCONT)

    wait_until(finished(engine, campaign_id), 180, "the campaign to finish")
    for name in ("b", "c"):
        assert procs[name].poll() is None, herald_nodes.log(name)[-3000:]

    received: Counter[str | None] = Counter()
    for sink in sinks.values():
        received.update(sink.message_ids())
    rcpts = {r for sink in sinks.values() for m in sink.messages for r in m.rcpts}
    assert rcpts == set(emails)  # lost = 0
    duplicated = {mid for mid, n in received.items() if n > 1}
    # The woken node may send only what it claimed after waking. A row another
    # node also sent is a race unless it was the killed node's unacknowledged
    # work (re-claimed legitimately). Its own pre-freeze unacknowledged sends,
    # re-claimed by itself after waking, are duplicates of the freeze, counted below.
    by_others = {m.message_id for name in ("a", "c") for m in sinks[name].messages}
    woken = [m.message_id for m in sinks["b"].messages[before_wake:]]
    raced = [mid for mid in woken if mid in by_others and _delivery_id(mid) not in unacked]
    assert not raced, f"the woken node sent work another node owned: {raced[:5]}"
    with engine.begin() as conn:
        dup_ids = set(
            conn.scalars(select(deliveries.c.id).where(deliveries.c.message_id.in_(duplicated)))
        )
    # Every duplicate was sent and not acknowledged by the killed node, or by the
    # frozen node before its lease ran out: the cases where SMTP said 250 and
    # the ack could not be written in time.
    assert dup_ids <= unacked | frozen_held
    dup = sum(n - 1 for n in received.values())
    print(
        f"\nchaos: killed node unacked {len(unacked)}, duplicates {dup}, "
        f"frozen node held {len(frozen_held)}, sent after waking {len(woken)}"
    )
