"""Nodes register, heartbeat, and drain on SIGTERM or on request, exiting 0."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import Engine, make_url, text

from herald.config import Settings
from herald.node import NodeState
from herald.runtime import Runtime
from herald.services import nodes
from herald.store.engine import application_name
from herald.web.app import create_app
from tests.factories import add_subscribers, delivery_rows, make_campaign, make_list
from tests.processes import Nodes, wait_until
from tests.sinks import Sink, slow


def spawn(nodes: Nodes, name: str, relay_url: str) -> subprocess.Popen[str]:
    return nodes.start(name, relay_url, lease_ttl="5", concurrency="2")


def _node(engine: Engine, name: str) -> dict[str, object] | None:
    return next((n for n in nodes.list_nodes(engine) if n["name"] == name), None)


def test_it_registers_and_heartbeats(engine: Engine, herald_nodes: Nodes, sink: Sink) -> None:
    spawn(herald_nodes, "node-hb", sink.url)
    wait_until(lambda: (_node(engine, "node-hb") or {}).get("alive") is True, 30, "registration")
    first = _node(engine, "node-hb")
    assert first is not None
    wait_until(
        lambda: (_node(engine, "node-hb") or {})["heartbeat_at"] != first["heartbeat_at"],
        10,
        "a second heartbeat",
    )
    assert first["roles"] == "worker"


def test_it_drains_on_sigterm_releasing_what_it_holds(
    engine: Engine, herald_nodes: Nodes, sink_factory: Callable[..., Sink]
) -> None:
    slow_sink = sink_factory(slow(0.3))
    list_id = make_list(engine)
    add_subscribers(engine, list_id, 200)
    campaign_id = make_campaign(engine)
    proc = spawn(herald_nodes, "node-term", slow_sink.url)
    wait_until(lambda: slow_sink.count() >= 2, 30, "sending to start")

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, herald_nodes.log("node-term")

    node = _node(engine, "node-term")
    assert node is not None and node["state"] == "gone" and node["alive"] is False
    rows = delivery_rows(engine, campaign_id)
    assert not [r for r in rows if r["status"] == "sending"]  # released, not left leased
    assert sum(r["status"] == "sent" for r in rows) == slow_sink.count()


def test_it_drains_when_asked_by_name(engine: Engine, herald_nodes: Nodes, sink: Sink) -> None:
    proc = spawn(herald_nodes, "node-drain", sink.url)
    wait_until(lambda: (_node(engine, "node-drain") or {}).get("alive") is True, 30, "registration")

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


def test_it_sends_through_the_stored_relays_without_herald_relays(
    engine: Engine, herald_nodes: Nodes, sink: Sink
) -> None:
    from herald.services import relays

    relays.add_relay(engine, "test-secret", "stored", sink.url)
    list_id = make_list(engine)
    add_subscribers(engine, list_id, 20)
    campaign_id = make_campaign(engine)

    herald_nodes.start("node-stored", "")

    wait_until(lambda: sink.count() == 20, 60, "the campaign through the stored relay")
    assert {r["status"] for r in delivery_rows(engine, campaign_id)} <= {"sent", "sending"}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_silent_node_is_fenced_so_its_row_locks_are_released(
    engine: Engine, database_url: str
) -> None:
    add_subscribers(engine, make_list(engine), 1)
    nodes.register_node(engine, "ghost", roles="worker")
    nodes.register_node(engine, "me", roles="worker")
    # The ghost's session holds a row lock, as a node frozen mid-statement would.
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    ghost = psycopg.connect(dsn, application_name=application_name("ghost"))
    ghost.execute("SELECT id FROM subscribers FOR UPDATE")
    assert nodes.fence_stale(engine, me="me", stale_after=60) == []  # not silent yet
    assert nodes.fence_stale(engine, me="me", stale_after=-1) == ["ghost"]
    with pytest.raises(psycopg.OperationalError):
        ghost.execute("SELECT 1")
    ghost.close()
    with engine.begin() as conn:  # the lock is gone: this does not wait
        conn.execute(text("SET LOCAL lock_timeout = '2s'"))
        conn.execute(text("SELECT id FROM subscribers FOR UPDATE NOWAIT"))
