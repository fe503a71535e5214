"""Cluster singleton leases and the record of the jobs they run.

A lease is one row per job name. Taking it is a guarded ``UPDATE``: a node
gets the row only if it already holds it or the holder's lease has expired,
so two nodes racing for a free lease cannot both win (the loser's update
matches no row). No lock is held across the job itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, case, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from herald.domain.clock import as_utc
from herald.store.tables import cluster_leases, job_runs


def take_lease(conn: Connection, name: str, *, holder: str, ttl: float, now: datetime) -> bool:
    """Take or renew lease ``name`` for ``holder`` until ``now + ttl``; True if held.

    Side effect: creates the lease row on first use; bumps ``epoch`` when the
    holder changes. Another node may be renewing the same row at this moment:
    the ``WHERE`` lets exactly one of us match while the lease is live.
    """
    expires = now + timedelta(seconds=ttl)
    took = conn.execute(
        update(cluster_leases)
        .where(
            cluster_leases.c.name == name,
            or_(
                cluster_leases.c.holder == holder,
                cluster_leases.c.holder.is_(None),
                cluster_leases.c.expires_at < now,
            ),
        )
        .values(
            holder=holder,
            expires_at=expires,
            epoch=case(
                (cluster_leases.c.holder == holder, cluster_leases.c.epoch),
                else_=cluster_leases.c.epoch + 1,
            ),
        )
    ).rowcount
    if took:
        return True
    exists = conn.execute(
        select(cluster_leases.c.name).where(cluster_leases.c.name == name)
    ).first()
    if exists:
        return False
    try:
        with conn.begin_nested():  # a node creating the same row wins; we then do not hold it
            conn.execute(
                insert(cluster_leases).values(name=name, holder=holder, expires_at=expires, epoch=1)
            )
    except IntegrityError:
        return False
    return True


def drop_lease(conn: Connection, name: str, *, holder: str) -> None:
    """Give lease ``name`` up if ``holder`` has it (a draining node lets another take over)."""
    conn.execute(
        update(cluster_leases)
        .where(cluster_leases.c.name == name, cluster_leases.c.holder == holder)
        .values(holder=None, expires_at=None)
    )


@dataclass(frozen=True)
class LeaseHolder:
    name: str
    holder: str | None
    expires_at: datetime | None


def list_leases(conn: Connection) -> list[LeaseHolder]:
    rows = conn.execute(select(cluster_leases).order_by(cluster_leases.c.name)).all()
    return [
        LeaseHolder(r.name, r.holder, as_utc(r.expires_at) if r.expires_at else None) for r in rows
    ]


def start_run(conn: Connection, job: str, *, node: str, now: datetime) -> int:
    """Record that ``node`` started ``job``; returns the run id."""
    result = conn.execute(insert(job_runs).values(job=job, node=node, started_at=now, detail=""))
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def finish_run(conn: Connection, run_id: int, *, ok: bool, detail: str, now: datetime) -> None:
    conn.execute(
        update(job_runs)
        .where(job_runs.c.id == run_id)
        .values(finished_at=now, ok=ok, detail=detail[:10_000])
    )


@dataclass(frozen=True)
class JobRun:
    job: str
    node: str
    started_at: datetime
    finished_at: datetime | None
    ok: bool | None
    detail: str


def last_run(conn: Connection, job: str, *, ok: bool | None = None) -> JobRun | None:
    """The latest run of ``job`` (only successful ones with ``ok=True``, failed with False)."""
    query = select(job_runs).where(job_runs.c.job == job)
    if ok is not None:
        query = query.where(job_runs.c.ok.is_(ok))
    row = conn.execute(query.order_by(job_runs.c.started_at.desc()).limit(1)).first()
    if row is None:
        return None
    return JobRun(
        job=row.job,
        node=row.node,
        started_at=as_utc(row.started_at),
        finished_at=as_utc(row.finished_at) if row.finished_at else None,
        ok=row.ok,
        detail=row.detail,
    )


def prune_runs(conn: Connection, *, before: datetime, keep_last: int = 1) -> int:
    """Delete finished runs started before ``before``, keeping each job's latest ``keep_last``.

    Returns the number of rows deleted.
    """
    jobs = [r.job for r in conn.execute(select(job_runs.c.job).distinct())]
    deleted = 0
    for job in jobs:
        keep = [
            r.id
            for r in conn.execute(
                select(job_runs.c.id)
                .where(job_runs.c.job == job)
                .order_by(job_runs.c.started_at.desc())
                .limit(keep_last)
            )
        ]
        deleted += conn.execute(
            delete(job_runs).where(
                and_(
                    job_runs.c.job == job,
                    job_runs.c.started_at < before,
                    job_runs.c.finished_at.is_not(None),
                    job_runs.c.id.not_in(keep),
                )
            )
        ).rowcount
    return deleted


def purge_leases(conn: Connection, *, before: datetime) -> int:
    """Delete lease rows nobody has renewed since ``before`` (a duty no longer configured).

    Harmless if the duty comes back: ``take_lease`` creates the row again.
    Returns the number of rows deleted.
    """
    stale = or_(cluster_leases.c.expires_at.is_(None), cluster_leases.c.expires_at < before)
    return conn.execute(delete(cluster_leases).where(stale)).rowcount
