"""The alert engine against real faults: a relay that stops, a relay that answers 451,
a node that stops heartbeating; notices go to a real webhook receiver and a real
SMTP sink, on SQLite and PostgreSQL.

The engine runs in the test's event loop (`AlertEngine.run`, what the cluster
duty calls) beside a real worker, so each evaluation happens when the test
says and no wall-clock threshold is needed beyond the rules' own (seconds).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text, update

from herald.config import Settings
from herald.delivery.worker import Worker
from herald.domain import alerting as rules
from herald.domain.breaker import BreakerPolicy
from herald.domain.clock import utcnow
from herald.domain.tracking import open_url
from herald.node import NodeState
from herald.ops.alerts import AlertEngine
from herald.runtime import Runtime, build_runtime
from herald.services import alerts, auth, complaints, duties, nodes, probes, relays
from herald.store.tables import job_runs
from herald.web.app import create_app
from herald.web.nodestats import node_stats
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
from tests.sinks import Sink, reply_to_all
from tests.webapp import BASE_URL
from tests.webhooks import WebhookReceiver, evaluate_until


@pytest.fixture
def make_runtime(database_url: str, tmp_path: Path) -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(**settings: Any) -> Runtime:
        base: dict[str, Any] = {
            "database_url": database_url,
            "data_dir": tmp_path / "data",
            "secret_key": SECRET,
            "node_name": "evaluator",
            "alert_node_lost_after": 1.0,
            "alert_relay_down_after": 0.5,
            "alert_all_relays_down_after": 0.5,
            "alert_outbox_stalled_after": 1.5,
            "alert_window": 30.0,
        }
        runtime = build_runtime(Settings(**{**base, **settings}))
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.close()


def stored_rules(runtime: Runtime) -> dict[tuple[str, str], str]:
    return {(a["rule"], a["key"]): a["status"] for a in alerts.list_alerts(runtime.engine)}


def test_it_alerts_while_the_relay_is_down_and_resolves_when_it_is_back(
    make_runtime: Callable[..., Runtime], webhook: WebhookReceiver, sink: Sink
) -> None:
    runtime = make_runtime(alert_webhook=webhook.url)
    engine = runtime.engine
    make_list(engine)
    add_subscribers(engine, 1, 30)
    sink_relay = relay(sink.url)
    relays.seed_from_env(engine, SECRET, [sink_relay])
    sink.stop()  # the relay is down from the start: nothing can be sent
    campaign_id = make_campaign(engine)
    alerting = AlertEngine(runtime)

    async def scenario() -> None:
        stop = asyncio.Event()
        worker = Worker(engine, [sink_relay], options(keeper_interval=0.1))
        task = asyncio.create_task(worker.run(stop))
        try:
            await evaluate_until(
                alerting,
                lambda: (
                    webhook.saw(rules.RELAY_DOWN, "firing", key="sink")
                    and webhook.saw(rules.ALL_RELAYS_DOWN, "firing")
                    and webhook.saw(rules.OUTBOX_STALLED, "firing")
                ),
                "relay down, all relays down and outbox stalled",
            )
            sink.restart()
            await evaluate_until(
                alerting,
                lambda: all(
                    webhook.saw(rule, "resolved")
                    for rule in (rules.RELAY_DOWN, rules.ALL_RELAYS_DOWN, rules.OUTBOX_STALLED)
                ),
                "every relay alert to resolve",
            )
            await asyncio.to_thread(wait_until, finished(engine, campaign_id), 30, "the campaign")
        finally:
            stop.set()
            await task

    asyncio.run(scenario())
    for rule in (rules.RELAY_DOWN, rules.ALL_RELAYS_DOWN, rules.OUTBOX_STALLED):
        assert len(webhook.notices(rule, "firing")) == 1, f"{rule} fired more than once"
    first = webhook.notices(rules.RELAY_DOWN, "firing")[0]
    assert first["severity"] == "warning" and first["node"] == "evaluator"
    assert stored_rules(runtime)[(rules.RELAY_DOWN, "sink")] == "resolved"
    assert sink.count() == 30


def test_it_alerts_on_the_send_error_rate_of_a_relay_answering_451(
    make_runtime: Callable[..., Runtime],
    webhook: WebhookReceiver,
    sink_factory: Callable[..., Sink],
) -> None:
    runtime = make_runtime(alert_webhook=webhook.url, alert_webhook_format="json")
    engine = runtime.engine
    bad = sink_factory(reply_to_all(451, stage="rcpt"))
    make_list(engine)
    add_subscribers(engine, 1, 20)
    bad_relay = relay(bad.url)
    relays.seed_from_env(engine, SECRET, [bad_relay])
    make_campaign(engine)
    alerting = AlertEngine(runtime)

    async def scenario() -> None:
        await alerting.run()  # the counters' baseline, before the first result
        stop = asyncio.Event()
        # A breaker that stays closed, so the 451s keep coming at full speed.
        breaker = BreakerPolicy(threshold=1000, cooldown=0.2, failed_cooldown=1.0)
        opts = options(
            keeper_interval=0.1, max_attempts=50, retry_base_seconds=0.02, breaker=breaker
        )
        task = asyncio.create_task(Worker(engine, [bad_relay], opts).run(stop))
        try:
            await evaluate_until(
                alerting, lambda: webhook.saw(rules.SEND_ERRORS, "firing"), "the error rate"
            )
        finally:
            stop.set()
            await task

    asyncio.run(scenario())
    fired = webhook.notices(rules.SEND_ERRORS, "firing")[0]
    assert fired["details"]["errors"] >= 10 and fired["details"]["ratio"] > 0.05
    assert bad.count() == 0


def test_it_notifies_a_lost_node_once_repeats_it_and_says_when_it_is_back(
    make_runtime: Callable[..., Runtime], webhook: WebhookReceiver, sink: Sink
) -> None:
    """A node that stops heartbeating (its process gone) is lost until it registers again."""
    runtime = make_runtime(
        alert_webhook=webhook.url,
        alert_email="ops@example.com",
        alert_repeat=1.0,
        relays=sink.url,
    )
    nodes.register_node(runtime.engine, "w1", roles="worker")
    alerting = AlertEngine(runtime)

    async def scenario() -> None:
        await evaluate_until(
            alerting, lambda: len(webhook.notices(rules.NODE_LOST)) >= 2, "a repeat"
        )
        nodes.register_node(runtime.engine, "w1", roles="worker")  # it came back
        await evaluate_until(alerting, lambda: webhook.saw(rules.NODE_LOST, "resolved"), "back")

    asyncio.run(scenario())
    lost = webhook.notices(rules.NODE_LOST)
    assert [(n["status"], n["repeat"]) for n in lost][:2] == [("firing", False), ("firing", True)]
    assert lost[-1]["status"] == "resolved" and lost[-1]["key"] == "w1"
    assert sink.wait_for(3), "the firing, repeat and resolved emails"
    assert all(b"HeraldNodeLost" in m.data for m in sink.messages)
    assert {m.rcpts for m in sink.messages} == {("ops@example.com",)}


def test_it_silences_an_alert_until_the_silence_expires(
    make_runtime: Callable[..., Runtime], webhook: WebhookReceiver
) -> None:
    runtime = make_runtime(alert_webhook=webhook.url)
    nodes.register_node(runtime.engine, "w1", roles="worker")
    silence = alerts.add_silence(
        runtime.engine, "nodelost", key="w1", seconds=2.5, comment="planned", created_by="ops"
    )
    alerting = AlertEngine(runtime)

    async def scenario() -> None:
        await evaluate_until(
            alerting,
            lambda: stored_rules(runtime).get((rules.NODE_LOST, "w1")) == "firing",
            "the alert to fire silently",
        )
        assert webhook.notices(rules.NODE_LOST) == [], "a silenced alert notified"
        assert [s["id"] for s in alerts.list_silences(runtime.engine)] == [silence["id"]]
        await evaluate_until(alerting, lambda: webhook.saw(rules.NODE_LOST, "firing"), "expiry")

    asyncio.run(scenario())
    assert alerts.list_silences(runtime.engine) == []


def test_it_retries_a_failing_webhook_without_holding_up_evaluation(
    make_runtime: Callable[..., Runtime], webhook: WebhookReceiver
) -> None:
    runtime = make_runtime(alert_webhook=webhook.url, alert_webhook_format="slack")
    nodes.register_node(runtime.engine, "w1", roles="worker")
    webhook.fail_next = 2
    alerting = AlertEngine(runtime)
    alerting.notifier.options = replace(alerting.notifier.options, backoff=0.05)

    async def scenario() -> None:
        await evaluate_until(alerting, lambda: bool(webhook.bodies), "the third attempt")

    asyncio.run(scenario())
    assert webhook.refused == 2
    text = webhook.bodies[0]["text"]
    assert set(webhook.bodies[0]) == {"text"} and "[FIRING] HeraldNodeLost [w1]" in text


def test_it_alerts_on_http_errors_and_a_spool_that_keeps_growing(
    make_runtime: Callable[..., Runtime], webhook: WebhookReceiver
) -> None:
    """What only a node knows (its HTTP answers, its spool) reaches the rules through
    its heartbeat. The faults: the API token table is gone (every API call fails
    with a 5xx), and nothing drains the tracking spool (this node runs no drainer)."""
    runtime = make_runtime(alert_webhook=webhook.url, alert_window=1.0, base_url=BASE_URL)
    token, _ = auth.create_token(runtime.engine, "viewer-token", "viewer")
    nodes.register_node(runtime.engine, "api1", roles="api")
    state = NodeState()
    # Unhandled errors become the 500 answers a client would get, not test errors.
    transport = httpx.ASGITransport(app=create_app(runtime, state), raise_app_exceptions=False)
    alerting = AlertEngine(runtime)

    def beat() -> None:
        stats = node_stats(state)
        nodes.heartbeat(runtime.engine, "api1", draining=False, roles="api", stats=stats)

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            beat()
            await alerting.run()  # the baseline
            with runtime.engine.begin() as conn:
                conn.execute(text("DROP TABLE api_tokens"))
            pixel = open_url(SECRET, BASE_URL, 1, 1).removeprefix(BASE_URL)
            bearer = {"Authorization": f"Bearer {token}"}
            for _ in range(25):
                assert (await http.get("/api/v1/lists", headers=bearer)).status_code >= 500
                assert (await http.get(pixel)).status_code == 200
            deadline = time.monotonic() + 30
            while not (
                webhook.saw(rules.HTTP_ERRORS, "firing")
                and webhook.saw(rules.SPOOL_GROWING, "firing", key="api1")
            ):
                assert time.monotonic() < deadline, webhook.bodies
                await http.get(pixel)
                beat()
                await alerting.run()
                await alerting.notifier.flush(10)
                await asyncio.sleep(0.3)

    asyncio.run(scenario())
    fired = webhook.notices(rules.HTTP_ERRORS, "firing")[0]
    assert fired["details"]["errors"] >= 25 and fired["details"]["total"] >= 25


def test_it_alerts_on_complaints_and_on_a_backup_that_is_too_old(
    make_runtime: Callable[..., Runtime], webhook: WebhookReceiver, sink: Sink
) -> None:
    """A campaign of 100 gets 1 spam complaint (1 % > 0.3 %); backups are scheduled
    but the last good one is older than allowed."""
    runtime = make_runtime(
        alert_webhook=webhook.url, backup_schedule="6h", alert_backup_max_age=3600.0
    )
    engine = runtime.engine
    make_list(engine)
    add_subscribers(engine, 1, 100)
    campaign_id = make_campaign(engine)
    run_worker_until(engine, [relay(sink.url)], finished(engine, campaign_id))
    first = min(r["id"] for r in delivery_rows(engine, campaign_id))
    complaints.record_complaint(engine, SECRET, delivery_id=first)
    run_id = duties.start_run(engine, "backup", node="n1")
    duties.finish_run(engine, run_id, ok=True)
    with engine.begin() as conn:  # that backup ran two hours ago
        conn.execute(
            update(job_runs)
            .values(started_at=utcnow() - timedelta(hours=2))
            .where(job_runs.c.id == run_id)
        )
    alerting = AlertEngine(runtime)
    asyncio.run(
        evaluate_until(
            alerting,
            lambda: (
                webhook.saw(rules.COMPLAINTS, "firing")
                and webhook.saw(rules.BACKUP_STALE, "firing")
            ),
            "the complaint rate and the stale backup",
        )
    )
    assert webhook.notices(rules.COMPLAINTS)[0]["details"]["errors"] == 1
    assert "2.0 h old" in webhook.notices(rules.BACKUP_STALE)[0]["summary"]


def test_it_alerts_when_the_error_budget_burns_fast_and_slow(
    make_runtime: Callable[..., Runtime], webhook: WebhookReceiver
) -> None:
    """The built-in probes saw 2 of 10 probes of an endpoint fail in the last hour:
    200 times the budget of a 99.9 % objective, over both windows."""
    runtime = make_runtime(alert_webhook=webhook.url, slo=99.9)
    now = utcnow()
    probes.record_results(
        runtime.engine,
        [
            probes.ProbeResult("endpoint", "readyz", now - timedelta(minutes=n), ok=n >= 2)
            for n in range(10)
        ],
    )
    asyncio.run(
        evaluate_until(
            AlertEngine(runtime),
            lambda: (
                webhook.saw(rules.BURN_FAST, "firing") and webhook.saw(rules.BURN_SLOW, "firing")
            ),
            "both burn-rate alerts",
        )
    )
    fast = webhook.notices(rules.BURN_FAST)[0]
    assert fast["severity"] == "critical" and fast["details"]["burn_rate"] == 200.0
