"""Monitoring end to end: ``/metrics`` moves when a real worker sends, ``herald check``
answers like a Nagios plugin, and the shipped Prometheus rules and Grafana
dashboard use only metrics Herald exports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy import Engine, update

from herald import __version__
from herald.config import Settings
from herald.delivery.worker import Worker
from herald.domain.breaker import BreakerPolicy
from herald.domain.clock import utcnow
from herald.node import NodeState
from herald.runtime import Runtime, build_runtime
from herald.services import duties, nodes, outbox, relays
from herald.store import relays as relay_rows
from herald.store.engine import make_engine
from herald.store.tables import nodes as nodes_table
from herald.web.app import create_app
from herald.web.metrics import HttpMetricsMiddleware
from tests.ci import unavailable
from tests.factories import (
    SECRET,
    add_subscribers,
    drive,
    finished,
    make_campaign,
    make_list,
    options,
    relay,
)
from tests.processes import free_port
from tests.sinks import Sink, fail_rcpt

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "herald-rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "herald-rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "herald.json"
METRIC_NAME = re.compile(r"\bherald_[a-z0-9_]+")


@dataclass
class Node:
    """An HTTP app as a node serves it, with the state its worker shares."""

    state: NodeState
    http: httpx.AsyncClient

    async def scrape(self) -> dict[str, list[Sample]]:
        """``/metrics`` parsed with prometheus-client's own parser: samples by name."""
        answer = await self.http.get("/metrics")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain")
        samples: dict[str, list[Sample]] = {}
        for family in text_string_to_metric_families(answer.text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append(sample)
        return samples


def value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float | None:
    """The value of the one sample of ``name`` whose labels include ``labels``."""
    found = [
        s.value
        for s in samples.get(name, [])
        if all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
    return found[0] if found else None


def build_node(runtime: Runtime) -> Node:
    state = NodeState()
    transport = httpx.ASGITransport(app=create_app(runtime, state))
    return Node(state, httpx.AsyncClient(transport=transport, base_url="http://herald.test"))


@pytest.fixture
async def node(database_url: str, tmp_path: Path) -> AsyncIterator[Node]:
    runtime = build_runtime(
        Settings(database_url=database_url, data_dir=tmp_path / "data", secret_key=SECRET)
    )
    served = build_node(runtime)
    async with served.http:
        yield served
    runtime.close()


async def run_worker(
    engine: Engine, sink: Sink, state: NodeState, done: Callable[[], bool], timeout: float = 60
) -> Worker:
    """Run a worker that counts into the node's metrics until ``done()`` holds."""
    opts = options(breaker=BreakerPolicy(threshold=100, cooldown=0.2, failed_cooldown=1.0))
    worker = Worker(engine, [relay(sink.url)], opts, metrics=state.send_metrics)
    await drive(worker, done, timeout=timeout)
    return worker


def start_campaign(engine: Engine, recipients: int) -> int:
    """A running campaign to user1..userN@example.com, its deliveries materialised."""
    add_subscribers(engine, make_list(engine), recipients)
    campaign_id = make_campaign(engine)
    outbox.housekeeping(engine, max_attempts=4)
    return campaign_id


async def test_it_counts_what_a_real_worker_sent_bounced_and_retried(
    engine: Engine, node: Node, sink_factory: Callable[..., Sink]
) -> None:
    # user3 is refused for good; everyone else gets a 451 first, then 250.
    sink = sink_factory(fail_rcpt({"user3@example.com": 550}), temp_failures=1)
    relays.seed_from_env(engine, SECRET, [relay(sink.url)])  # stored: the pool reports into it
    add_subscribers(engine, make_list(engine), 5)
    campaign_id = make_campaign(engine)

    worker = await run_worker(engine, sink, node.state, finished(engine, campaign_id))
    samples = await node.scrape()

    assert sink.count() == 4
    deliveries = {
        outcome: value(samples, "herald_deliveries_total", outcome=outcome, relay="sink")
        for outcome in ("sent", "bounced", "retried", "failed")
    }
    assert deliveries == {"sent": 4, "bounced": 1, "retried": 4, "failed": None}
    assert (worker.stats.sent, worker.stats.bounced, worker.stats.retried) == (4, 1, 4)
    assert value(samples, "herald_send_duration_seconds_count", relay="sink") == 9
    assert value(samples, "herald_send_duration_seconds_bucket", relay="sink", le="+Inf") == 9
    assert value(samples, "herald_ambiguous_sends_total", relay="sink") is None
    assert value(samples, "herald_lease_skips_total") == 0
    assert value(samples, "herald_relay_state", relay="sink") == 0
    assert value(samples, "herald_database_up") == 1
    assert value(samples, "herald_campaigns", status="finished") == 1
    assert value(samples, "herald_campaigns", status="running") == 0
    stored = {
        result: value(samples, "herald_relay_messages_total", relay="sink", result=result)
        for result in ("sent", "deferred", "failed")
    }
    assert stored == {"sent": 4, "deferred": 4, "failed": 1}
    assert value(samples, "herald_relay_stored_state", relay="sink") == 0


async def test_it_labels_http_requests_by_route_template_never_by_token(
    node: Node, database_url: str, tmp_path: Path
) -> None:
    forged = "AAAAAAAAAAEAAAAAAAAAAQWuvLy6MZShao3Gjw"

    assert (await node.http.get(f"/u/{forged}")).status_code == 404
    assert (await node.http.post(f"/u/{forged}", content="x")).status_code == 404
    assert (await node.http.get("/healthz")).status_code == 200
    assert (await node.http.get(f"/no/such/{forged}")).status_code == 404
    samples = await node.scrape()
    text = (await node.http.get("/metrics")).text

    requests = "herald_http_requests_total"
    assert value(samples, requests, method="GET", route="/u/{token}", status="404") == 1
    assert value(samples, requests, method="POST", route="/u/{token}", status="404") == 1
    assert value(samples, requests, method="GET", route="/healthz", status="200") == 1
    assert value(samples, requests, method="GET", route="unmatched", status="404") == 1
    seconds = "herald_http_request_duration_seconds_count"
    assert value(samples, seconds, method="GET", route="/u/{token}") == 1
    assert forged not in text

    # Another app in the same process has a registry of its own.
    other = build_node(
        build_runtime(Settings(database_url=database_url, data_dir=tmp_path, secret_key=SECRET))
    )
    async with other.http:
        assert value(await other.scrape(), requests, route="/u/{token}", method="GET") is None


async def test_it_reads_outbox_and_nodes_from_the_database_when_scraped(
    engine: Engine, node: Node
) -> None:
    campaign_id = start_campaign(engine, 3)
    nodes.register_node(engine, "w1", roles="worker")
    nodes.register_node(engine, "old", roles="worker")
    nodes.leave(engine, "old")
    nodes.register_node(engine, "ancient", roles="worker")
    with engine.begin() as conn:  # silent for two days: long replaced
        conn.execute(
            update(nodes_table)
            .where(nodes_table.c.name == "ancient")
            .values(heartbeat_at=utcnow() - timedelta(days=2))
        )
    node.state.draining = True

    samples = await node.scrape()

    campaign = str(campaign_id)
    assert value(samples, "herald_outbox_depth", campaign=campaign, status="pending") == 3
    assert value(samples, "herald_outbox_depth", campaign=campaign, status="sending") == 0
    age = value(samples, "herald_outbox_oldest_pending_age_seconds", campaign=campaign)
    assert age is not None and age >= 0
    assert value(samples, "herald_campaigns", status="running") == 1
    assert value(samples, "herald_nodes_alive", role="worker") == 1
    assert value(samples, "herald_nodes_alive", role="api") == 0
    beats = {s.labels["node"] for s in samples["herald_node_heartbeat_age_seconds"]}
    assert beats == {"w1"}  # nodes that left, or fell silent long ago, are not reported
    assert value(samples, "herald_node_draining") == 1
    roundtrip = value(samples, "herald_database_roundtrip_seconds")
    assert roundtrip is not None and roundtrip > 0
    assert value(samples, "herald_build_info", version=__version__) == 1


async def test_it_counts_a_request_whose_handler_raised_as_a_500() -> None:
    registry = CollectorRegistry()
    requests = Counter("t_requests", "", ["method", "route", "status"], registry=registry)
    seconds = Histogram("t_seconds", "", ["method", "route"], registry=registry)
    app = FastAPI()

    @app.get("/boom/{item}")
    async def boom(item: str) -> None:
        raise RuntimeError(item)

    app.add_middleware(HttpMetricsMiddleware, requests=requests, seconds=seconds)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        assert (await http.get("/boom/1")).status_code == 500

    labels = {"method": "GET", "route": "/boom/{item}", "status": "500"}
    assert registry.get_sample_value("t_requests_total", labels) == 1


async def test_it_labels_a_mounted_apps_routes_with_the_mount_prefix() -> None:
    registry = CollectorRegistry()
    requests = Counter("t_requests", "", ["method", "route", "status"], registry=registry)
    seconds = Histogram("t_seconds", "", ["method", "route"], registry=registry)
    outer, inner = FastAPI(), FastAPI()

    @inner.get("/lists/{list_id}")
    async def show(list_id: int) -> dict[str, int]:
        return {"id": list_id}

    outer.mount("/api/v1", inner)
    outer.add_middleware(HttpMetricsMiddleware, requests=requests, seconds=seconds)
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        assert (await http.get("/api/v1/lists/5")).status_code == 200
        assert (await http.get("/api/v1/nothing/5")).status_code == 404

    routes = {sample.labels["route"] for family in registry.collect() for sample in family.samples}
    assert routes == {"/api/v1/lists/{list_id}", "unmatched"}


async def test_it_exports_database_down_rather_than_failing_the_scrape(tmp_path: Path) -> None:
    dead = make_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/herald")
    runtime = Runtime(Settings(data_dir=tmp_path), dead, SECRET, "n1")
    served = build_node(runtime)
    async with served.http:
        samples = await served.scrape()
    dead.dispose()

    assert value(samples, "herald_database_up") == 0
    assert "herald_outbox_depth" not in samples
    assert value(samples, "herald_node_draining") == 0


class Check:
    """Runs ``herald check`` as a monitoring system would: a process, its line, its status."""

    def __init__(self, cwd: Path, database_url: str) -> None:
        self.cwd = cwd
        self.env = {
            **os.environ,
            "HERALD_DATABASE_URL": database_url,
            "HERALD_DATA_DIR": str(cwd / "data"),
        }

    def __call__(self, *args: str) -> tuple[int, str]:
        proc = subprocess.run(
            [sys.executable, "-m", "herald", "check", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        lines = proc.stdout.splitlines()
        assert len(lines) == 1, (proc.stdout, proc.stderr)
        return proc.returncode, lines[0]


@pytest.fixture
def check(database_url: str, tmp_path: Path) -> Check:
    return Check(tmp_path, database_url)


def test_check_is_ok_on_a_healthy_database(check: Check, engine: Engine, sink: Sink) -> None:
    relays.seed_from_env(engine, SECRET, [relay(sink.url)])

    code, line = check("--warn-pending", "10", "--crit-pending", "100")

    assert (code, line.split(" - ")[0]) == (0, "HERALD OK"), line
    assert "1/1 relays up" in line
    assert " | pending=0;10;100;0 " in line


def test_check_is_critical_when_a_campaign_runs_with_no_live_worker(
    check: Check, engine: Engine
) -> None:
    start_campaign(engine, 3)
    nodes.register_node(engine, "w1", roles="worker")
    with engine.begin() as conn:  # w1 was killed a minute ago: no heartbeat since
        conn.execute(update(nodes_table).values(heartbeat_at=utcnow() - timedelta(minutes=1)))

    code, line = check("--warn-pending", "0", "--crit-pending", "1", "--warn-age", "0")

    assert code == 2, line
    assert line.startswith("HERALD CRITICAL - no live worker while 1 campaign runs; ")
    assert "3 messages waiting in the outbox" in line
    assert "live_workers=0;;;0" in line


def test_check_warns_when_a_relay_is_down(check: Check, engine: Engine) -> None:
    for name, port in (("a", 2501), ("b", 2502)):
        relays.add_relay(engine, SECRET, name, f"smtp://127.0.0.1:{port}")
    with engine.begin() as conn:
        relay_rows.record_activity(
            conn,
            "b",
            sent=0,
            deferred=5,
            failed=0,
            latency_ms=None,
            state="open",
            last_error="refused",
            now=utcnow(),
        )

    code, line = check()

    assert code == 1, line
    assert line.startswith("HERALD WARNING - relay b open; ")
    assert "relays_up=1;;;0;2" in line


@pytest.mark.parametrize(
    "args",
    [("--warn-pending", "many"), ("--crit-age", "-1"), ("--bogus",), ("--warn-age",)],
)
def test_check_is_unknown_for_bad_arguments(tmp_path: Path, args: tuple[str, ...]) -> None:
    code, line = Check(tmp_path, f"sqlite:///{tmp_path / 'none.db'}")(*args)

    assert code == 3
    assert line.startswith("HERALD UNKNOWN - ")


def test_check_is_unknown_when_warning_is_above_critical(tmp_path: Path) -> None:
    code, line = Check(tmp_path, f"sqlite:///{tmp_path / 'none.db'}")(
        "--warn-age", "60", "--crit-age", "30"
    )

    assert (code, line) == (3, "HERALD UNKNOWN - --warn-age 60 is above --crit-age")


def test_check_is_critical_when_the_database_is_down(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    code, line = Check(tmp_path, f"postgresql://postgres@127.0.0.1:{free_port()}/herald")()
    assert code == 2
    assert line.startswith("HERALD CRITICAL - database unreachable")

    code, line = Check(tmp_path, f"sqlite:///{missing}")()
    assert code == 2
    assert line.startswith("HERALD CRITICAL - no database at ")
    assert not missing.exists()  # a check creates nothing


@pytest.fixture
def not_ready_url() -> Iterator[str]:
    """A URL on 127.0.0.1 answering like a draining node's /readyz."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"status": "draining"}).encode()
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/readyz"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_check_is_critical_when_the_url_is_not_ready(check: Check, not_ready_url: str) -> None:
    code, line = check("--url", not_ready_url)

    assert code == 2, line
    assert f"{not_ready_url} answered 503 (draining)" in line
    assert "http_time=" in line


def exported_names(samples_text: str) -> set[str]:
    """Every series name an exposition can produce, with its type's suffixes."""
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    for family in text_string_to_metric_families(samples_text):
        names.add(family.name)
        names.update(family.name + s for s in suffixes.get(family.type, ()))
        names.update(s.name for s in family.samples)
    return names


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def rule_texts() -> list[str]:
    """The rules file's lines, comments left out."""
    return [line for line in RULES.read_text().splitlines() if not line.lstrip().startswith("#")]


async def test_every_dashboard_and_rule_expression_uses_exported_metrics(
    node: Node, engine: Engine
) -> None:
    # The backup gauge exists once a scheduled backup has succeeded.
    duties.finish_run(engine, duties.start_run(engine, "backup", node="n1"), ok=True)
    text = (await node.http.get("/metrics")).text
    exported = exported_names(text)
    rules = rule_texts()
    alerts = [line.split(": ", 1)[1] for line in rules if line.lstrip().startswith("- alert:")]
    assert len(alerts) == len(set(alerts)) >= 8

    used = {name for text in dashboard_exprs() + rules for name in METRIC_NAME.findall(text)}

    assert used, "no herald_ metric found in the dashboard or the rules"
    assert used - exported == set()


def promtool() -> str | None:
    found = shutil.which("promtool")
    if found is None:
        unavailable(
            "promtool not installed (Debian package prometheus)",
            in_ci="promtool is required in CI (Debian package prometheus)",
        )
    return found


def test_promtool_accepts_the_rules_and_their_unit_tests() -> None:
    tool = promtool()
    assert tool is not None
    checked = subprocess.run(
        [tool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [tool, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_promtool_parses_every_dashboard_expression(tmp_path: Path) -> None:
    tool = promtool()
    assert tool is not None
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"herald:dashboard_{i}", "expr": expr}
                    for i, expr in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    checked = subprocess.run(
        [tool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
