"""Nodes register, heartbeat, and drain on SIGTERM or on request, exiting 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from herald.config import Settings
from herald.node import NodeState
from herald.runtime import Runtime
from herald.services import nodes
from herald.web.app import create_app
from tests.factories import add_subscribers, delivery_rows, make_campaign, make_list
from tests.sinks import Sink, slow

Spawn = Callable[..., subprocess.Popen[str]]


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def spawn(database_url: str, tmp_path: Path) -> Iterator[Spawn]:
    procs: list[subprocess.Popen[str]] = []

    def start(name: str, relay_url: str) -> subprocess.Popen[str]:
        env = {
            **os.environ,
            "HERALD_DATABASE_URL": database_url,
            "HERALD_RELAYS": relay_url,
            "HERALD_NODE_NAME": name,
            "HERALD_SECRET_KEY": "nodes-test",
            "HERALD_DATA_DIR": str(tmp_path / "data"),
            "HERALD_LEASE_TTL": "5",
            "HERALD_CONCURRENCY": "2",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "herald", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def _node(engine: Engine, name: str) -> dict[str, object] | None:
    return next((n for n in nodes.list_nodes(engine) if n["name"] == name), None)


def test_it_registers_and_heartbeats(engine: Engine, spawn: Spawn, sink: Sink) -> None:
    spawn("node-hb", sink.url)
    _wait(lambda: (_node(engine, "node-hb") or {}).get("alive") is True, 30, "registration")
    first = _node(engine, "node-hb")
    assert first is not None
    _wait(
        lambda: (_node(engine, "node-hb") or {})["heartbeat_at"] != first["heartbeat_at"],
        10,
        "a second heartbeat",
    )
    assert first["roles"] == "worker"


def test_it_drains_on_sigterm_releasing_what_it_holds(
    engine: Engine, spawn: Spawn, sink_factory: Callable[..., Sink]
) -> None:
    slow_sink = sink_factory(slow(0.3))
    list_id = make_list(engine)
    add_subscribers(engine, list_id, 200)
    campaign_id = make_campaign(engine)
    proc = spawn("node-term", slow_sink.url)
    _wait(lambda: slow_sink.count() >= 2, 30, "sending to start")

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, proc.stderr.read() if proc.stderr else ""

    node = _node(engine, "node-term")
    assert node is not None and node["state"] == "gone" and node["alive"] is False
    rows = delivery_rows(engine, campaign_id)
    assert not [r for r in rows if r["status"] == "sending"]  # released, not left leased
    assert sum(r["status"] == "sent" for r in rows) == slow_sink.count()


def test_it_drains_when_asked_by_name(engine: Engine, spawn: Spawn, sink: Sink) -> None:
    proc = spawn("node-drain", sink.url)
    _wait(lambda: (_node(engine, "node-drain") or {}).get("alive") is True, 30, "registration")

    nodes.request_drain(engine, "node-drain")

    assert proc.wait(timeout=20) == 0
    node = _node(engine, "node-drain")
    assert node is not None and node["state"] == "gone"


async def test_it_reports_not_ready_while_draining(database_url: str, tmp_path: Path) -> None:
    from herald.runtime import build_runtime

    runtime: Runtime = build_runtime(
        Settings(database_url=database_url, data_dir=tmp_path, secret_key="k")
    )
    state = NodeState()
    app = create_app(runtime, state)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://node"
    ) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        state.draining = True
        draining = await client.get("/readyz")
        assert draining.status_code == 503
        assert json.loads(draining.text)["status"] == "draining"
        assert (await client.get("/healthz")).status_code == 200
    runtime.close()
