"""Maintenance jobs as cluster duties, and running them now (``herald maintenance run``).

Each job is a duty named ``maintenance.<job>`` (its runs in ``job_runs``).
A manual run is recorded under the same name, by the node name of the
command, so ``herald maintenance ls`` shows whichever ran last.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from sqlalchemy.exc import SQLAlchemyError

from herald.cluster import Duty
from herald.domain.clock import utcnow
from herald.domain.schedules import Schedule, parse_interval
from herald.errors import HeraldError, NotFound
from herald.runtime import Runtime
from herald.services import duties
from herald.services import maintenance as svc
from herald.store.leases import JobRun


@dataclass(frozen=True)
class Job:
    """One maintenance job: its name, what it does, how often, and how to run it."""

    name: str
    description: str
    interval_setting: str  # the Settings field holding its interval
    run: Callable[[Runtime], str]

    @property
    def duty_name(self) -> str:
        return f"maintenance.{self.name}"

    def schedule(self, runtime: Runtime) -> Schedule:
        text = str(getattr(runtime.settings, self.interval_setting))
        return Schedule(text=text, interval=parse_interval(text))


def _tracking(runtime: Runtime) -> str:
    return svc.roll_up_tracking(
        runtime.engine, raw_days=runtime.settings.tracking_raw_days
    ).summary()


def _purge(runtime: Runtime) -> str:
    return svc.purge_summary(svc.purge_expired(runtime.engine))


def _database(runtime: Runtime) -> str:
    return svc.optimise_database(runtime.engine)


JOBS = (
    Job(
        "tracking",
        "roll tracking events older than HERALD_TRACKING_RAW_DAYS up into daily counts",
        "maintenance_tracking_interval",
        _tracking,
    ),
    Job(
        "purge",
        "delete expired idempotency keys, old job runs, login failures, nodes, probe history",
        "maintenance_purge_interval",
        _purge,
    ),
    Job(
        "database",
        "VACUUM (ANALYZE) on PostgreSQL; PRAGMA optimize and a WAL checkpoint on SQLite",
        "maintenance_database_interval",
        _database,
    ),
)


def find_jobs(name: str | None) -> list[Job]:
    """The job called ``name``, or every job for None. Raises NotFound for an unknown name."""
    if name is None:
        return list(JOBS)
    for job in JOBS:
        if job.name == name:
            return [job]
    raise NotFound(f"no maintenance job {name!r} (jobs: {', '.join(j.name for j in JOBS)})")


@dataclass(frozen=True)
class Outcome:
    job: str
    ok: bool
    detail: str


def run_now(runtime: Runtime, name: str | None = None) -> list[Outcome]:
    """Run the job ``name`` (every job for None) here and now; record each in ``job_runs``.

    A job that fails does not stop the next; its error is in its outcome.
    Raises NotFound for an unknown job name.
    """
    outcomes = []
    for job in find_jobs(name):
        run_id = None
        with contextlib.suppress(SQLAlchemyError):
            run_id = duties.start_run(runtime.engine, job.duty_name, node=runtime.node_name)
        try:
            ok, detail = True, job.run(runtime)
        except (HeraldError, SQLAlchemyError, OSError) as exc:
            message = exc.message if isinstance(exc, HeraldError) else str(exc)
            ok, detail = False, f"{type(exc).__name__}: {message.strip().splitlines()[0]}"
        if run_id is not None:
            with contextlib.suppress(SQLAlchemyError):
                duties.finish_run(runtime.engine, run_id, ok=ok, detail=detail)
        outcomes.append(Outcome(job.name, ok, detail))
    return outcomes


def last_runs(runtime: Runtime) -> list[tuple[Job, JobRun | None]]:
    """Every job with its latest recorded run (None: never ran)."""
    return [(job, duties.last_run(runtime.engine, job.duty_name)) for job in JOBS]


def maintenance_duties(runtime: Runtime, *, started: datetime | None = None) -> list[Duty]:
    """One duty per job, each at its configured interval.

    A job that never ran waits ``min(interval, FIRST_RUN_DELAY)`` after this
    node's start (``Schedule.next_due``), so short-lived nodes run nothing.
    """
    since = started or utcnow()
    return [
        Duty(
            job.duty_name,
            _in_thread(job, runtime),
            next_due=partial(job.schedule(runtime).next_due, started=since),
            record=True,
        )
        for job in JOBS
    ]


def _in_thread(job: Job, runtime: Runtime) -> Callable[[], Awaitable[str]]:
    async def run() -> str:
        return await asyncio.to_thread(job.run, runtime)

    return run
