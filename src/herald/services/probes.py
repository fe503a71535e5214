"""Probe history: storing results, compacting them, and the SLO figures read from them.

Raw results are kept `RAW_KEEP` (48 h). `compact_history` rolls every whole
hour older than that into one ``probe_hours`` row per target (counts and
latency bucket counts, see domain.slo) and deletes hourly rows older than
`HOURS_KEEP` (35 days), so a window of up to 30 days is always answerable
from at most ~48 raw hours plus ~800 hourly rows per target.

A window's figures merge the hourly rows whose hour starts inside it with the
raw results inside it. Compaction deletes the raw rows it rolls up in the
same transaction, so no probe is ever counted twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from herald.domain import slo as slomath
from herald.domain.clock import as_utc, utcnow
from herald.domain.slo import Tally
from herald.store import leases
from herald.store import monitoring as monitoring_store
from herald.store import probes as store

RAW_KEEP = timedelta(hours=48)
HOURS_KEEP = timedelta(days=35)
BACKUP_JOB = "backup"  # the scheduled backup's duty name (job_runs.job)

Key = tuple[str, str]  # (kind, target)


@dataclass(frozen=True)
class ProbeResult:
    """One probe of one target."""

    kind: str  # endpoint | relay
    target: str
    at: datetime
    ok: bool
    latency_ms: float | None = None
    error: str | None = None
    http_status: int | None = None


@dataclass(frozen=True)
class Readings:
    """What ``/metrics`` exports about probes and backups."""

    latest: list[dict[str, Any]]  # newest result per target
    last_backup: datetime | None  # end of the latest successful scheduled backup


class _Raced(Exception):
    """Another node compacted the same rows first."""


@contextlib.contextmanager
def reading(engine: Engine, *, milliseconds: int | None = None) -> Iterator[Connection]:
    """A read-only transaction: on SQLite it takes no write lock (``BEGIN
    DEFERRED``); with ``milliseconds``, each statement is bounded (PostgreSQL)."""
    with engine.connect() as conn:
        conn.execution_options(sqlite_begin="DEFERRED")
        with conn.begin():
            if milliseconds is not None:
                monitoring_store.limit_statement_time(conn, milliseconds=milliseconds)
            yield conn


def record_results(engine: Engine, results: Iterable[ProbeResult]) -> int:
    """Store probe results; how many."""
    rows = [
        {
            "kind": r.kind,
            "target": r.target[:255],
            "at": r.at,
            "ok": r.ok,
            "latency_ms": r.latency_ms,
            "error": None if r.error is None else slomath.short_error(r.error),
            "http_status": r.http_status,
        }
        for r in results
    ]
    with engine.begin() as conn:
        store.insert_results(conn, rows)
    return len(rows)


def compact_history(engine: Engine, *, now: datetime | None = None) -> str:
    """Roll raw results of whole hours older than 48 h into hourly rows and delete
    them; delete hourly rows older than 35 days. Returns a one-line summary.

    Safe to run on several nodes at once: the raw rows are deleted first and
    their count checked, so a compaction that lost the race to another rolls
    back and says so instead of counting the same probes twice.
    """
    now = now or utcnow()
    cutoff = slomath.hour_of(now - RAW_KEEP)
    try:
        with engine.begin() as conn:
            raw = store.results_before(conn, cutoff)
            # Delete before writing the roll-ups: a node compacting concurrently
            # deletes fewer rows than it read and gives up.
            if store.delete_results_before(conn, cutoff) != len(raw):
                raise _Raced
            hours = _roll_up(raw)
            _merge_hours(conn, hours)
            pruned = store.delete_hours_before(conn, now - HOURS_KEEP)
    except (_Raced, IntegrityError):
        return "probe history: another node compacted it at the same time; nothing done"
    return (
        f"probe history: {len(raw)} results rolled into {len(hours)} hourly rows, "
        f"{pruned} hourly rows older than {HOURS_KEEP.days} days deleted"
    )


def _roll_up(raw: list[dict[str, Any]]) -> dict[tuple[str, str, datetime], Tally]:
    hours: dict[tuple[str, str, datetime], Tally] = {}
    for row in raw:
        key = (str(row["kind"]), str(row["target"]), slomath.hour_of(as_utc(row["at"])))
        hours.setdefault(key, Tally()).add(ok=bool(row["ok"]), latency_ms=row["latency_ms"])
    return hours


def _merge_hours(conn: Connection, hours: dict[tuple[str, str, datetime], Tally]) -> None:
    """Insert new hourly rows; add to existing ones (a probe stored late, say)."""
    if not hours:
        return
    stamps = [hour for _, _, hour in hours]
    existing = {
        (str(r["kind"]), str(r["target"]), as_utc(r["hour"])): r
        for r in store.hours_between(conn, min(stamps), max(stamps))
    }
    for (kind, target, hour), tally in hours.items():
        row = existing.get((kind, target, hour))
        if row is not None:
            tally.merge(_tally_of_hour(row))
        values = {
            "kind": kind,
            "target": target,
            "hour": hour,
            "probes": tally.count,
            "failures": tally.failures,
            "buckets": tally.buckets,
        }
        (store.insert_hour if row is None else store.replace_hour)(conn, values)


def _tally_of_hour(row: dict[str, Any]) -> Tally:
    return Tally(int(row["probes"]), int(row["failures"]), [int(n) for n in row["buckets"]])


def tallies(conn: Connection, *, since: datetime) -> dict[Key, Tally]:
    """Per target, every probe since ``since``: hourly rows starting at or after
    it, plus raw results at or after it. (A read other services compose into
    their own transaction.)"""
    return window_tallies(conn, starts={"": since})[""]


def window_tallies(conn: Connection, *, starts: dict[str, datetime]) -> dict[str, dict[Key, Tally]]:
    """`tallies` for several windows (name -> start) from one read of the history."""
    earliest = min(starts.values())
    result: dict[str, dict[Key, Tally]] = {name: {} for name in starts}
    for row in store.hours_since(conn, earliest):
        key, hour = (str(row["kind"]), str(row["target"])), as_utc(row["hour"])
        for name, since in starts.items():
            if hour >= since:
                result[name].setdefault(key, Tally()).merge(_tally_of_hour(row))
    for row in store.results_since(conn, earliest):
        key, at = (str(row["kind"]), str(row["target"])), as_utc(row["at"])
        for name, since in starts.items():
            if at >= since:
                tally = result[name].setdefault(key, Tally())
                tally.add(ok=bool(row["ok"]), latency_ms=row["latency_ms"])
    return result


def endpoints_tally(by_target: dict[Key, Tally]) -> Tally:
    """All endpoint probes together: what the SLO is measured on."""
    total = Tally()
    for (kind, _), tally in by_target.items():
        if kind == slomath.ENDPOINT:
            total.merge(tally)
    return total


def burn_rate(
    engine: Engine, *, window: timedelta, slo: float, now: datetime | None = None
) -> float | None:
    """Error-budget burn rate of all endpoint probes over the last ``window``
    against ``slo`` (percent, 99.9; or a fraction, 0.999): 1.0 spends exactly
    the budget, 2.0 twice as fast. None when no endpoint was probed then.
    """
    since = (now or utcnow()) - window
    with reading(engine) as conn:
        by_target = tallies(conn, since=since)
    return slomath.burn_rate(endpoints_tally(by_target), slo)


def metric_readings(engine: Engine, *, milliseconds: int = 2000) -> Readings:
    """The newest result per target and the last successful backup, in one read
    whose statements stop after ``milliseconds`` (a scrape must answer promptly)."""
    with reading(engine, milliseconds=milliseconds) as conn:
        latest = store.latest_results(conn)
        backup = leases.last_run(conn, BACKUP_JOB, ok=True)
    seen: set[Key] = set()
    unique = []
    for row in latest:  # two results of one target stored at the same instant: keep one
        key = (str(row["kind"]), str(row["target"]))
        if key not in seen:
            seen.add(key)
            unique.append(row)
    last_backup = None if backup is None else backup.finished_at or backup.started_at
    return Readings(unique, last_backup)
