"""The relay pool against real SMTP servers that fail on purpose, on both backends.

In each: every deliverable subscriber is served once (duplicates counted
exactly, by Message-ID across all sinks), nothing is bounced that should
not be, and the weights are respected.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from herald.delivery.pool import PoolRelay
from herald.delivery.worker import Worker
from herald.domain.breaker import BreakerPolicy
from herald.domain.clock import as_utc
from herald.domain.throttle import Limit
from herald.services import nodes
from herald.services import relays as svc
from tests.factories import (
    SECRET,
    add_subscribers,
    delivery_rows,
    finished,
    make_campaign,
    make_list,
    options,
    relay,
    run_worker_until,
)
from tests.processes import wait_until
from tests.sinks import (
    Sink,
    drop_after_data,
    fail_rcpt,
    refuse,
    reply_to_all,
    slow,
)

SinkFactory = Callable[..., Sink]


def campaign(engine: Engine, count: int) -> tuple[int, list[str]]:
    emails = add_subscribers(engine, make_list(engine), count)
    return make_campaign(engine), emails


def pool_relay(sink: Sink, name: str, weight: int = 1, **limits: int) -> PoolRelay:
    return PoolRelay(relay(sink.url, name), weight, **limits)  # type: ignore[arg-type]


def received(*sinks: Sink) -> Counter[str | None]:
    """How often each Message-ID arrived, over all ``sinks``."""
    total: Counter[str | None] = Counter()
    for sink in sinks:
        total += sink.message_ids()
    return total


def rcpts(*sinks: Sink) -> set[str]:
    return {r for sink in sinks for m in sink.messages for r in m.rcpts}


def statuses(engine: Engine, campaign_id: int) -> Counter[str]:
    return Counter(r["status"] for r in delivery_rows(engine, campaign_id))


def test_the_split_follows_the_weights(engine: Engine, sink_factory: SinkFactory) -> None:
    heavy, light = sink_factory(), sink_factory()
    campaign_id, emails = campaign(engine, 1200)

    run_worker_until(
        engine,
        [pool_relay(heavy, "heavy", 3), pool_relay(light, "light", 1)],
        finished(engine, campaign_id),
    )

    assert max(received(heavy, light).values()) == 1
    assert rcpts(heavy, light) == set(emails)
    assert abs(heavy.count() / 1200 - 0.75) <= 0.03, (heavy.count(), light.count())
    by_relay = Counter(r["relay"] for r in delivery_rows(engine, campaign_id))
    assert by_relay == {"heavy": heavy.count(), "light": light.count()}


def test_a_refusing_relay_is_passed_over_and_its_breaker_opens(
    engine: Engine, sink_factory: SinkFactory
) -> None:
    dead, good = sink_factory(refuse()), sink_factory()
    svc.add_relay(engine, SECRET, "dead", dead.url)
    svc.add_relay(engine, SECRET, "good", good.url)
    campaign_id, emails = campaign(engine, 300)

    run_worker_until(engine, svc.load_stored_relays(engine, SECRET), finished(engine, campaign_id))

    assert rcpts(good) == set(emails) and max(received(good).values()) == 1
    assert statuses(engine, campaign_id) == {"sent": 300}
    shown = {r["name"]: r for r in svc.list_relays(engine)}
    assert shown["dead"]["state"] == "open"
    assert "connect" in shown["dead"]["last_error"]
    assert shown["dead"]["deferred"] >= 1 and shown["dead"]["sent"] == 0
    assert shown["good"]["sent"] == 300 and shown["good"]["state"] == "healthy"
    assert shown["good"]["latency_ms"] is not None


def test_4xx_replies_are_retried_at_once_on_another_relay(
    engine: Engine, sink_factory: SinkFactory
) -> None:
    busy = sink_factory(reply_to_all(421, stage="mail"))
    later = sink_factory(reply_to_all(451, stage="rcpt"))
    good = sink_factory()
    campaign_id, emails = campaign(engine, 200)
    relays = [pool_relay(busy, "busy", 5), pool_relay(later, "later", 5), pool_relay(good, "good")]

    worker = run_worker_until(engine, relays, finished(engine, campaign_id))

    assert rcpts(good) == set(emails) and max(received(good).values()) == 1
    assert busy.count() == later.count() == 0
    assert statuses(engine, campaign_id) == {"sent": 200}
    # Open, or half-open for a trial that will fail again: never healthy.
    assert "healthy" not in {worker.pool.state("busy"), worker.pool.state("later")}


def test_a_per_recipient_5xx_bounces_only_that_recipient(
    engine: Engine, sink_factory: SinkFactory
) -> None:
    picky = sink_factory(fail_rcpt({"user7@example.com": 550, "user9@example.com": 553}))
    campaign_id, emails = campaign(engine, 50)

    worker = run_worker_until(engine, [pool_relay(picky, "picky")], finished(engine, campaign_id))

    assert statuses(engine, campaign_id) == {"sent": 48, "bounced": 2}
    assert rcpts(picky) == set(emails) - {"user7@example.com", "user9@example.com"}
    assert worker.pool.state("picky") == "healthy"


def test_a_relay_that_refuses_us_is_failed_and_nobody_bounces(
    engine: Engine, sink_factory: SinkFactory
) -> None:
    locked = sink_factory(reply_to_all(530, stage="mail"))
    denied = sink_factory(fail_rcpt(lambda _: 554))  # 554 5.7.1 Relay access denied
    good = sink_factory()
    for name, sink in (("locked", locked), ("denied", denied), ("good", good)):
        svc.add_relay(engine, SECRET, name, sink.url, weight=1 if name == "good" else 4)
    campaign_id, emails = campaign(engine, 300)

    run_worker_until(
        engine,
        svc.load_stored_relays(engine, SECRET),
        finished(engine, campaign_id),
        opts=options(breaker=BreakerPolicy(threshold=3, cooldown=0.2, failed_cooldown=60.0)),
    )

    assert statuses(engine, campaign_id) == {"sent": 300}
    assert rcpts(good) == set(emails) and max(received(good).values()) == 1
    shown = {r["name"]: r for r in svc.list_relays(engine)}
    assert shown["locked"]["state"] == shown["denied"]["state"] == "failed"
    assert "530" in shown["locked"]["last_error"] and "554" in shown["denied"]["last_error"]


def test_a_slow_relay_times_out_and_its_work_moves_elsewhere(
    engine: Engine, sink_factory: SinkFactory
) -> None:
    sluggish, good = sink_factory(slow(2.0)), sink_factory()
    slow_relay = PoolRelay(relay(sluggish.url + "?timeout=0.3", "slow"), weight=3)
    campaign_id, emails = campaign(engine, 200)

    worker = run_worker_until(
        engine, [slow_relay, pool_relay(good, "good")], finished(engine, campaign_id)
    )

    assert statuses(engine, campaign_id) == {"sent": 200}
    assert rcpts(good) == set(emails)
    assert sluggish.count() == 0  # timed out at the greeting: nothing reached it
    assert max(received(good).values()) == 1
    assert worker.pool.state("slow") == "open"


def test_a_drop_after_data_duplicates_exactly_the_ambiguous_sends(
    engine: Engine, sink_factory: SinkFactory
) -> None:
    flaky = sink_factory(drop_after_data(times=5, deliver=True), pipelining=True)
    good = sink_factory()
    campaign_id, emails = campaign(engine, 200)

    worker = run_worker_until(
        engine,
        [pool_relay(flaky, "flaky", 1), pool_relay(good, "good", 1)],
        finished(engine, campaign_id),
    )

    assert statuses(engine, campaign_id) == {"sent": 200}
    ids = received(flaky, good)
    assert rcpts(flaky, good) == set(emails) and len(ids) == 200
    duplicates = sum(n - 1 for n in ids.values())
    assert flaky.drops >= 1  # its breaker may open before all five
    assert duplicates == worker.stats.ambiguous == flaky.drops


def test_sending_waits_while_every_relay_is_down_and_resumes_by_itself(
    engine: Engine, sink_factory: SinkFactory
) -> None:
    only = sink_factory()
    campaign_id, emails = campaign(engine, 600)
    outage = threading.Event()

    def break_and_mend(worker: Worker) -> None:
        wait_until(lambda: only.count() >= 150, 30, "a quarter sent")
        only.stop()
        wait_until(lambda: worker.pool.state("only") == "open", 30, "the breaker to open")
        outage.set()
        before = only.count()
        wait_until(lambda: worker.stats.retried > 0, 30, "a refused send")
        assert only.count() == before
        only.restart()

    worker = run_worker_until(
        engine,
        [pool_relay(only, "only")],
        finished(engine, campaign_id),
        during=break_and_mend,
        opts=options(retry_base_seconds=1.0),
    )

    assert outage.is_set()
    assert statuses(engine, campaign_id) == {"sent": 600}
    ids = received(only)
    assert rcpts(only) == set(emails) and len(ids) == 600
    # A send cut off after its final dot may or may not have been kept.
    assert sum(n - 1 for n in ids.values()) <= worker.stats.ambiguous
    assert worker.pool.state("only") == "healthy"


@pytest.mark.parametrize("limited", ["relay", "domain"])
def test_rate_limits_hold_for_two_nodes_together(engine: Engine, sink: Sink, limited: str) -> None:
    rate = 20.0
    campaign_id, _ = campaign(engine, 60)
    limits = {"max_rate": rate} if limited == "relay" else {}
    domains = {"example.com": Limit(rate, 2)} if limited == "domain" else {}
    relays = [PoolRelay(relay(sink.url, "only"), **limits)]  # type: ignore[arg-type]
    for name in ("n0", "n1"):
        nodes.register_node(engine, name, roles="worker")

    async def main() -> None:
        stop = asyncio.Event()
        workers = [
            Worker(engine, relays, options(node_name=f"n{i}", batch_size=10, domain_limits=domains))
            for i in range(2)
        ]
        tasks = [asyncio.create_task(w.run(stop)) for w in workers]
        deadline = time.monotonic() + 60
        while not await asyncio.to_thread(finished(engine, campaign_id)):
            assert time.monotonic() < deadline, "campaign did not finish"
            for name in ("n0", "n1"):
                await asyncio.to_thread(
                    nodes.heartbeat, engine, name, draining=False, roles="worker"
                )
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*tasks)
        assert all(w.stats.sent > 0 for w in workers), "both nodes should have sent"

    asyncio.run(main())

    sent = sorted(as_utc(r["sent_at"]) for r in delivery_rows(engine, campaign_id))
    assert len(sent) == 60 and max(sink.message_ids().values()) == 1
    # sent_at is the ack's commit time, which trails the send by an ack group:
    # check two-second windows (two seconds of rate plus the two nodes' bursts).
    for i, start in enumerate(sent):
        in_window = sum(1 for t in sent[i:] if t < start + timedelta(seconds=2))
        assert in_window <= 2 * rate + 4, f"{in_window} messages within two seconds"
    span = (sent[-1] - sent[0]).total_seconds()
    assert span >= (60 - 2 * rate) / rate  # the limit really applied
