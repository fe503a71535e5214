"""The ``herald`` command as a user runs it: real processes, JSON output, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from herald.store.engine import make_engine
from tests.processes import free_port


class Herald:
    """Runs ``python -m herald`` in a scratch directory against one database."""

    def __init__(self, cwd: Path, database_url: str) -> None:
        self.cwd = cwd
        self.env = {
            **os.environ,
            "HERALD_DATABASE_URL": database_url,
            "HERALD_DATA_DIR": str(cwd / "data"),
            "HERALD_CAPTURE_PORT": "0",
        }

    def run(
        self, *args: str, ok: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "herald", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if ok:
            assert proc.returncode == 0, proc.stderr
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)


@pytest.fixture
def herald(tmp_path: Path, database_url: str) -> Herald:
    return Herald(tmp_path, database_url)


def test_it_inits_idempotently(herald: Herald) -> None:
    first = herald.json("init")
    second = herald.json("init")
    assert first["revision"] == second["revision"] == second["revision_before"]


def test_it_runs_a_campaign_workflow_from_the_command_line(herald: Herald, tmp_path: Path) -> None:
    assert herald.json("lists", "create", "News")["name"] == "News"
    csv_file = tmp_path / "people.csv"
    csv_file.write_text("email,name,city\nann@example.com,Ann,Oslo\nbad-address,Bob,Rome\n")
    summary = herald.json("subscribers", "import", str(csv_file), "--list", "News")
    assert (summary["imported"], summary["errors"]) == (1, 1)
    assert Path(summary["error_report"]).exists()
    lists = herald.json("lists", "ls")
    assert lists[0]["subscribers"] == {"confirmed": 1}
    html = tmp_path / "mail.html"
    html.write_text("<p>Hi {{ subscriber.name }}</p>")
    created = herald.json(
        "campaigns",
        "create",
        "--list",
        "News",
        "--subject",
        "Hello",
        "--html",
        str(html),
        "--from",
        "News <news@example.com>",
    )
    campaign_id = str(created["id"])
    assert herald.json("campaigns", "show", campaign_id)["status"] == "draft"
    assert herald.json("campaigns", "start", campaign_id)["status"] == "running"
    assert herald.json("campaigns", "pause", campaign_id)["status"] == "paused"
    assert herald.json("campaigns", "resume", campaign_id)["status"] == "running"
    assert herald.json("campaigns", "cancel", campaign_id)["status"] == "cancelled"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["campaigns", "show", "999"], 3, "no campaign with id 999"),
        (["lists", "create", "  "], 2, "list name"),
        (
            ["campaigns", "create", "--list", "Nope", "--subject", "s", "--html", "missing.html"],
            2,
            "cannot read",
        ),
        (["--relays", "smtp://x:99999", "worker"], 2, "port must be a number"),
    ],
)
def test_it_reports_user_mistakes_without_a_traceback(
    herald: Herald, args: list[str], code: int, message: str
) -> None:
    herald.run("init")
    proc = herald.run(*args, ok=False)
    assert proc.returncode == code
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_it_refuses_a_template_that_cannot_compile(herald: Herald, tmp_path: Path) -> None:
    herald.run("init")
    herald.run("lists", "create", "News")
    html = tmp_path / "broken.html"
    html.write_text("<p>{% if %}</p>")
    proc = herald.run(
        "campaigns", "create", "--list", "News", "--subject", "s", "--html", str(html), ok=False
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert herald.json("campaigns", "ls") == []


def test_it_runs_the_demo_to_the_capture_relay(herald: Herald) -> None:
    port = str(free_port())
    proc = herald.run("demo", "--subscribers", "40", "--exit", "--port", port)
    assert "No relay configured" in proc.stdout
    assert "finished" in proc.stdout and "sent 40" in proc.stdout
    captured = list((herald.cwd / "data" / "captured").rglob("*.eml"))
    assert len(captured) == 40


def test_migrate_check_tells_whether_this_version_fits_the_database(
    herald: Herald, database_url: str
) -> None:
    herald.run("migrate")
    report = herald.json("migrate", "--check")
    assert (report["state"], report["compatible"]) == ("current", True)
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:  # as if a newer Herald had migrated it
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        assert herald.json("migrate", "--check")["state"] == "ahead"
        with engine.begin() as conn:  # as if this were an older database
            conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
        behind = herald.run("migrate", "--check", ok=False)
        assert behind.returncode == 1 and "run herald migrate" in behind.stdout
    finally:
        engine.dispose()
