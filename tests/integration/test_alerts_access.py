"""Alerts and silences through the REST API (roles) and the ``herald alerts`` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from herald.config import Settings
from herald.domain import alerting as rules
from herald.domain.alerting import Thresholds
from herald.ops.alerts import AlertEngine
from herald.runtime import build_runtime
from herald.services import alerts, nodes
from tests.apiclient import Api, assert_problem
from tests.factories import SECRET


async def test_it_lists_alerts_to_viewers_and_lets_editors_silence_them(api: Api) -> None:
    engine = api.runtime.engine
    nodes.register_node(engine, "w1", roles="worker")
    nodes.heartbeat(engine, "w1", draining=False, roles="worker")
    alerting = AlertEngine(api.runtime)
    alerting.limits = Thresholds(node_lost_after=0.0)
    await alerting.run()
    listed = (await api.get("/alerts")).json()
    assert [(a["rule"], a["key"], a["status"]) for a in listed["alerts"]] == [
        (rules.NODE_LOST, "w1", "firing")
    ]
    body = {"rule": "NodeLost", "key": "w1", "seconds": 3600, "comment": "rebuilding w1"}
    refused = await api.send("POST", "/alerts/silences", body, role="viewer")
    assert_problem(refused, 403, "editor")
    unknown = await api.send("POST", "/alerts/silences", {**body, "rule": "nope"})
    assert_problem(unknown, 400, "no alert rule named")
    made = await api.send("POST", "/alerts/silences", body)
    assert made.status_code == 201, made.text
    silence = made.json()
    assert silence["rule"] == rules.NODE_LOST and silence["created_by"] == "editor-token"
    assert [s["id"] for s in (await api.get("/alerts")).json()["silences"]] == [silence["id"]]
    ended = await api.send("DELETE", f"/alerts/silences/{silence['id']}")
    assert ended.status_code == 204
    assert_problem(await api.send("DELETE", f"/alerts/silences/{silence['id']}"), 404, "silence")


# The commands are thin (the API test covers the services on both backends);
# each start of the CLI costs seconds, so one backend and three calls.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_it_silences_and_lists_from_the_command_line(tmp_path: Path, database_url: str) -> None:
    runtime = build_runtime(
        Settings(database_url=database_url, data_dir=tmp_path, secret_key=SECRET)
    )
    try:
        env = {**os.environ, "HERALD_DATABASE_URL": database_url, "HERALD_DATA_DIR": str(tmp_path)}

        def herald(*args: str, code: int = 0) -> str:
            proc = subprocess.run(
                [sys.executable, "-m", "herald", "alerts", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert proc.returncode == code, proc.stderr
            return proc.stdout + proc.stderr

        made = json.loads(
            herald("silence", "relaycircuitopen", "--key", "r1", "--for", "2h", "--comment", "swap",
                   "--by", "ops", "--json")
        )  # fmt: skip
        assert made["rule"] == rules.RELAY_DOWN and made["key"] == "r1"
        listed = herald("ls")
        assert "HeraldRelayCircuitOpen" in listed and "swap" in listed
        alerts.remove_silence(runtime.engine, made["id"])
        assert "no silence" in herald("unsilence", str(made["id"]), code=3)
    finally:
        runtime.close()
