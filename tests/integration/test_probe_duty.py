"""The probes duty in a real ``herald up`` process, probing itself and a real SMTP relay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from herald.domain.clock import as_utc, utcnow
from herald.store.engine import make_engine
from herald.store.tables import probe_results
from tests.processes import HeraldUp, wait_until
from tests.sinks import Sink

ENDPOINTS = {"/healthz", "/readyz", "/api/v1/openapi.json", "metrics"}


def newest(engine: Engine) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest stored result of each (kind, target)."""
    with engine.connect() as conn:
        rows = conn.execute(select(probe_results).order_by(probe_results.c.id)).mappings()
        return {(r["kind"], r["target"]): dict(r) for r in rows}


def all_up(engine: Engine, relay: str) -> Callable[[], bool]:
    def check() -> bool:
        latest = newest(engine)
        wanted = {("endpoint", name) for name in ENDPOINTS} | {("relay", relay)}
        return wanted <= set(latest) and all(latest[key]["ok"] for key in wanted)

    return check


def failed_since(engine: Engine, relay: str, since: datetime) -> Callable[[], bool]:
    def check() -> bool:
        row = newest(engine).get(("relay", relay))
        return row is not None and not row["ok"] and as_utc(row["at"]) > since

    return check


def herald_status(database_url: str, data_dir: Path, *args: str) -> str:
    env = {
        **os.environ,
        "HERALD_DATABASE_URL": database_url,
        "HERALD_DATA_DIR": str(data_dir),
        "COLUMNS": "200",  # Rich's width off a terminal: wide enough for whole names
    }
    proc = subprocess.run(
        [sys.executable, "-m", "herald", "status", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_it_probes_the_node_and_its_relay_and_reports_a_stopped_relay(
    database_url: str, tmp_path: Path, sink: Sink
) -> None:
    node = HeraldUp(database_url, tmp_path, sink.url)
    node.env |= {
        "HERALD_PROBE_INTERVAL": "0.3",
        "HERALD_PROBE_TIMEOUT": "10",
        "HERALD_PROBE_URLS": f"metrics={node.url}/metrics",
    }
    relay = "relay-1"  # the name HERALD_RELAYS gives its first relay
    engine = make_engine(database_url)
    try:
        node.start()
        wait_until(all_up(engine, relay), 60, "every target probed and up")
        stopped = utcnow()
        sink.stop()
        wait_until(failed_since(engine, relay, stopped), 60, "a failed probe of the relay")
        wait_until(lambda: newest(engine)[("endpoint", "/healthz")]["ok"], 30, "/healthz up")
        report = json.loads(herald_status(database_url, tmp_path / "cli", "--json"))
        table = herald_status(database_url, tmp_path / "cli", "--window", "24h")
    finally:
        node.stop()
        engine.dispose()

    assert report["state"] == "degraded"
    assert report["windows"] == ["24h", "7d", "30d"]
    targets = {(t["kind"], t["name"]): t for t in report["targets"]}
    assert {("endpoint", name) for name in ENDPOINTS} | {("relay", relay)} <= set(targets)
    down = targets[("relay", relay)]
    assert down["up"] is False
    day = down["windows"]["24h"]
    assert 0 < day["uptime_pct"] < 100
    assert day["failures"] >= 1
    assert day["budget_left_pct"] < 100
    assert day["p50_ms"] is not None
    assert down["last_error"]["error"]  # the operator's view carries the error text
    assert targets[("endpoint", "/healthz")]["up"] is True
    assert report["endpoints"]["24h"]["probes"] >= 4
    assert [n["name"] for n in report["nodes"]] == ["tracker"]
    assert report["node_counts"] == {"live": 1, "draining": 0}
    assert relay in {r["name"] for r in report["relays"]}
    assert "Relays (probes)" in table
    assert relay in table
    assert "7d" not in table
