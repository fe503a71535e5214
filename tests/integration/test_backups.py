"""Backups: an online snapshot taken mid-campaign restores into the other backend
row for row; damaged archives and non-empty targets are refused before anything
is written; verify proves a backup restores; the command line reports in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, inspect, select

from herald.domain.backupformat import Manifest, parse_manifest
from herald.domain.clock import as_utc, utcnow
from herald.errors import Conflict, InvalidInput
from herald.services import backuparchive, backups, campaigns
from herald.store import dump
from herald.store.engine import current_revision, head_revision, make_engine, migrate
from herald.store.tables import (
    deliveries,
    lists,
    metadata,
    nodes,
    relays,
    subscribers,
    suppressions,
)
from tests.factories import (
    add_subscribers,
    finished,
    make_campaign,
    make_list,
    relay,
    run_worker_until,
)
from tests.processes import wait_until
from tests.sinks import Sink

EmptyDatabase = Callable[[str], str]
OTHER = {"sqlite": "postgresql", "postgresql": "sqlite"}
Rows = dict[tuple[Any, ...], tuple[Any, ...]]
# Tables a campaign being sent does not write to: the source still equals the snapshot.
STILL_TABLES = ("lists", "subscribers", "subscriptions", "templates", "campaign_lists")


def _backend(engine: Engine) -> str:
    return engine.dialect.name


def _norm(value: Any) -> Any:
    return as_utc(value) if isinstance(value, datetime) else value


def _key(table: str, columns: list[str], row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(row[columns.index(c.name)] for c in metadata.tables[table].primary_key)


def db_rows(engine: Engine, table: str, columns: list[str]) -> Rows:
    """A table's rows keyed by primary key (the two backends sort strings differently)."""
    t = metadata.tables[table]
    with engine.connect() as conn:
        result = conn.execute(select(*(t.c[c] for c in columns)))
        rows = [tuple(_norm(v) for v in row) for row in result]
    return {_key(table, columns, row): row for row in rows}


def archive_rows(path: Path) -> tuple[Manifest, dict[str, Rows]]:
    """The manifest and every table as the archive holds it."""
    manifest = backuparchive.check_archive(path)
    out: dict[str, Rows] = {}
    with tarfile.open(path) as tar:
        for entry in manifest.tables:
            columns = [c.name for c in entry.columns]
            out[entry.name] = {
                _key(entry.name, columns, row): row for row in backuparchive.read_table(tar, entry)
            }
    return manifest, out


def assert_database_equals_archive(
    engine: Engine, path: Path, *, paused: tuple[int, ...] = ()
) -> Manifest:
    """Every restored table equals the archive, except that the campaigns in
    ``paused`` were running in it and are paused now."""
    manifest, archived = archive_rows(path)
    for entry in manifest.tables:
        columns = [c.name for c in entry.columns]
        expected = archived[entry.name]
        if entry.name == "campaigns" and paused:
            at = columns.index("status")
            assert all(expected[(i,)][at] == "running" for i in paused)
            expected = {
                k: (*row[:at], "paused", *row[at + 1 :]) if k[0] in paused else row
                for k, row in expected.items()
            }
        restored = db_rows(engine, entry.name, columns)
        assert restored == expected, f"table {entry.name} differs"
        assert len(restored) == entry.rows
    return manifest


def table_names(url: str) -> list[str]:
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return []
    engine = make_engine(url)
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


def seed_awkward_values(engine: Engine) -> None:
    """Rows holding the values that break naive formats: big integers, float edges,
    NULLs, booleans, microseconds, nested JSON, non-ASCII and control characters."""
    at = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)
    with engine.begin() as conn:
        sub_id = conn.execute(
            insert(subscribers).values(
                email="zoë@exämple.com",
                name='Zoë 🦉 "quoted" \\ back\nslash\ttab',
                attribs={
                    "nested": {"list": [1, 2.5, None, True, "x"], "empty": {}},
                    "big": 2**62,
                    "float": 0.1,
                    "unicode": "日本語",
                },
                status="blocklisted",
                created_at=at,
                updated_at=at,
            )
        ).inserted_primary_key[0]
        conn.execute(
            insert(relays).values(
                name="big-counters",
                host="mx.example.com",
                port=2525,
                tls="starttls",
                verify_tls=False,
                username=None,
                password_sealed="sealed:AAAA",
                weight=3,
                max_connections=2,
                max_rate=None,
                enabled=True,
                timeout=1e-7,
                state="half_open",
                sent=2**62,
                deferred=2**53 + 1,
                failed=0,
                latency_ms=0.1 + 0.2,
                state_at=at,
                created_at=at,
                updated_at=at,
            )
        )
        conn.execute(
            insert(nodes).values(
                name="node-ü",
                roles="worker",
                version="0.1.0",
                host="h",
                pid=2**31 - 1,
                state="draining",
                drain_requested=True,
                started_at=at,
                heartbeat_at=at,
            )
        )
        conn.execute(
            insert(suppressions).values(
                email="bounced@example.com", reason="hard_bounce", source="", created_at=at
            )
        )
        conn.execute(
            insert(deliveries).values(
                campaign_id=None,  # a transactional send
                subscriber_id=sub_id,
                status="bounced",
                attempts=3,
                due_at=at,
                last_reply="550 5.1.1 <zoë@exämple.com>\r\nno such user",
                message_id="<1.abc@herald.test>",
                created_at=at,
                updated_at=at,
                sent_at=None,
            )
        )


def test_it_restores_a_backup_taken_mid_campaign_into_the_other_backend(
    engine: Engine, sink: Sink, empty_database: EmptyDatabase, tmp_path: Path
) -> None:
    seed_awkward_values(engine)
    emails = add_subscribers(engine, make_list(engine), 120)
    campaign_id = make_campaign(engine)
    campaigns.set_rate(engine, campaign_id, 30.0)  # ~3 s of sending: the backup lands mid-way
    taken: list[backups.BackupResult] = []

    def back_up_while_sending(_worker: object) -> None:
        wait_until(lambda: _sent(engine) >= 10, 30, "ten messages sent")
        taken.append(backups.create_backup(engine, tmp_path / "backups"))

    run_worker_until(
        engine, [relay(sink.url)], finished(engine, campaign_id), during=back_up_while_sending
    )
    [result] = taken
    manifest, archived = archive_rows(result.path)
    cols = [c.name for c in next(t for t in manifest.tables if t.name == "deliveries").columns]
    sent_then = {
        k: row for k, row in archived["deliveries"].items() if row[cols.index("status")] == "sent"
    }
    assert 10 <= len(sent_then) < len(emails), "the snapshot was not taken mid-campaign"

    # The source as of the snapshot: unchanged tables equal; sent rows are final.
    for name in STILL_TABLES:
        columns = [c.name for c in next(t for t in manifest.tables if t.name == name).columns]
        assert db_rows(engine, name, columns) == archived[name], name
    now_rows = db_rows(engine, "deliveries", cols)
    assert all(now_rows[k] == row for k, row in sent_then.items())
    # Every delivery the snapshot holds as sent had reached the relay.
    received = set(sink.message_ids())
    assert {row[cols.index("message_id")] for row in sent_then.values()} <= received

    target_url = empty_database(OTHER[_backend(engine)])
    restored = backups.restore_backup(result.path, target_url)
    assert restored.tables == {t.name: t.rows for t in manifest.tables}
    target = make_engine(target_url)
    assert restored.paused == [campaign_id]  # it was running: nothing resumes blindly
    try:
        assert_database_equals_archive(target, result.path, paused=(campaign_id,))
        assert _sent(target) == len(sent_then)
        assert current_revision(target) == head_revision()
        # Sequences (PostgreSQL) point past the restored ids: new rows insert.
        assert make_list(target, "After restore") > max(r[0] for r in archived["lists"].values())
    finally:
        target.dispose()


def _sent(engine: Engine) -> int:
    with engine.connect() as conn:
        query = select(func.count()).where(deliveries.c.status == "sent")
        return int(conn.scalar(query.select_from(deliveries)) or 0)


def test_it_round_trips_every_value_exactly_across_backends(
    engine: Engine, empty_database: EmptyDatabase, tmp_path: Path
) -> None:
    seed_awkward_values(engine)
    add_subscribers(engine, make_list(engine), 2500)  # more than one insert batch
    result = backups.create_backup(engine, tmp_path)
    target_url = empty_database(OTHER[_backend(engine)])
    backups.restore_backup(result.path, target_url)

    target = make_engine(target_url)
    try:
        for table in metadata.sorted_tables:
            columns = [c.name for c in table.columns]
            assert db_rows(target, table.name, columns) == db_rows(engine, table.name, columns)
        assert_database_equals_archive(target, result.path)
    finally:
        target.dispose()


def _flip_byte(path: Path) -> None:
    with tarfile.open(path) as tar:
        member = tar.getmember("tables/subscribers.jsonl.gz")
    data = bytearray(path.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _cut_inside_a_file(path: Path) -> None:
    with tarfile.open(path) as tar:
        member = tar.getmember("tables/subscribers.jsonl.gz")
    os.truncate(path, member.offset_data + member.size // 2)


def _cut_between_files(path: Path) -> None:
    with tarfile.open(path) as tar:
        member = tar.getmember("tables/subscribers.jsonl.gz")
    os.truncate(path, member.offset)  # everything before it is whole


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_flip_byte, "subscribers.jsonl.gz does not match its SHA-256"),
        (_cut_inside_a_file, "truncated"),
        (_cut_between_files, "lacks tables/subscribers.jsonl.gz"),
    ],
)
def test_it_refuses_a_damaged_backup_before_writing_anything(
    engine: Engine,
    empty_database: EmptyDatabase,
    tmp_path: Path,
    damage: Callable[[Path], None],
    message: str,
) -> None:
    add_subscribers(engine, make_list(engine), 300)
    path = backups.create_backup(engine, tmp_path).path
    damage(path)
    target_url = empty_database(OTHER[_backend(engine)])

    with pytest.raises(InvalidInput, match=message) as caught:
        backups.restore_backup(path, target_url)
    assert caught.value.message.startswith(path.name)
    assert "\n" not in caught.value.message
    assert table_names(target_url) == []
    verdict = backups.verify_backup(path)
    assert not verdict.ok
    assert len(verdict.problems) == 1
    assert message in verdict.problems[0]


def test_it_refuses_a_target_that_holds_data_unless_forced(
    engine: Engine, empty_database: EmptyDatabase, tmp_path: Path
) -> None:
    add_subscribers(engine, make_list(engine), 20)
    path = backups.create_backup(engine, tmp_path).path
    target_url = empty_database(OTHER[_backend(engine)])
    backups.restore_backup(path, target_url)
    target = make_engine(target_url)
    try:
        make_list(target, "Only in the target")
        with pytest.raises(Conflict, match=r"not empty \(rows in lists, subscribers"):
            backups.restore_backup(path, target_url)
        assert "Only in the target" in _list_names(target)

        backups.restore_backup(path, target_url, force=True)
        assert_database_equals_archive(target, path)
        assert "Only in the target" not in _list_names(target)
    finally:
        target.dispose()


def _list_names(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.scalars(select(lists.c.name)))


@pytest.mark.parametrize("target_schema", ["none", "head"])
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_it_restores_an_older_schema_and_migrates_it(
    backend: str, empty_database: EmptyDatabase, tmp_path: Path, target_schema: str
) -> None:
    older = dump.known_revisions()[-2]
    source = make_engine(empty_database(backend))
    target_url = empty_database(OTHER[backend])
    if target_schema == "head":  # prepared by 'herald init': taken down to the backup's first
        prepared = make_engine(target_url)
        migrate(prepared)
        prepared.dispose()
    try:
        dump.migrate_to(source, older)
        now = utcnow()
        with source.begin() as conn:
            conn.execute(
                insert(lists).values(
                    name="Old", optin="single", description="", created_at=now, updated_at=now
                )
            )
        path = backups.create_backup(source, tmp_path).path
    finally:
        source.dispose()

    restored = backups.restore_backup(path, target_url)
    assert (restored.schema_revision, restored.migrated_to) == (older, head_revision())
    target = make_engine(target_url)
    try:
        assert current_revision(target) == head_revision()
        assert _list_names(target) == {"Old"}
    finally:
        target.dispose()


def test_it_refuses_a_backup_from_a_newer_schema(
    engine: Engine, empty_database: EmptyDatabase, tmp_path: Path
) -> None:
    good = backups.create_backup(engine, tmp_path / "good").path
    work = tmp_path / "work"
    with tarfile.open(good) as tar:
        tar.extractall(work, filter="data")
    manifest = parse_manifest((work / "manifest.json").read_bytes())
    future = replace(manifest, schema_revision="9999_from_the_future")
    path = backuparchive.pack(future, work, tmp_path / "future.tar")
    target_url = empty_database(_backend(engine))

    with pytest.raises(InvalidInput, match="9999_from_the_future is newer than this Herald"):
        backups.restore_backup(path, target_url)
    assert table_names(target_url) == []


def test_it_verifies_a_good_backup(engine: Engine, tmp_path: Path) -> None:
    add_subscribers(engine, make_list(engine), 50)
    path = backups.create_backup(engine, tmp_path).path
    verdict = backups.verify_backup(path)
    assert verdict.ok, verdict.problems
    assert verdict.tables["subscribers"] == {"manifest": 50, "restored": 50}


def _herald(database_url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HERALD_DATABASE_URL": database_url, "HERALD_DATA_DIR": str(cwd)}
    return subprocess.run(
        [sys.executable, "-m", "herald", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _one_line_error(proc: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert text in proc.stderr


def test_it_backs_up_restores_and_verifies_from_the_command_line(
    database_url: str, engine: Engine, empty_database: EmptyDatabase, tmp_path: Path
) -> None:
    add_subscribers(engine, make_list(engine), 30)
    created = _herald(database_url, tmp_path, "backup", "create", "--json")
    assert created.returncode == 0, created.stderr
    summary = json.loads(created.stdout)
    path = Path(summary["path"])
    assert path.parent == tmp_path / "backups"
    assert summary["tables"]["subscribers"] == 30
    assert summary["bytes"] == path.stat().st_size

    verified = _herald(database_url, tmp_path, "backup", "verify", str(path), "--json")
    assert verified.returncode == 0, verified.stdout
    assert json.loads(verified.stdout)["ok"] is True

    target_url = empty_database(OTHER[_backend(engine)])
    restore = ("backup", "restore", str(path), "--database-url", target_url)
    restored = _herald(database_url, tmp_path, *restore, "--json")
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["tables"]["subscriptions"] == 30
    _one_line_error(_herald(database_url, tmp_path, *restore), 4, "not empty")

    _flip_byte(path)
    bad = _herald(database_url, tmp_path, "backup", "verify", str(path))
    assert bad.returncode == 1
    assert "does not match its SHA-256" in bad.stdout
    _one_line_error(_herald(database_url, tmp_path, *restore, "--force"), 2, "SHA-256")
    missing = ("backup", "verify", str(tmp_path / "nope.tar"))
    assert _herald(database_url, tmp_path, *missing).returncode == 1
