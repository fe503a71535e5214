"""Backup and restore figures: ``herald backup`` beside pg_dump/pg_restore and sqlite3 .backup.

    .venv/bin/python bench/backup.py [--subscribers 1000000] [--events 5000000] [--runs 1]
                                     [--backend both|sqlite|postgresql]

For each backend a source database is filled once with ``--subscribers``
subscribers (one list, each subscribed) and ``--events`` tracking events:
PostgreSQL with ``INSERT … SELECT … FROM generate_series`` on a scratch
database of the server at HERALD_BENCH_PG_URL (default
postgresql://postgres@127.0.0.1:5432/postgres), SQLite with executemany in
large transactions. Then, ``--runs`` times:

- ``herald backup create --to DIR`` (a subprocess, as an operator runs it):
  seconds and archive size;
- ``herald backup restore FILE --database-url URL`` into a new empty
  database of the same backend: seconds;
- beside them, on the same data: PostgreSQL ``pg_dump -Fc`` and
  ``pg_restore`` into a new empty database; SQLite ``sqlite3 SRC ".backup
  FILE"`` and ``sqlite3 DEST ".restore FILE"`` (Python's sqlite3 backup API
  when the sqlite3 program is missing).

The baselines are the engines' own programs: they copy pages or use the server's
binary COPY, and check nothing beyond it. Herald's archive is portable between
backends and checksummed, and its restore checks every file before writing and
migrates afterwards, so some factor is expected; the figure to watch is how
large it is. Times include each program's start-up. Medians over the runs,
then each run. Every database and file the bench made is removed at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from herald.store.engine import make_engine, migrate

PG_ADMIN = os.environ.get("HERALD_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SQLITE_BATCH = 200_000
COMMAND_TIMEOUT = 3600.0
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
CLICK_URL = "https://shop.example.com/spring-sale?utm_source=herald&utm_medium=email"


@dataclass
class Figures:
    """Seconds per run of each operation, and the size of what it wrote (bytes)."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    def add(self, what: str, seconds: float, size: int | None = None) -> None:
        self.seconds.setdefault(what, []).append(seconds)
        if size is not None:
            self.sizes[what] = size


def _run(args: list[str], *, env: dict[str, str] | None = None) -> float:
    """Run a command to completion; its wall-clock seconds. Fails loudly on error."""
    started = time.perf_counter()
    proc = subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(
            f"{' '.join(args[:4])} … failed ({proc.returncode}): {proc.stderr[-2000:]}"
        )
    return seconds


def _herald(url: str, data_dir: Path, *args: str) -> tuple[float, dict[str, object]]:
    env = {**os.environ, "HERALD_DATABASE_URL": url, "HERALD_DATA_DIR": str(data_dir)}
    env.pop("HERALD_RELAYS", None)
    out = data_dir / "out.json"
    started = time.perf_counter()
    with out.open("w") as stdout:
        proc = subprocess.run(
            [sys.executable, "-m", "herald", *args, "--json"],
            env=env,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"herald {' '.join(args[:2])} failed: {proc.stderr[-2000:]}")
    summary: dict[str, object] = json.loads(out.read_text())
    return seconds, summary


# --- databases -------------------------------------------------------------


def _pg_url(name: str) -> str:
    return PG_ADMIN.rpartition("/")[0] + "/" + name


@contextmanager
def pg_database() -> Iterator[str]:
    """A new empty database on the server at PG_ADMIN, dropped afterwards."""
    name = f"herald_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _migrated(url: str) -> None:
    engine = make_engine(url)
    try:
        migrate(engine)
    finally:
        engine.dispose()


def fill_postgresql(url: str, subscribers: int, events: int) -> None:
    """One list, ``subscribers`` subscribed subscribers and ``events`` opens and clicks."""
    _migrated(url)
    with psycopg.connect(url) as conn:
        conn.execute("SET statement_timeout = 0")
        conn.execute(
            "INSERT INTO lists (id, name, optin, description, created_at, updated_at)"
            " VALUES (1, 'News', 'single', '', now(), now())"
        )
        conn.execute(
            "INSERT INTO subscribers (id, email, name, attribs, status, created_at, updated_at)"
            " SELECT n, 'user' || n || '@example.com', 'User ' || n,"
            " json_build_object('city', 'City' || n %% 1000, 'plan',"
            " CASE WHEN n %% 7 = 0 THEN 'pro' ELSE 'free' END),"
            " 'enabled', now() - n * interval '1 second', now()"
            " FROM generate_series(1, %s) AS n",
            (subscribers,),
        )
        conn.execute(
            "INSERT INTO subscriptions (list_id, subscriber_id, status, created_at, updated_at)"
            " SELECT 1, n, 'confirmed', now(), now() FROM generate_series(1, %s) AS n",
            (subscribers,),
        )
        conn.execute(
            "INSERT INTO tracking_events"
            " (event_id, kind, delivery_id, campaign_id, url, user_agent, ip, at)"
            " SELECT md5(n::text), CASE WHEN n %% 3 = 0 THEN 'click' ELSE 'open' END,"
            " 1 + n %% %s, 1 + n %% 20, CASE WHEN n %% 3 = 0 THEN %s END, %s,"
            " '203.0.113.0', now() - n * interval '10 millisecond'"
            " FROM generate_series(1, %s) AS n",
            (max(subscribers, 1), CLICK_URL, UA, events),
        )
        for table in ("lists", "subscribers", "tracking_events"):
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                f" (SELECT coalesce(max(id), 1) FROM {table}))"
            )
        conn.execute("ANALYZE")


def _stamp(at: datetime) -> str:
    """A timestamp as SQLAlchemy stores it in SQLite."""
    return at.strftime("%Y-%m-%d %H:%M:%S.%f")


def _chunks(
    total: int, make: Callable[[int], tuple[object, ...]]
) -> Iterator[list[tuple[object, ...]]]:
    for start in range(1, total + 1, SQLITE_BATCH):
        yield [make(n) for n in range(start, min(total, start + SQLITE_BATCH - 1) + 1)]


def fill_sqlite(url: str, subscribers: int, events: int) -> None:
    """The same data as fill_postgresql, by executemany in large transactions."""
    _migrated(url)
    now = datetime.now(UTC)
    stamp = _stamp(now)

    def subscriber(n: int) -> tuple[object, ...]:
        plan = "pro" if n % 7 == 0 else "free"
        attribs = f'{{"city": "City{n % 1000}", "plan": "{plan}"}}'
        created = _stamp(now - timedelta(seconds=n))
        return (n, f"user{n}@example.com", f"User {n}", attribs, "enabled", created, stamp)

    def event(n: int) -> tuple[object, ...]:
        click = n % 3 == 0
        at = _stamp(now - timedelta(milliseconds=10 * n))
        kind, link = ("click", CLICK_URL) if click else ("open", None)
        delivery = 1 + n % max(subscribers, 1)
        # The ids PostgreSQL's md5(n::text) gives: the same data, as hard to compress.
        event_id = hashlib.md5(str(n).encode(), usedforsecurity=False).hexdigest()
        return (event_id, kind, delivery, 1 + n % 20, link, UA, "203.0.113.0", at)

    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")  # generating test data, not keeping it
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO lists (id, name, optin, description, created_at, updated_at)"
            " VALUES (1, 'News', 'single', '', ?, ?)",
            (stamp, stamp),
        )
        for rows in _chunks(subscribers, subscriber):
            conn.executemany(
                "INSERT INTO subscribers (id, email, name, attribs, status, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        conn.execute(
            "INSERT INTO subscriptions (list_id, subscriber_id, status, created_at, updated_at)"
            " SELECT 1, id, 'confirmed', ?, ? FROM subscribers",
            (stamp, stamp),
        )
        for rows in _chunks(events, event):
            conn.executemany(
                "INSERT INTO tracking_events (event_id, kind, delivery_id, campaign_id, url,"
                " user_agent, ip, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


# --- one backend -----------------------------------------------------------


def _size(path: Path) -> int:
    return path.stat().st_size


def herald_round(url: str, work: Path, target: Callable[[], str], figures: Figures) -> None:
    """``herald backup create`` then ``herald backup restore`` into ``target()``."""
    dest = work / "herald"
    seconds, summary = _herald(url, work, "backup", "create", "--to", str(dest))
    archive = Path(str(summary["path"]))
    figures.add("herald backup create", seconds, _size(archive))
    seconds, _ = _herald(url, work, "backup", "restore", str(archive), "--database-url", target())
    figures.add("herald backup restore", seconds)
    archive.unlink()


def pg_round(url: str, work: Path, figures: Figures) -> None:
    """One herald round and one pg_dump -Fc / pg_restore round on the same database."""
    with pg_database() as target:
        herald_round(url, work, lambda: target, figures)
    dump = work / "bench.dump"
    figures.add("pg_dump -Fc", _run(["pg_dump", "-Fc", "-f", str(dump), url]), _size(dump))
    with pg_database() as target:
        seconds = _run(["pg_restore", "--no-owner", "-d", target, str(dump)])
        figures.add("pg_restore", seconds)
    dump.unlink()


def sqlite_round(url: str, work: Path, figures: Figures) -> None:
    """One herald round and one sqlite3 .backup / .restore round on the same file."""
    source = url.removeprefix("sqlite:///")
    target = work / "restored.db"
    herald_round(url, work, lambda: f"sqlite:///{target}", figures)
    shutil.rmtree(work / "herald", ignore_errors=True)
    for stale in work.glob("restored.db*"):
        stale.unlink()
    copy, restored = work / "copy.db", work / "restored-by-sqlite.db"
    figures.add("sqlite3 .backup", _sqlite_copy(source, copy), _size(copy))
    figures.add("sqlite3 .restore", _sqlite_restore(copy, restored))
    for path in (copy, restored):
        path.unlink()


def _sqlite_copy(source: str, dest: Path) -> float:
    if shutil.which("sqlite3"):
        return _run(["sqlite3", source, f".backup '{dest}'"])
    started = time.perf_counter()
    with sqlite3.connect(source) as src, sqlite3.connect(dest) as dst:
        src.backup(dst)
    return time.perf_counter() - started


def _sqlite_restore(backup: Path, dest: Path) -> float:
    if shutil.which("sqlite3"):
        return _run(["sqlite3", str(dest), f".restore '{backup}'"])
    started = time.perf_counter()
    with sqlite3.connect(backup) as src, sqlite3.connect(dest) as dst:
        src.backup(dst)
    return time.perf_counter() - started


def bench_backend(backend: str, args: argparse.Namespace) -> tuple[Figures, float]:
    """Fill a source database of ``backend`` once and time ``args.runs`` rounds.

    Returns the figures and the seconds the data generation took.
    """
    figures = Figures()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="herald-bench-")))
        if backend == "postgresql":
            url = stack.enter_context(pg_database())
            fill, one_round = fill_postgresql, pg_round
        else:
            url = f"sqlite:///{work / 'source.db'}"
            fill, one_round = fill_sqlite, sqlite_round
        started = time.perf_counter()
        fill(url, args.subscribers, args.events)
        generated = time.perf_counter() - started
        print(f"{backend}: data generated in {generated:.1f} s", flush=True)
        for run in range(1, args.runs + 1):
            one_round(url, work, figures)
            print(f"{backend}: run {run} done", flush=True)
    return figures, generated


def report(backend: str, figures: Figures, rows: int) -> None:
    print(f"\n{backend}: {rows:,} rows (median of {len(next(iter(figures.seconds.values())))})")
    print(f"  {'operation':<24} {'seconds':>9} {'rows/s':>11} {'size MB':>9}   runs")
    for what, runs in figures.seconds.items():
        median = statistics.median(runs)
        size = figures.sizes.get(what)
        size_text = f"{size / 1e6:9.1f}" if size is not None else f"{'':9}"
        each = ", ".join(f"{s:.1f}" for s in runs)
        print(f"  {what:<24} {median:9.1f} {rows / median:11,.0f} {size_text}   {each}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--backend", choices=("both", "sqlite", "postgresql"), default="both")
    args = parser.parse_args()
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    rows = 2 * args.subscribers + args.events + 1
    for backend in backends:
        figures, generated = bench_backend(backend, args)
        report(backend, figures, rows)
        print(f"  (data generation: {generated:.1f} s, not part of the figures)")


if __name__ == "__main__":
    main()
