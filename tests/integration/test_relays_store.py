"""Relays stored in the database: services on both backends, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from herald.domain.relays import parse_relay_list
from herald.errors import ConfigError, Conflict, InvalidInput, NotFound
from herald.services import relays as svc
from herald.store.tables import relays as relays_table
from tests.sinks import Sink, needs_auth, refuse

SECRET = "test-secret-key-for-relays"
PASSWORD = "s3cret-Pa55"


def _raw_rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(relays_table)).mappings()]


def test_it_adds_lists_changes_and_removes_a_relay(engine: Engine) -> None:
    added = svc.add_relay(
        engine, SECRET, "primary", "smtp://mx.example.com:2525?tls=starttls", weight=3
    )
    assert (added["host"], added["port"], added["tls"], added["weight"]) == (
        "mx.example.com",
        2525,
        "starttls",
        3,
    )
    changed = svc.set_relay(
        engine, SECRET, "primary", max_connections=2, max_rate=12.5, enabled=False
    )
    assert (changed["max_connections"], changed["max_rate"], changed["enabled"]) == (2, 12.5, False)
    [listed] = svc.list_relays(engine)
    assert listed["name"] == "primary"
    assert (listed["state"], listed["sent"], listed["deferred"], listed["failed"]) == (
        "disabled",
        0,
        0,
        0,
    )
    assert svc.set_relay(engine, SECRET, "primary", max_rate=None)["max_rate"] is None
    svc.remove_relay(engine, "primary")
    assert svc.list_relays(engine) == []


def test_it_refuses_a_second_relay_of_the_same_name(engine: Engine) -> None:
    svc.add_relay(engine, SECRET, "primary", "smtp://a.example.com")
    with pytest.raises(Conflict, match="'primary' already exists"):
        svc.add_relay(engine, SECRET, "primary", "smtp://b.example.com")
    assert [r["host"] for r in svc.list_relays(engine)] == ["a.example.com"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://mx.example.com", "scheme must be smtp"),
        ("smtp://mx.example.com:99999", "port must be a number"),
        ("smtp://u:hunter2@mx.example.com?tls=maybe", "tls must be none"),
    ],
)
def test_it_refuses_a_bad_url_without_echoing_the_password(
    engine: Engine, url: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        svc.add_relay(engine, SECRET, "primary", url)
    assert "hunter2" not in str(caught.value)
    assert svc.list_relays(engine) == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"weight": 0}, "weight must be a whole number from 1"),
        ({"max_connections": 2.5}, "max connections must be a whole number"),
        ({"max_rate": 0}, "max rate must be above 0"),
        ({"max_rate": float("inf")}, "max rate must be above 0"),
        ({"enabled": "yes"}, "enabled must be true or false"),
        ({"colour": "red"}, "cannot set colour"),
    ],
)
def test_it_refuses_bad_settings_with_a_clear_message(
    engine: Engine, changes: dict[str, Any], message: str
) -> None:
    svc.add_relay(engine, SECRET, "primary", "smtp://mx.example.com")
    with pytest.raises(InvalidInput, match=message):
        svc.set_relay(engine, SECRET, "primary", **changes)


def test_it_refuses_a_bad_name_or_limit_when_adding(engine: Engine) -> None:
    with pytest.raises(InvalidInput, match="invalid relay name"):
        svc.add_relay(engine, SECRET, "two words", "smtp://mx.example.com")
    with pytest.raises(InvalidInput, match="weight"):
        svc.add_relay(engine, SECRET, "primary", "smtp://mx.example.com", weight=-1)
    assert svc.list_relays(engine) == []


def test_it_says_not_found_for_an_unknown_relay(engine: Engine) -> None:
    with pytest.raises(NotFound, match="'ghost'"):
        svc.set_relay(engine, SECRET, "ghost", weight=2)
    with pytest.raises(NotFound, match="'ghost'"):
        svc.remove_relay(engine, "ghost")


def test_it_stores_the_password_sealed_and_unseals_it_for_the_sender(engine: Engine) -> None:
    svc.add_relay(engine, SECRET, "primary", f"smtp://ann:{PASSWORD}@mx.example.com")
    [raw] = _raw_rows(engine)
    assert raw["password_sealed"]
    assert all(PASSWORD not in str(value) for value in raw.values())
    [listed] = svc.list_relays(engine)
    assert listed["has_password"] is True
    assert "password_sealed" not in listed
    assert all(PASSWORD not in str(value) for value in listed.values())
    [config] = svc.load_relay_configs(engine, SECRET)
    assert (config.username, config.password) == ("ann", PASSWORD)
    with pytest.raises(ConfigError, match="secret key differs"):
        svc.load_relay_configs(engine, "another-secret")


def test_it_replaces_the_credentials_with_a_new_url(engine: Engine) -> None:
    svc.add_relay(engine, SECRET, "primary", f"smtp://ann:{PASSWORD}@mx.example.com")
    changed = svc.set_relay(engine, SECRET, "primary", url="smtps://mx2.example.com")
    assert (changed["host"], changed["port"], changed["tls"]) == (
        "mx2.example.com",
        465,
        "implicit",
    )
    assert changed["has_password"] is False
    assert changed["username"] is None


def test_it_loads_only_enabled_relays_with_their_pool_settings(engine: Engine) -> None:
    svc.add_relay(engine, SECRET, "a", "smtp://a.example.com", weight=2, max_rate=5)
    svc.add_relay(engine, SECRET, "b", "smtp://b.example.com")
    svc.set_relay(engine, SECRET, "b", enabled=False)
    [stored] = svc.load_stored_relays(engine, SECRET)
    assert stored.config.name == "a"
    assert (stored.weight, stored.max_connections, stored.max_rate) == (2, 50, 5.0)
    assert svc.list_relays(engine)[0]["state"] == "healthy"


def test_it_seeds_env_relays_once_and_keeps_stored_ones(engine: Engine) -> None:
    env = parse_relay_list(f"smtp://ann:{PASSWORD}@a.example.com,smtps://b.example.com")
    svc.add_relay(engine, SECRET, "relay-2", "smtp://stored.example.com", weight=4)
    assert svc.seed_from_env(engine, SECRET, env) == 1
    assert svc.seed_from_env(engine, SECRET, env) == 0
    rows = {r["name"]: r for r in svc.list_relays(engine)}
    assert set(rows) == {"relay-1", "relay-2"}
    assert rows["relay-2"]["host"] == "stored.example.com"
    assert rows["relay-1"]["has_password"] is True
    configs = {c.name: c for c in svc.load_relay_configs(engine, SECRET)}
    assert configs["relay-1"].password == PASSWORD


async def test_it_probes_a_relay_and_sends_a_test_message(engine: Engine, sink: Sink) -> None:
    svc.add_relay(engine, SECRET, "sink", f"{sink.url}?timeout=5")
    result = await svc.probe_relay(engine, SECRET, "sink", to="ann@example.com")
    assert result.ok, (result.session, result.send)
    [received] = sink.messages
    assert received.rcpts == ("ann@example.com",)
    assert b"Subject: Herald relay test" in received.data


async def test_it_logs_in_with_the_unsealed_password(
    engine: Engine, sink_factory: Callable[..., Sink]
) -> None:
    sink = sink_factory(needs_auth("ann", PASSWORD))
    svc.add_relay(engine, SECRET, "auth", f"smtp://ann:{PASSWORD}@127.0.0.1:{sink.port}?timeout=5")
    assert (await svc.probe_relay(engine, SECRET, "auth")).ok
    svc.set_relay(engine, SECRET, "auth", url=f"smtp://ann:wrong@127.0.0.1:{sink.port}?timeout=5")
    assert not (await svc.probe_relay(engine, SECRET, "auth")).ok


async def test_it_reports_a_relay_that_refuses_connections(
    engine: Engine, sink_factory: Callable[..., Sink]
) -> None:
    sink = sink_factory(refuse())
    svc.add_relay(engine, SECRET, "down", f"{sink.url}?timeout=5")
    result = await svc.probe_relay(engine, SECRET, "down", to="ann@example.com")
    assert not result.ok
    assert result.send is None
    assert sink.count() == 0


def _herald(tmp_path: Path, database_url: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    env = {
        **os.environ,
        "HERALD_DATABASE_URL": database_url,
        "HERALD_DATA_DIR": str(tmp_path / "data"),
        "HERALD_SECRET_KEY": SECRET,
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "herald", "relays", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run


def test_it_manages_and_tests_relays_from_the_command_line(
    tmp_path: Path, database_url: str, sink_factory: Callable[..., Sink]
) -> None:
    herald = _herald(tmp_path, database_url)
    sink = sink_factory(needs_auth("ann", PASSWORD))
    added = herald("add", "sink", f"smtp://ann:{PASSWORD}@127.0.0.1:{sink.port}?timeout=5")
    assert added.returncode == 0, added.stderr
    assert PASSWORD not in added.stdout
    changed = herald("set", "sink", "--weight", "3", "--max-rate", "none", "--disable")
    assert changed.returncode == 0, changed.stderr
    listed = herald("ls", "--json")
    assert PASSWORD not in listed.stdout
    [row] = json.loads(listed.stdout)
    assert (row["name"], row["weight"], row["enabled"], row["has_password"]) == (
        "sink",
        3,
        False,
        True,
    )
    tested = herald("test", "sink", "--to", "bob@example.com")
    assert tested.returncode == 0, tested.stderr
    assert sink.wait_for(1)
    down = sink_factory(refuse())
    assert herald("add", "down", f"{down.url}?timeout=5", "--max-rate", "600/min").returncode == 0
    rows = {r["name"]: r for r in json.loads(herald("ls", "--json").stdout)}
    assert (rows["down"]["max_rate"], rows["down"]["state"], rows["sink"]["state"]) == (
        10.0,
        "healthy",
        "disabled",
    )
    failed = herald("test", "down", "--json")
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["ok"] is False
    assert "relay down: temporary failure: connect" in failed.stderr
    assert herald("rm", "down").returncode == 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("add", "x", "http://mx.example.com"), 2, "scheme must be smtp"),
        (("add", "x", "smtp://mx.example.com", "--weight", "0"), 2, "weight must be"),
        (("set", "ghost", "--weight", "2"), 3, "no relay named 'ghost'"),
        (("set", "ghost", "--max-rate", "fast"), 2, "--max-rate must be"),
        (("add", "x", "smtp://mx.example.com", "--max-rate", "5/week"), 2, "--max-rate must be"),
        (("rm", "ghost"), 3, "no relay named 'ghost'"),
        (("test", "ghost"), 3, "no relay named 'ghost'"),
    ],
)
def test_it_reports_mistakes_in_one_line_without_a_traceback(
    tmp_path: Path, database_url: str, args: tuple[str, ...], code: int, message: str
) -> None:
    proc = _herald(tmp_path, database_url)(*args)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_env_relays_take_stored_settings_only_from_a_relay_at_the_same_address(
    engine: Engine,
) -> None:
    env = parse_relay_list("smtp://a.example.com:2525,smtp://b.example.com,smtp://c.example.com")
    svc.add_relay(engine, SECRET, "relay-1", "smtp://a.example.com:2525", weight=4, max_rate=9)
    svc.add_relay(engine, SECRET, "relay-2", "smtp://elsewhere.example.com", weight=7)
    svc.add_relay(engine, SECRET, "relay-3", "smtp://c.example.com")
    svc.set_relay(engine, SECRET, "relay-3", enabled=False)
    pool = {r.name: r for r in svc.pool_for_env(engine, env)}
    assert set(pool) == {"relay-1", "relay-2"}  # relay-3 is disabled in the store
    assert (pool["relay-1"].weight, pool["relay-1"].max_rate) == (4, 9.0)
    assert pool["relay-2"].config.host == "b.example.com" and pool["relay-2"].weight == 1
