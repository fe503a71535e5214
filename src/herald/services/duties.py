"""Cluster singletons: who holds which lease, and what the jobs they ran did."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from herald.domain.clock import utcnow
from herald.store import leases
from herald.store.leases import JobRun


def take_lease(engine: Engine, name: str, *, holder: str, ttl: float) -> bool:
    """Take or renew the cluster lease ``name``; True while ``holder`` has it."""
    with engine.begin() as conn:
        return leases.take_lease(conn, name, holder=holder, ttl=ttl, now=utcnow())


def drop_lease(engine: Engine, name: str, *, holder: str) -> None:
    with engine.begin() as conn:
        leases.drop_lease(conn, name, holder=holder)


def list_leases(engine: Engine) -> list[dict[str, Any]]:
    """Every lease with its holder; an expired lease shows ``holder`` None."""
    now = utcnow()
    with engine.begin() as conn:
        rows = leases.list_leases(conn)
    return [
        {
            "name": r.name,
            "holder": r.holder if r.expires_at and r.expires_at > now else None,
            "expires_at": r.expires_at,
        }
        for r in rows
    ]


def start_run(engine: Engine, job: str, *, node: str) -> int:
    with engine.begin() as conn:
        return leases.start_run(conn, job, node=node, now=utcnow())


def finish_run(engine: Engine, run_id: int, *, ok: bool, detail: str = "") -> None:
    with engine.begin() as conn:
        leases.finish_run(conn, run_id, ok=ok, detail=detail, now=utcnow())


def last_run(engine: Engine, job: str, *, ok: bool | None = None) -> JobRun | None:
    """The latest run of ``job``; ``ok=True`` for the latest successful one."""
    with engine.begin() as conn:
        return leases.last_run(conn, job, ok=ok)
