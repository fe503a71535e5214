"""Probe results and their hourly roll-ups (``probe_results``, ``probe_hours``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, delete, func, insert, select, update

from herald.store.tables import probe_hours, probe_results


def insert_results(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Store probe results (kind, target, at, ok, latency_ms, error, http_status)."""
    if rows:
        conn.execute(insert(probe_results), rows)


def results_since(conn: Connection, since: datetime) -> list[dict[str, Any]]:
    """Kind, target, at, ok and latency of every raw result at or after ``since``."""
    return _results(conn, probe_results.c.at >= since)


def results_before(conn: Connection, cutoff: datetime) -> list[dict[str, Any]]:
    """Kind, target, at, ok and latency of every raw result older than ``cutoff``."""
    return _results(conn, probe_results.c.at < cutoff)


def _results(conn: Connection, when: ColumnElement[bool]) -> list[dict[str, Any]]:
    columns = ("kind", "target", "at", "ok", "latency_ms")
    rows = conn.execute(select(*(probe_results.c[c] for c in columns)).where(when)).mappings()
    return [dict(r) for r in rows]


def delete_results_before(conn: Connection, cutoff: datetime) -> int:
    """Delete raw results older than ``cutoff``; how many went.

    Side effect: a concurrent compaction blocks here on PostgreSQL until the
    first commits, then finds fewer rows (its caller checks the count).
    """
    return conn.execute(delete(probe_results).where(probe_results.c.at < cutoff)).rowcount


def latest_results(conn: Connection) -> list[dict[str, Any]]:
    """The newest raw result of each target (kind, target, at, ok, latency_ms, http_status)."""
    return _newest_per_target(conn, ("ok", "latency_ms", "http_status"))


def latest_failures(conn: Connection) -> list[dict[str, Any]]:
    """The newest failed raw result of each target (kind, target, at, error, http_status)."""
    return _newest_per_target(conn, ("error", "http_status"), only=probe_results.c.ok.is_(False))


def _newest_per_target(
    conn: Connection, columns: tuple[str, ...], *, only: ColumnElement[bool] | None = None
) -> list[dict[str, Any]]:
    """Kind, target, at and ``columns`` of each target's newest raw result (among ``only``)."""
    newest = select(
        probe_results.c.kind,
        probe_results.c.target,
        func.max(probe_results.c.at).label("at"),
    ).group_by(probe_results.c.kind, probe_results.c.target)
    if only is not None:
        newest = newest.where(only)
    latest = newest.subquery()
    query = (
        select(*(probe_results.c[c] for c in ("kind", "target", "at", *columns)))
        .join(
            latest,
            and_(
                latest.c.kind == probe_results.c.kind,
                latest.c.target == probe_results.c.target,
                latest.c.at == probe_results.c.at,
            ),
        )
        .order_by(probe_results.c.kind, probe_results.c.target, probe_results.c.id.desc())
    )
    if only is not None:
        query = query.where(only)
    return [dict(r) for r in conn.execute(query).mappings()]


def hours_since(conn: Connection, since: datetime) -> list[dict[str, Any]]:
    """Every hourly roll-up whose hour starts at or after ``since``."""
    rows = conn.execute(select(probe_hours).where(probe_hours.c.hour >= since)).mappings()
    return [dict(r) for r in rows]


def hours_between(conn: Connection, first: datetime, last: datetime) -> list[dict[str, Any]]:
    """Every hourly roll-up whose hour is in ``[first, last]``."""
    rows = conn.execute(
        select(probe_hours).where(probe_hours.c.hour >= first, probe_hours.c.hour <= last)
    ).mappings()
    return [dict(r) for r in rows]


def insert_hour(conn: Connection, row: dict[str, Any]) -> None:
    """Store a new hourly roll-up (kind, target, hour, probes, failures, buckets).

    Raises IntegrityError when another compaction stored the same hour first.
    """
    conn.execute(insert(probe_hours).values(**row))


def replace_hour(conn: Connection, row: dict[str, Any]) -> None:
    """Overwrite the counts of an existing hourly roll-up with ``row``'s."""
    conn.execute(
        update(probe_hours)
        .where(
            probe_hours.c.kind == row["kind"],
            probe_hours.c.target == row["target"],
            probe_hours.c.hour == row["hour"],
        )
        .values(probes=row["probes"], failures=row["failures"], buckets=row["buckets"])
    )


def delete_hours_before(conn: Connection, cutoff: datetime) -> int:
    """Delete hourly roll-ups of hours starting before ``cutoff``; how many went."""
    return conn.execute(delete(probe_hours).where(probe_hours.c.hour < cutoff)).rowcount
