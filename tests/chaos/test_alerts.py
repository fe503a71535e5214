"""Alerts about the database itself: PostgreSQL killed, then its standby promoted.

While no server accepts writes, the alert engine (whose duty keeps running
through the outage) must still notify, by webhook and by email straight to
the relay; once the standby is promoted it must say the database is back,
report the failover once, resolve it after its hold time, and store what it
kept in memory meanwhile.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine

from herald.config import Settings
from herald.domain import alerting as rules
from herald.ops.alerts import AlertEngine
from herald.runtime import build_runtime
from herald.services import alerts, nodes
from herald.store.engine import make_engine, migrate
from tests.chaos.pgcluster import PgPair
from tests.factories import SECRET, add_subscribers, make_campaign, make_list
from tests.processes import Nodes, wait_until
from tests.sinks import Sink, slow
from tests.webhooks import WebhookReceiver, evaluate_until


def test_it_alerts_while_postgresql_is_down_and_reports_the_failover(
    pg_pair: PgPair, tmp_path: Path, webhook: WebhookReceiver, sink: Sink
) -> None:
    settings = Settings(
        database_url=pg_pair.url,
        data_dir=tmp_path / "data",
        secret_key=SECRET,
        node_name="evaluator",
        relays=sink.url,
        alert_webhook=webhook.url,
        alert_email="ops@example.com",
        alert_failover_hold=2.0,
    )
    runtime = build_runtime(settings)
    migrate(runtime.engine)
    alerting = AlertEngine(runtime)

    async def scenario() -> None:
        await alerting.run()  # knows which server answers
        assert alerting.server is not None
        pg_pair.kill_primary()
        await evaluate_until(
            alerting, lambda: webhook.saw(rules.DATABASE_DOWN, "firing"), "database down"
        )
        await asyncio.to_thread(
            wait_until,
            lambda: any(b"HeraldDatabaseDown" in m.data for m in sink.messages),
            30,
            "the alert email while the database is down",
        )
        await asyncio.to_thread(pg_pair.promote_standby)
        await evaluate_until(
            alerting,
            lambda: (
                webhook.saw(rules.DATABASE_DOWN, "resolved")
                and webhook.saw(rules.FAILOVER, "firing")
            ),
            "the database back, and the failover reported",
        )
        await evaluate_until(
            alerting, lambda: webhook.saw(rules.FAILOVER, "resolved"), "the failover notice to end"
        )

    try:
        asyncio.run(scenario())
        assert len(webhook.notices(rules.DATABASE_DOWN, "firing")) == 1
        assert len(webhook.notices(rules.FAILOVER, "firing")) == 1
        stored = {(a["rule"], a["status"]) for a in alerts.list_alerts(runtime.engine)}
        assert (rules.DATABASE_DOWN, "resolved") in stored, "the outage's alert was not stored"
    finally:
        runtime.close()


# PostgreSQL only: a cluster of worker processes is what it is for, and the
# SQLite variant of the same sequence adds 20 s for nothing new.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_it_reports_killed_workers_once_for_the_whole_cluster(
    database_url: str,
    tmp_path: Path,
    webhook: WebhookReceiver,
    sink_factory: Callable[..., Sink],
    herald_nodes: Nodes,
) -> None:
    """Two real worker processes both offer to evaluate; each change is notified once.

    1. kill -9 one worker: it is lost (told once, though two nodes evaluate);
    2. kill -9 the other while the campaign runs: an API node's evaluation
       (here in the test) finds it lost too and no live worker, and does not
       repeat what the first evaluation already told;
    3. restart the first: the cluster says it is back and a worker lives again.
    """
    settings = {
        "alert_webhook": webhook.url,
        "alert_interval": "0.3",
        "alert_node_lost_after": "2",
        "duty_lease_ttl": "1.5",
        "lease_ttl": "2",
        "concurrency": "1",
        "heartbeat_interval": "0.3",
    }
    sink = sink_factory(slow(0.1))
    engine = make_engine(database_url)
    make_list(engine)
    add_subscribers(engine, 1, 200)
    workers = {name: herald_nodes.start(name, sink.url, **settings) for name in ("w1", "w2")}
    wait_until(lambda: _alive(engine) == {"w1", "w2"}, 30, "both workers to heartbeat")
    make_campaign(engine)
    wait_until(lambda: sink.count() >= 2, 30, "the campaign to send")

    workers["w1"].kill()
    wait_until(lambda: webhook.saw(rules.NODE_LOST, "firing", key="w1"), 30, "w1 lost")
    # A notice goes out just before its state is stored: a node killed in
    # between would leave the next evaluator to tell it again (at least once).
    wait_until(lambda: _told(engine, rules.NODE_LOST, "w1"), 30, "the notice to be stored")
    workers["w2"].kill()
    runtime = build_runtime(
        Settings(
            database_url=database_url,
            data_dir=tmp_path / "api",
            secret_key=SECRET,
            node_name="api1",
            alert_webhook=webhook.url,
            alert_node_lost_after=2.0,
        )
    )
    alerting = AlertEngine(runtime)
    try:
        asyncio.run(
            evaluate_until(
                alerting,
                lambda: (
                    webhook.saw(rules.NODE_LOST, "firing", key="w2")
                    and webhook.saw(rules.NO_LIVE_WORKER, "firing")
                ),
                "w2 lost and no live worker",
            )
        )
    finally:
        runtime.close()
    herald_nodes.start("w1", sink.url, **settings)
    wait_until(
        lambda: (
            webhook.saw(rules.NODE_LOST, "resolved", key="w1")
            and webhook.saw(rules.NO_LIVE_WORKER, "resolved")
        ),
        30,
        "w1 back and a live worker",
    )
    told = Counter((b["rule"], b["key"], b["status"]) for b in webhook.bodies)
    assert told[(rules.NODE_LOST, "w1", "firing")] == 1, told
    assert told[(rules.NODE_LOST, "w2", "firing")] == 1, told
    assert told[(rules.NO_LIVE_WORKER, "", "firing")] == 1, told
    assert told[(rules.NODE_LOST, "w1", "resolved")] == 1, told
    engine.dispose()


def _alive(engine: Engine) -> set[str]:
    return {n["name"] for n in nodes.list_nodes(engine) if n["alive"]}


def _told(engine: Engine, rule: str, key: str) -> bool:
    return any(
        a["rule"] == rule and a["key"] == key and a["notified_at"] is not None
        for a in alerts.list_alerts(engine)
    )
