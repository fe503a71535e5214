"""kill -9 of a sending process mid-campaign, then a restart: nothing lost.

Duplicates are possible only for rows the dead process had claimed and not
acknowledged (it may have sent them); the test counts them exactly by
Message-ID at the sink and checks every duplicate is one of those.
"""

from __future__ import annotations

import signal

from sqlalchemy import Engine, select

from herald.store.tables import deliveries
from tests.factories import add_subscribers, finished, make_campaign, make_list
from tests.processes import Nodes, wait_until
from tests.sinks import Sink

TOTAL = 3000
SETTINGS = {"lease_ttl": "2", "batch_size": "100", "concurrency": "4"}


def test_it_resumes_after_kill_9_with_nothing_lost(
    engine: Engine, sink: Sink, herald_nodes: Nodes
) -> None:
    list_id = make_list(engine)
    emails = add_subscribers(engine, list_id, TOTAL)
    campaign_id = make_campaign(engine)

    first = herald_nodes.start("node-a", sink.url, **SETTINGS)
    wait_until(lambda: sink.count() >= TOTAL // 3, 60, "a third of the campaign")
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

    herald_nodes.start("node-b", sink.url, **SETTINGS)
    wait_until(finished(engine, campaign_id), 120, "the campaign to finish")

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
