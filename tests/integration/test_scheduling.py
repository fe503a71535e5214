"""Scheduled starts happen exactly once; a campaign's rate limit holds across nodes."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import Engine, select

from herald.delivery.worker import Worker
from herald.domain.clock import as_utc, utcnow
from herald.services import campaigns, outbox
from herald.store.tables import deliveries
from tests.factories import (
    add_subscribers,
    campaign_status,
    make_campaign,
    make_list,
    options,
    relay,
)
from tests.sinks import Sink


def test_it_starts_a_due_scheduled_campaign_exactly_once(engine: Engine) -> None:
    list_id = make_list(engine)
    add_subscribers(engine, list_id, 5)
    due = make_campaign(engine, start=False)
    later = make_campaign(engine, start=False)
    campaigns.schedule_campaign(engine, due, utcnow() - timedelta(seconds=1))
    campaigns.schedule_campaign(engine, later, utcnow() + timedelta(hours=1))

    with ThreadPoolExecutor(4) as pool:
        passes = list(pool.map(lambda _: outbox.housekeeping(engine, max_attempts=3), range(8)))

    started = [cid for p in passes for cid in p.started]
    assert started == [due]
    assert campaign_status(engine, due) == "running"
    assert campaign_status(engine, later) == "scheduled"


def test_it_holds_a_rate_limit_across_two_nodes(engine: Engine, sink: Sink) -> None:
    rate = 20.0
    list_id = make_list(engine)
    add_subscribers(engine, list_id, 60)
    campaign_id = make_campaign(engine, start=False)
    campaigns.set_rate(engine, campaign_id, rate)
    campaigns.change_status(engine, campaign_id, "start")
    relays = [relay(sink.url)]

    async def main() -> None:
        stop = asyncio.Event()
        nodes = [Worker(engine, relays, options(node_name=f"n{i}")) for i in range(2)]
        tasks = [asyncio.create_task(w.run(stop)) for w in nodes]
        deadline = time.monotonic() + 60
        while campaign_status(engine, campaign_id) != "finished":
            assert time.monotonic() < deadline, "campaign did not finish"
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*tasks)
        assert all(w.stats.sent > 0 for w in nodes), "both nodes should have sent"

    asyncio.run(main())

    with engine.begin() as conn:
        sent = sorted(
            as_utc(t)
            for t in conn.scalars(
                select(deliveries.c.sent_at).where(deliveries.c.campaign_id == campaign_id)
            )
        )
    assert len(sent) == 60
    # The bucket meters claims; sent_at is the ack commit time, which trails the
    # send by up to an ack group and a claim batch. So check two-second windows:
    # at most one second's burst plus two seconds of rate.
    for i, start in enumerate(sent):
        in_window = sum(1 for t in sent[i:] if t < start + timedelta(seconds=2))
        assert in_window <= 3 * rate + 1, f"{in_window} messages within two seconds"
    span = (sent[-1] - sent[0]).total_seconds()
    assert span >= (60 - 2 * rate) / rate  # the limit really applied
