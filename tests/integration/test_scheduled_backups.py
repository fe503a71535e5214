"""Scheduled backups: under a running node, on failure, with retention, and to S3."""

from __future__ import annotations

import asyncio
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from herald.cluster import Singletons
from herald.config import Settings
from herald.domain.backupformat import backup_filename
from herald.ops.backups import BACKUP_DUTY, backup_duty, scheduled_backup
from herald.runtime import Runtime
from herald.services import duties
from herald.services.backups import verify_backup
from herald.services.backuptargets import DirectoryTarget, apply_retention
from herald.store import tracking as store_tracking
from herald.store.tables import job_runs
from tests.ci import unavailable
from tests.factories import add_subscribers, make_list
from tests.processes import Nodes, free_port, wait_until
from tests.sinks import Sink


def _runtime(engine: Engine, data_dir: Path, **settings: Any) -> Runtime:
    return Runtime(
        settings=Settings(data_dir=data_dir, **settings),
        engine=engine,
        secret="test-secret",
        node_name="backup-test",
    )


def _runs(engine: Engine, *, ok: bool) -> list[Any]:
    with engine.begin() as conn:
        return conn.execute(
            select(job_runs)
            .where(job_runs.c.job == BACKUP_DUTY, job_runs.c.ok.is_(ok))
            .order_by(job_runs.c.id)
        ).all()


def _archives(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_it_takes_scheduled_backups_under_a_running_node(
    engine: Engine, database_url: str, herald_nodes: Nodes, sink: Sink, tmp_path: Path
) -> None:
    add_subscribers(engine, make_list(engine), 5)
    backups = tmp_path / "backups"
    node = herald_nodes.start(
        "n1",
        sink.url,
        backup_schedule="1s",
        backup_dir=str(backups),
        backup_keep_daily="1",
        backup_keep_weekly="0",
    )

    wait_until(lambda: len(_runs(engine, ok=True)) >= 2, 60, "two scheduled backups")
    node.terminate()  # drains: a backup under way completes first
    assert node.wait(timeout=60) == 0

    runs = _runs(engine, ok=True)
    assert all(r.node == "n1" and r.detail.startswith("herald-backup-") for r in runs)
    assert runs[1].detail.endswith("retention deleted 1")  # only the newest is kept
    last = duties.last_run(engine, BACKUP_DUTY, ok=True)
    assert last is not None and last.finished_at is not None
    [newest] = _archives(backups)  # only the newest is kept; nothing partial is left
    assert newest.startswith("herald-backup-") and newest.endswith(".tar")
    verified = verify_backup(backups / newest)
    assert verified.ok, verified.problems
    assert verified.tables["subscribers"]["restored"] == 5


def _run_duty_once(runtime: Runtime, *, failed: bool) -> None:
    duty = backup_duty(runtime, started=datetime.now(UTC) - timedelta(days=1))
    assert duty is not None and duty.name == BACKUP_DUTY

    async def scenario() -> None:
        stop = asyncio.Event()
        singletons = Singletons(runtime.engine, "n1", [duty], ttl=3)
        task = asyncio.create_task(singletons.run(stop))
        deadline = time.monotonic() + 60
        while not _runs(runtime.engine, ok=not failed):
            assert time.monotonic() < deadline, "timed out waiting for the backup run"
            await asyncio.sleep(0.05)
        stop.set()
        await task

    asyncio.run(scenario())


def test_it_records_a_failed_backup_with_its_reason(engine: Engine, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the backup directory should be")
    runtime = _runtime(engine, tmp_path, backup_schedule="1h", backup_dir=blocker / "backups")

    _run_duty_once(runtime, failed=True)

    [run] = _runs(engine, ok=False)
    assert run.detail.startswith("HeraldError: cannot write a backup into ")
    assert str(blocker / "backups") in run.detail
    assert duties.last_run(engine, BACKUP_DUTY, ok=True) is None


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 KiB tmpfs: a real "no space left on device" for whatever writes there."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        unavailable(
            f"cannot mount a tmpfs here (needs root): {made.stderr.strip()}",
            in_ci=f"cannot mount a tmpfs (CI runs as root): {made.stderr.strip()}",
        )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_it_records_a_full_disk_and_leaves_no_partial_file(
    engine: Engine, small_disk: Path, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    events = [
        {
            "event_id": secrets.token_hex(16),  # incompressible: the archive outgrows the disk
            "kind": "open",
            "delivery_id": i,
            "campaign_id": 1,
            "url": None,
            "user_agent": secrets.token_hex(40),
            "ip": None,
            "at": now,
        }
        for i in range(3000)
    ]
    with engine.begin() as conn:
        store_tracking.insert_events(conn, events)
    runtime = _runtime(engine, tmp_path, backup_schedule="1h", backup_dir=small_disk)

    _run_duty_once(runtime, failed=True)

    [run] = _runs(engine, ok=False)
    assert run.detail.startswith("HeraldError: cannot write a backup into ")
    assert "No space left on device" in run.detail
    assert _archives(small_disk) == []  # no archive, no .partial, no staging directory


def test_it_leaves_nothing_behind_when_the_upload_fails(engine: Engine, tmp_path: Path) -> None:
    """An S3 endpoint that refuses connections: a failed run, no archive left anywhere."""
    backups = tmp_path / "staging"
    runtime = _runtime(
        engine,
        tmp_path,
        backup_schedule="1h",
        backup_dir=backups,
        backup_s3_url="s3://herald/nightly",
        backup_s3_endpoint=f"http://127.0.0.1:{free_port()}",
        backup_s3_region="us-east-1",
        backup_s3_access_key_id="test",
        backup_s3_secret_access_key="test",
    )

    _run_duty_once(runtime, failed=True)

    [run] = _runs(engine, ok=False)
    assert run.detail.startswith("HeraldError: cannot upload herald-backup-")
    assert _archives(backups) == []


def _touch(directory: Path, name: str) -> None:
    (directory / name).write_bytes(b"x")


def test_it_deletes_only_its_own_backups_that_retention_drops(tmp_path: Path) -> None:
    start = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
    made = [backup_filename(start + timedelta(days=d)) for d in range(21)]
    for name in made:
        _touch(tmp_path, name)
    foreign = ["notes.txt", made[0] + ".partial", "herald-backup-latest.tar", "other.tar"]
    for name in foreign:
        _touch(tmp_path, name)
    (tmp_path / backup_filename(start - timedelta(days=30))).mkdir()  # a directory: not ours

    dropped = apply_retention(DirectoryTarget(tmp_path), daily=3, weekly=2)

    # 21 March 2026 is a Saturday: the last three days, and the newest of the two last weeks.
    kept = {made[d] for d in (20, 19, 18, 14)}
    assert set(dropped) == set(made) - kept
    left = set(_archives(tmp_path))
    assert left == kept | set(foreign) | {backup_filename(start - timedelta(days=30))}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible HTTP server (moto's standalone server) on a loopback port."""
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        unavailable(
            f"moto[server] is not installed: {exc}", in_ci=f"moto[server] is required in CI: {exc}"
        )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        assert proc.poll() is None, "the S3 server exited"
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_until(answers, 30, "the S3 server to listen")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_it_uploads_to_s3_and_applies_retention_there(
    engine: Engine, s3_endpoint: str, tmp_path: Path
) -> None:
    import boto3

    add_subscribers(engine, make_list(engine), 3)
    bucket = f"herald-{engine.dialect.name}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    client.create_bucket(Bucket=bucket)
    now = datetime.now(UTC)
    older = [backup_filename(now - timedelta(days=d)) for d in (1, 2, 3)]
    for key in [*(f"nightly/{n}" for n in older), "nightly/README", "elsewhere/x.tar"]:
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    staging = tmp_path / "staging"
    runtime = _runtime(
        engine,
        tmp_path,
        backup_dir=staging,
        backup_keep_daily=2,
        backup_keep_weekly=0,
        backup_s3_url=f"s3://{bucket}/nightly/",
        backup_s3_endpoint=s3_endpoint,
        backup_s3_region="us-east-1",
        backup_s3_access_key_id="test",
        backup_s3_secret_access_key="test",
    )

    summary = scheduled_backup(runtime)

    assert f"to s3://{bucket}/nightly/herald-backup-" in summary
    assert summary.endswith("retention deleted 2")
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    new_keys = [k for k in keys if k.startswith("nightly/herald-backup-") and k[8:] not in older]
    assert len(new_keys) == 1
    assert set(keys) == {new_keys[0], f"nightly/{older[0]}", "nightly/README", "elsewhere/x.tar"}
    assert _archives(staging) == []
    local = tmp_path / new_keys[0].split("/")[1]
    client.download_file(bucket, new_keys[0], str(local))
    verified = verify_backup(local)
    assert verified.ok and verified.tables["subscribers"]["restored"] == 3
    with engine.begin() as conn:
        assert conn.scalar(select(func.count()).select_from(job_runs)) == 0  # a direct call
