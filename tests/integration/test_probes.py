"""Probe history on both backends: compaction, SLO figures, burn rate, /status and /metrics."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, Table, func, select

from herald.domain.slo import ENDPOINT, RELAY, ProbeTarget
from herald.ops.probes import Prober
from herald.services import duties, probes
from herald.services.probes import ProbeResult
from herald.services.relays import add_relay
from herald.services.status import status_report
from herald.store.tables import probe_hours, probe_results
from tests.factories import SECRET
from tests.sinks import Sink, refuse
from tests.webapp import web_app

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def history(*, start: datetime, hours: int, target: str, kind: str = ENDPOINT) -> list[ProbeResult]:
    """60 probes an hour; every 100th fails; latencies cycle through 5..600 ms."""
    results = []
    for i in range(hours * 60):
        at = start + timedelta(minutes=i)
        ok = i % 100 != 7
        results.append(ProbeResult(kind, target, at, ok, latency_ms=5.0 + (i * 37) % 596))
    return results


def count(engine: Engine, table: Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def report(engine: Engine) -> dict[str, Any]:
    return status_report(engine, windows=["24h", "7d", "30d"], slo=99.9, now=NOW)


def figures(engine: Engine) -> dict[str, Any]:
    """Every figure of the report: all endpoints, and each target, per window."""
    data = report(engine)
    return {
        "endpoints": data["endpoints"],
        **{f"{t['kind']} {t['name']}": t["windows"] for t in data["targets"]},
    }


def test_it_rolls_old_results_into_hourly_rows_without_changing_any_figure(
    engine: Engine,
) -> None:
    old = history(start=NOW - timedelta(hours=60), hours=10, target="/healthz")
    old += history(start=NOW - timedelta(hours=55), hours=3, target="relay-a", kind=RELAY)
    recent = history(start=NOW - timedelta(hours=5), hours=5, target="/healthz")
    probes.record_results(engine, old + recent)
    before = figures(engine)
    burn_before = probes.burn_rate(engine, window=timedelta(days=7), slo=99.9, now=NOW)

    summary = probes.compact_history(engine, now=NOW)

    assert "780 results rolled into 13 hourly rows" in summary
    assert count(engine, probe_results) == len(recent)
    assert count(engine, probe_hours) == 13
    assert figures(engine) == before
    assert probes.burn_rate(engine, window=timedelta(days=7), slo=99.9, now=NOW) == burn_before
    week = before["endpoint /healthz"]["7d"]
    assert (week["probes"], week["failures"]) == (900, 9)
    assert week["uptime_pct"] == pytest.approx(99.0)
    assert week["burn_rate"] == pytest.approx(10.0)
    assert "0 results rolled" in probes.compact_history(engine, now=NOW)
    assert figures(engine) == before


def test_it_adds_late_results_to_an_existing_hour_and_drops_hours_after_35_days(
    engine: Engine,
) -> None:
    hour = NOW - timedelta(hours=50)
    probes.record_results(engine, history(start=hour, hours=1, target="/readyz"))
    probes.compact_history(engine, now=NOW)
    late = ProbeResult(ENDPOINT, "/readyz", hour + timedelta(minutes=30), False, latency_ms=9.0)
    probes.record_results(engine, [late])
    probes.compact_history(engine, now=NOW)
    week = report(engine)["endpoints"]["7d"]
    assert (week["probes"], week["failures"]) == (61, 2)

    probes.compact_history(engine, now=NOW + timedelta(days=36))
    assert count(engine, probe_hours) == 0


def test_it_burns_the_budget_of_endpoint_probes_only(engine: Engine) -> None:
    start = NOW - timedelta(minutes=50)
    endpoint = [
        ProbeResult(ENDPOINT, "/healthz", start + timedelta(seconds=3 * i), i % 500 != 0)
        for i in range(1000)
    ]
    relay = [ProbeResult(RELAY, "r", start, False) for _ in range(50)]
    probes.record_results(engine, endpoint + relay)

    burn = probes.burn_rate(engine, window=timedelta(hours=1), slo=99.9, now=NOW)

    assert burn == pytest.approx(2.0)  # 2 failures in 1000 probes, budget 1 in 1000
    assert probes.burn_rate(engine, window=timedelta(hours=1), slo=99.0, now=NOW) == (
        pytest.approx(0.2)
    )
    later = NOW + timedelta(hours=3)
    assert probes.burn_rate(engine, window=timedelta(hours=1), slo=99.9, now=later) is None


async def test_it_shows_a_status_page_with_relay_names_but_no_hosts_or_errors(
    database_url: str, tmp_path: Path
) -> None:
    async with web_app(database_url, tmp_path) as web:
        engine = web.runtime.engine
        add_relay(engine, SECRET, "primary", "smtp://alice:s3cret@relay-hidden.example:2525")
        now = datetime.now(UTC)
        probes.record_results(
            engine,
            [
                ProbeResult(ENDPOINT, "/healthz", now, True, latency_ms=3.0, http_status=200),
                ProbeResult(
                    RELAY,
                    "primary",
                    now,
                    False,
                    error="connect: [Errno 111] relay-hidden.example:2525 refused",
                ),
            ],
        )
        page = await web.http.get("/status")
        data = await web.http.get("/status.json")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<script" not in page.text
    assert "primary" in page.text
    assert "degraded" in page.text
    for secret in ("relay-hidden", "alice", "s3cret", "Errno"):
        assert secret not in page.text
        assert secret not in data.text
    body = data.json()
    assert body["state"] == "degraded"
    relay = next(t for t in body["targets"] if t["kind"] == RELAY)
    assert relay["up"] is False
    assert relay["windows"]["24h"]["uptime_pct"] == 0
    assert set(relay["last_error"]) == {"at", "http_status"}
    assert body["nodes"] == []


async def test_it_turns_the_status_page_off(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HERALD_STATUS_PAGE", "off")
    async with web_app(database_url, tmp_path) as web:
        assert (await web.http.get("/status")).status_code == 404
        assert (await web.http.get("/status.json")).status_code == 404


async def test_it_exports_probe_results_and_the_last_backup_as_metrics(
    database_url: str, tmp_path: Path
) -> None:
    async with web_app(database_url, tmp_path) as web:
        engine = web.runtime.engine
        at = datetime.now(UTC)
        probes.record_results(
            engine,
            [
                ProbeResult(ENDPOINT, "/readyz", at - timedelta(seconds=30), False),
                ProbeResult(ENDPOINT, "/readyz", at, True, latency_ms=250.0, http_status=200),
                ProbeResult(RELAY, "primary", at, False, error="refused"),
            ],
        )
        before = samples((await web.http.get("/metrics")).text)
        run = duties.start_run(engine, "backup", node="n1")
        duties.finish_run(engine, run, ok=True, detail="done")
        failed = duties.start_run(engine, "backup", node="n1")
        duties.finish_run(engine, failed, ok=False, detail="disk full")
        after = samples((await web.http.get("/metrics")).text)
        finished = duties.last_run(engine, "backup", ok=True)

    assert before[("herald_probe_up", ("endpoint", "/readyz"))] == 1
    assert before[("herald_probe_up", ("relay", "primary"))] == 0
    assert before[("herald_probe_latency_seconds", ("endpoint", "/readyz"))] == 0.25
    assert ("herald_probe_latency_seconds", ("relay", "primary")) not in before
    assert ("herald_backup_last_success_timestamp_seconds", ()) not in before
    assert finished is not None and finished.finished_at is not None
    assert after[("herald_backup_last_success_timestamp_seconds", ())] == pytest.approx(
        finished.finished_at.timestamp()
    )


def samples(text: str) -> dict[tuple[str, tuple[str, ...]], float]:
    """Probe and backup samples by (name, (kind, target)) — or (name, ()) without labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith(("herald_probe_", "herald_backup_")):
                labels = (s.labels["kind"], s.labels["target"]) if s.labels else ()
                found[(s.name, labels)] = s.value
    return found


async def test_it_times_out_a_silent_endpoint_and_still_probes_every_relay(
    engine: Engine, sink_factory: Callable[..., Sink]
) -> None:
    add_relay(engine, SECRET, "good", sink_factory().url)
    add_relay(engine, SECRET, "gone", sink_factory(refuse()).url)
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        prober = Prober(engine, SECRET, targets=[ProbeTarget("silent", url)], timeout=0.5)
        summary = await prober.run()

    assert summary.startswith("1/3 probes ok (down: endpoint silent, relay gone)")
    assert "probe history" in summary  # the first run also compacts
    latest = {(r["kind"], r["target"]): r for r in probes.metric_readings(engine).latest}
    assert latest[(ENDPOINT, "silent")]["ok"] is False
    assert latest[(RELAY, "good")]["ok"] is True
    assert latest[(RELAY, "good")]["latency_ms"] is not None
    assert latest[(RELAY, "gone")]["ok"] is False
    errors = {r["target"]: r["error"] for r in failures(engine)}
    assert errors["silent"] == "no answer within 0.5 s"
    assert errors["gone"]


def failures(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(probe_results).where(probe_results.c.ok.is_(False)))
        return [dict(r) for r in rows.mappings()]


def test_it_counts_each_probe_once_when_two_nodes_compact_at_the_same_time(
    engine: Engine,
) -> None:
    probes.record_results(
        engine, history(start=NOW - timedelta(hours=70), hours=12, target="/healthz")
    )
    before = figures(engine)
    start = threading.Barrier(2)
    summaries: list[str] = []

    def compact() -> None:
        start.wait(timeout=30)
        summaries.append(probes.compact_history(engine, now=NOW))

    workers = [threading.Thread(target=compact) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)

    assert len(summaries) == 2
    assert any("720 results rolled into 12 hourly rows" in s for s in summaries)
    assert count(engine, probe_results) == 0
    with engine.connect() as conn:
        assert conn.execute(select(func.sum(probe_hours.c.probes))).scalar_one() == 720
    assert figures(engine) == before
