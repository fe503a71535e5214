"""A rolling restart of three worker nodes during a campaign sends nothing twice.

Each node in turn gets SIGTERM (what systemd, Kubernetes or an operator's
``kill`` sends): it must stop claiming, finish or release what it holds and
exit 0 within its lease, leaving no row claimed under its name; a new process
with the same name then takes its place and sends again. Every subscriber is
served and every Message-ID arrives exactly once across the sinks: a drain,
unlike a crash, leaves nothing in flight to resend.
"""

from __future__ import annotations

import functools
import signal
import time
from collections import Counter
from collections.abc import Callable
from subprocess import Popen

import pytest
from sqlalchemy import Engine, select

from herald.services import campaigns as campaign_service
from herald.services import nodes as node_service
from herald.store.deliveries import status_counts
from herald.store.tables import deliveries
from tests.factories import add_subscribers, finished, make_campaign, make_list
from tests.processes import Nodes, wait_until
from tests.sinks import Sink

TOTAL = 12_000
LEASE = "5"
NAMES = ("a", "b", "c")
SETTINGS = {"lease_ttl": LEASE, "concurrency": "4", "batch_size": "200"}
# A cluster-wide rate keeps the campaign running for about 48 s, so it cannot
# end while the last node is still draining and starting again: unthrottled,
# the two other nodes could send the rest before it rejoined.
RATE = 250.0
# Bounds, not expectations.
PROGRESS_TIMEOUT = 60.0
REJOIN_TIMEOUT = 30.0
FINISH_TIMEOUT = 90.0


def _sent(sinks: dict[str, Sink]) -> int:
    return sum(sink.count() for sink in sinks.values())


def _reached(sinks: dict[str, Sink], count: int) -> bool:
    return _sent(sinks) >= count


def _claimed_by(engine: Engine, node: str) -> int:
    with engine.begin() as conn:
        rows = conn.scalars(
            select(deliveries.c.id).where(
                deliveries.c.status == "sending", deliveries.c.lease_owner == node
            )
        )
        return len(list(rows))


def _pending(engine: Engine, campaign_id: int) -> int:
    with engine.begin() as conn:
        return status_counts(conn, campaign_id).get("pending", 0)


def _node_state(engine: Engine, name: str) -> str:
    states = {r["name"]: str(r["state"]) for r in node_service.list_nodes(engine)}
    return states.get(name, "unknown")


def _restart(
    engine: Engine,
    herald_nodes: Nodes,
    procs: dict[str, Popen[str]],
    sink: Sink,
    name: str,
    *,
    campaign_id: int,
    drains: list[float],
) -> int:
    """SIGTERM node ``name``, check its drain, start its replacement under the same name.

    Returns the drained process's exit code and appends the drain's duration
    to ``drains``; ``procs[name]`` becomes the replacement, which has sent at
    least one message when this returns.
    """
    asked = time.monotonic()
    procs[name].send_signal(signal.SIGTERM)
    code = procs[name].wait(timeout=float(LEASE))  # a drain ends inside the lease
    drains.append(time.monotonic() - asked)
    assert _claimed_by(engine, name) == 0, "the drained node left rows claimed"
    assert _node_state(engine, name) == "gone"
    before = sink.count()
    procs[name] = herald_nodes.start(name, sink.url, **SETTINGS)
    wait_until(
        lambda: sink.count() > before or _pending(engine, campaign_id) == 0,
        REJOIN_TIMEOUT,
        f"{name} to send again",
    )
    assert sink.count() > before, f"the campaign ended before {name} rejoined"
    return code


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_it_restarts_every_node_in_turn_without_a_duplicate(
    engine: Engine, herald_nodes: Nodes, sink_factory: Callable[..., Sink]
) -> None:
    emails = add_subscribers(engine, make_list(engine), TOTAL)
    campaign_id = make_campaign(engine, start=False)
    campaign_service.set_rate(engine, campaign_id, RATE)
    campaign_service.change_status(engine, campaign_id, "start")
    sinks = {name: sink_factory() for name in NAMES}
    procs = {name: herald_nodes.start(name, sinks[name].url, **SETTINGS) for name in NAMES}

    codes: dict[str, int] = {}
    drains: list[float] = []
    for turn, name in enumerate(NAMES, start=1):
        mark = TOTAL * turn // 5
        wait_until(functools.partial(_reached, sinks, mark), PROGRESS_TIMEOUT, f"{mark} sent")
        assert _sent(sinks) < TOTAL, "the campaign ended before every node was restarted"
        codes[name] = _restart(
            engine, herald_nodes, procs, sinks[name], name, campaign_id=campaign_id, drains=drains
        )

    wait_until(finished(engine, campaign_id), FINISH_TIMEOUT, "the campaign to finish")
    assert codes == dict.fromkeys(NAMES, 0)
    dead = {n: herald_nodes.log(n)[-2000:] for n, p in procs.items() if p.poll() is not None}
    assert not dead, dead
    received: Counter[str | None] = Counter()
    for sink in sinks.values():
        received.update(sink.message_ids())
    assert None not in received
    assert len(received) == TOTAL
    assert set(received.values()) == {1}  # dup = 0
    rcpts = {r for sink in sinks.values() for m in sink.messages for r in m.rcpts}
    assert rcpts == set(emails)  # lost = 0
    print(
        f"\nrolling restart: per node {[s.count() for s in sinks.values()]}, duplicates 0, "
        f"SIGTERM→exit {', '.join(f'{d:.2f}s' for d in drains)}"
    )
