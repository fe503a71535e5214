"""Maintenance jobs: the tracking roll-up keeps reports exact; purges; database upkeep."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select

from herald.config import Settings
from herald.domain.clock import utcnow
from herald.errors import Conflict, NotFound
from herald.ops import maintenance as ops
from herald.runtime import Runtime
from herald.services import backups, campaigns, duties, maintenance, tracking
from herald.store import tracking as store_tracking
from herald.store.engine import make_engine
from herald.store.tables import (
    auth_failures,
    cluster_leases,
    idempotency_keys,
    job_runs,
    nodes,
    tracking_daily,
    tracking_events,
    tracking_uniques,
)
from tests.factories import add_subscribers, make_campaign, make_list
from tests.processes import free_port


def _event(kind: str, delivery: int, campaign: int, at: datetime, url: str | None = None) -> Any:
    return {
        "event_id": secrets.token_hex(16),
        "kind": kind,
        "delivery_id": delivery,
        "campaign_id": campaign,
        "url": url if kind == "click" else None,
        "user_agent": "test",
        "ip": None,
        "at": at,
    }


def _track(engine: Engine, events: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        store_tracking.insert_events(conn, events)


def _count(engine: Engine, table: Any) -> int:
    with engine.begin() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


def _runtime(engine: Engine, tmp_path: Path, **settings: Any) -> Runtime:
    return Runtime(
        settings=Settings(data_dir=tmp_path, **settings),
        engine=engine,
        secret="test-secret",
        node_name="maint-test",
    )


def _tracked_campaign(engine: Engine) -> tuple[int, int]:
    """Two campaigns with opens and clicks, old and recent, by overlapping readers."""
    add_subscribers(engine, make_list(engine), 3)
    first, second = make_campaign(engine, start=False), make_campaign(engine, start=False)
    now = utcnow()
    old, older, recent = now - timedelta(days=40), now - timedelta(days=45), now - timedelta(days=2)
    sale, news = "https://shop.example.com/sale", "https://example.com/news"
    _track(
        engine,
        [
            _event("open", 1, first, older),
            _event("open", 1, first, old),
            _event("open", 2, first, old),
            _event("open", 1, first, recent),  # reader 1 again, still raw
            _event("open", 3, first, recent),
            _event("click", 1, first, older, sale),
            _event("click", 1, first, old, sale),
            _event("click", 2, first, old, news),
            _event("click", 2, first, recent, sale),
            _event("open", 9, second, old),
            _event("click", 9, second, recent, sale),
        ],
    )
    return first, second


def test_it_rolls_old_events_up_and_reports_stay_identical(engine: Engine) -> None:
    first, second = _tracked_campaign(engine)
    before = {c: campaigns.campaign_report(engine, c) for c in (first, second)}
    assert tracking.campaign_counts(engine, first) == {
        "open": {"total": 5, "unique": 3},
        "click": {"total": 4, "unique": 2},
    }

    done = maintenance.roll_up_tracking(engine, raw_days=30, batch=3)

    assert done.events == 7 and done.batches == 3
    assert {c: campaigns.campaign_report(engine, c) for c in (first, second)} == before
    assert tracking.campaign_counts(engine, second) == {
        "open": {"total": 1, "unique": 1},
        "click": {"total": 1, "unique": 1},
    }
    assert _count(engine, tracking_events) == 4  # only the recent ones stay raw
    with engine.begin() as conn:
        daily = {
            (r.day, r.kind, r.url): r.events
            for r in conn.execute(
                select(tracking_daily).where(tracking_daily.c.campaign_id == first)
            )
        }
        uniques = {tuple(r) for r in conn.execute(select(tracking_uniques))}
    assert sum(daily.values()) == 6
    old_day = (utcnow() - timedelta(days=40)).date()
    assert daily[(old_day, "open", "")] == 2
    assert daily[(old_day, "click", "https://example.com/news")] == 1
    assert (first, "open", 2) in uniques and (second, "open", 9) in uniques


def test_it_adds_a_later_roll_up_to_the_same_day(engine: Engine) -> None:
    first, _ = _tracked_campaign(engine)
    maintenance.roll_up_tracking(engine, raw_days=30)
    at = utcnow() - timedelta(days=40)
    _track(engine, [_event("open", 2, first, at), _event("open", 7, first, at)])
    before = tracking.campaign_counts(engine, first)

    assert maintenance.roll_up_tracking(engine, raw_days=30).events == 2

    assert (
        tracking.campaign_counts(engine, first)
        == before
        == {
            "open": {"total": 7, "unique": 4},
            "click": {"total": 4, "unique": 2},
        }
    )
    with engine.begin() as conn:
        rows = conn.execute(
            select(tracking_daily.c.events).where(
                tracking_daily.c.campaign_id == first,
                tracking_daily.c.kind == "open",
                tracking_daily.c.day == at.date(),
            )
        ).all()
    assert [r.events for r in rows] == [4]  # one row per day, counts added


def test_it_refuses_a_roll_up_batch_that_lost_a_race(engine: Engine) -> None:
    """Two roll-ups read the same batch: the one that folds second changes nothing."""
    first, _ = _tracked_campaign(engine)
    cutoff = utcnow() - timedelta(days=30)
    with engine.begin() as conn:
        read_by_slow_one = store_tracking.old_events(conn, before=cutoff, limit=100)
    maintenance.roll_up_tracking(engine, raw_days=30)  # the other one wins
    counts = tracking.campaign_counts(engine, first)

    with pytest.raises(Conflict), engine.begin() as conn:
        maintenance._fold(conn, read_by_slow_one, cutoff=cutoff)

    assert tracking.campaign_counts(engine, first) == counts
    with engine.begin() as conn:
        assert conn.scalar(select(func.sum(tracking_daily.c.events))) == 7  # not 14


def test_it_purges_expired_rows_and_keeps_live_ones(engine: Engine) -> None:
    now = utcnow()
    with engine.begin() as conn:
        for key, age in (("old", timedelta(days=2)), ("fresh", timedelta(minutes=5))):
            conn.execute(
                insert(idempotency_keys).values(
                    principal="token:1",
                    key=key,
                    method="POST",
                    path="/x",
                    request_hash="0" * 64,
                    created_at=now - age,
                )
            )
        for address, first_at, blocked in (
            ("10.0.0.1", now - timedelta(hours=2), now - timedelta(hours=1)),  # over
            ("10.0.0.2", now - timedelta(hours=2), now + timedelta(minutes=3)),  # still blocked
            ("10.0.0.3", now - timedelta(minutes=1), None),  # still counting
        ):
            conn.execute(
                insert(auth_failures).values(
                    address=address, failures=3, first_at=first_at, blocked_until=blocked
                )
            )
        for job, days in (("a", 60), ("a", 50), ("a", 1), ("b", 90)):
            started = now - timedelta(days=days)
            conn.execute(
                insert(job_runs).values(
                    job=job, node="n", started_at=started, finished_at=started, ok=True, detail=""
                )
            )
        for duty, expires in (
            ("dropped-duty", now - timedelta(days=40)),
            ("live-duty", now + timedelta(seconds=10)),
        ):
            conn.execute(insert(cluster_leases).values(name=duty, holder="n", expires_at=expires))
        for name, age in (("long-gone", timedelta(days=8)), ("alive", timedelta(seconds=1))):
            conn.execute(
                insert(nodes).values(
                    name=name,
                    roles="worker",
                    version="0",
                    host="h",
                    pid=1,
                    state="gone",
                    drain_requested=False,
                    started_at=now - age,
                    heartbeat_at=now - age,
                )
            )

    done = maintenance.purge_expired(engine)

    assert (done["idempotency_keys"], done["auth_failures"], done["job_runs"]) == (1, 1, 2)
    assert done["nodes"] == 1
    assert done["cluster_leases"] == 1
    assert isinstance(done["probes"], str)
    with engine.begin() as conn:
        assert [r.key for r in conn.execute(select(idempotency_keys.c.key))] == ["fresh"]
        left = sorted(r.address for r in conn.execute(select(auth_failures.c.address)))
        assert left == ["10.0.0.2", "10.0.0.3"]
        runs = sorted((r.job, r.started_at.date()) for r in conn.execute(select(job_runs)))
        assert [job for job, _ in runs] == ["a", "b"]  # each job's latest stays
        assert [r.name for r in conn.execute(select(nodes.c.name))] == ["alive"]
        assert [r.name for r in conn.execute(select(cluster_leases.c.name))] == ["live-duty"]


def test_it_vacuums_or_optimises_the_database(engine: Engine) -> None:
    summary = maintenance.optimise_database(engine)
    if engine.dialect.name == "postgresql":
        assert summary.startswith("VACUUM (ANALYZE) of ") and " 0 tables" not in summary
    else:
        assert summary.startswith("PRAGMA optimize; WAL checkpoint moved")
    # The engine still works normally afterwards (timeouts restored, no open transaction).
    with engine.begin() as conn:
        assert conn.scalar(select(func.count()).select_from(nodes)) == 0


def test_it_runs_every_job_now_and_records_each_run(engine: Engine, tmp_path: Path) -> None:
    _tracked_campaign(engine)
    outcomes = ops.run_now(_runtime(engine, tmp_path))

    assert [(o.job, o.ok) for o in outcomes] == [
        ("tracking", True),
        ("purge", True),
        ("database", True),
    ]
    assert outcomes[0].detail == "rolled 7 tracking events up into daily counts"
    run = duties.last_run(engine, "maintenance.tracking", ok=True)
    assert run is not None and run.node == "maint-test" and run.detail == outcomes[0].detail
    with pytest.raises(NotFound):
        ops.run_now(_runtime(engine, tmp_path), "nope")


def test_it_offers_each_job_as_a_duty_at_its_interval(engine: Engine, tmp_path: Path) -> None:
    started = utcnow()
    runtime = _runtime(engine, tmp_path, maintenance_purge_interval="5m")
    made = {d.name: d for d in ops.maintenance_duties(runtime, started=started)}
    assert set(made) == {"maintenance.tracking", "maintenance.purge", "maintenance.database"}
    purge = made["maintenance.purge"]
    assert purge.record and purge.next_due is not None
    assert purge.next_due(None) == started + timedelta(minutes=5)
    assert purge.next_due(started) == started + timedelta(minutes=5)
    tracking_due = made["maintenance.tracking"].next_due
    assert tracking_due is not None and tracking_due(started) == started + timedelta(days=1)


def _herald(tmp_path: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HERALD_DATABASE_URL": database_url, "HERALD_DATA_DIR": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "herald", "maintenance", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_it_runs_maintenance_from_the_command_line(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    _tracked_campaign(engine)

    done = _herald(tmp_path, database_url, "run", "tracking", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        {"job": "tracking", "ok": True, "detail": "rolled 7 tracking events up into daily counts"}
    ]
    listed = _herald(tmp_path, database_url, "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    last = {r["job"]: r for r in json.loads(listed.stdout)}
    assert last["tracking"]["last_ok"] is True and last["purge"]["last_started_at"] is None
    assert last["backup"]["every"] == "off" and last["backup"]["last_ok"] is None


def test_it_exits_non_zero_for_an_unknown_or_failing_job(tmp_path: Path) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'herald.db'}"
    assert _herald(tmp_path, sqlite_url, "run", "nope").returncode == 3
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/herald"
    failed = _herald(tmp_path, unreachable, "run", "purge")
    assert failed.returncode == 1
    assert "✗ purge: OperationalError" in failed.stdout


def test_it_backs_up_and_restores_rolled_up_tracking(
    engine: Engine, empty_database: Any, tmp_path: Path
) -> None:
    """The daily counts survive a backup restored into the other backend: same report."""
    first, _ = _tracked_campaign(engine)
    maintenance.roll_up_tracking(engine, raw_days=30)
    counts = tracking.campaign_counts(engine, first)
    made = backups.create_backup(engine, tmp_path)
    other = "sqlite" if engine.dialect.name == "postgresql" else "postgresql"
    target_url = empty_database(other)

    backups.restore_backup(made.path, target_url)

    restored = make_engine(target_url)
    try:
        assert tracking.campaign_counts(restored, first) == counts
        assert _count(restored, tracking_daily) == 6
    finally:
        restored.dispose()
