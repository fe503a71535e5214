"""Maintenance jobs: tracking roll-up, purges of expired rows, database upkeep.

Each job is safe to run on several nodes at once (the scheduled run and a
manual ``herald maintenance run``): the roll-up guards its deletes, purges
delete what is expired whoever does it, and VACUUM/PRAGMA are idempotent.
Each returns a one-line summary, which ``job_runs`` keeps.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row

from herald.domain.clock import as_utc, utcnow
from herald.errors import Conflict
from herald.services import auth, idempotency, nodes, probes
from herald.store import auth as store_auth
from herald.store import leases
from herald.store import maintenance as store
from herald.store import tracking as store_tracking

log = logging.getLogger(__name__)

ROLL_UP_BATCH = 5000
JOB_RUNS_KEEP = timedelta(days=30)
NODES_KEEP_DAYS = 7.0


@dataclass(frozen=True)
class RollUp:
    """What a tracking roll-up did: raw events folded into daily counts."""

    events: int
    batches: int

    def summary(self) -> str:
        return f"rolled {self.events} tracking events up into daily counts"


def roll_up_tracking(
    engine: Engine, *, raw_days: float, now: datetime | None = None, batch: int = ROLL_UP_BATCH
) -> RollUp:
    """Fold tracking events older than ``raw_days`` into daily counts; delete them.

    1. Read the oldest ``batch`` events before the cutoff (by id).
    2. In the same transaction, delete events before the cutoff up to the
       last id read, and check that exactly those went (else another
       roll-up took them, or an old event arrived meanwhile: roll back).
    3. Add their counts per (campaign, UTC day, kind, URL) to
       ``tracking_daily`` and their (campaign, kind, delivery) to
       ``tracking_uniques``, so campaign reports read the same after.
    Repeats until nothing is older than the cutoff. Raises Conflict when a
    batch lost a race (nothing of that batch is changed).
    """
    cutoff = (now or utcnow()) - timedelta(days=raw_days)
    events = batches = 0
    while True:
        done = _roll_up_batch(engine, cutoff=cutoff, batch=batch)
        if not done:
            return RollUp(events=events, batches=batches)
        events, batches = events + done, batches + 1


def _roll_up_batch(engine: Engine, *, cutoff: datetime, batch: int) -> int:
    with engine.begin() as conn:
        rows = store_tracking.old_events(conn, before=cutoff, limit=batch)
        if rows:
            _fold(conn, rows, cutoff=cutoff)
    return len(rows)


def _fold(conn: Connection, rows: Sequence[Row[Any]], *, cutoff: datetime) -> None:
    """Steps 2 and 3 of ``roll_up_tracking`` for ``rows`` read in this transaction."""
    deleted = store_tracking.delete_old_events(conn, through_id=rows[-1].id, before=cutoff)
    if deleted != len(rows):
        raise Conflict(
            f"tracking roll-up: expected to fold {len(rows)} events, found {deleted}: "
            "another roll-up is running (nothing was changed)"
        )
    daily: Counter[tuple[int, Any, str, str]] = Counter(
        (r.campaign_id, as_utc(r.at).date(), r.kind, r.url or "") for r in rows
    )
    store_tracking.add_daily_counts(conn, dict(daily))
    store_tracking.add_uniques(conn, {(r.campaign_id, r.kind, r.delivery_id) for r in rows})


def purge_expired(engine: Engine, *, now: datetime | None = None) -> dict[str, int | str]:
    """Delete what nobody needs any more; returns counts per kind (and the probes summary).

    Idempotency keys past their day, job runs older than `JOB_RUNS_KEEP`
    (each job's latest run stays), cluster leases nobody renewed for
    `JOB_RUNS_KEEP`, login-failure records whose block and
    window have passed, nodes gone for `NODES_KEEP_DAYS`, and probe history
    (``services.probes.compact_history``). Each part is its own transaction.
    """
    now = now or utcnow()
    done: dict[str, int | str] = {"idempotency_keys": idempotency.purge(engine)}
    with engine.begin() as conn:
        done["job_runs"] = leases.prune_runs(conn, before=now - JOB_RUNS_KEEP, keep_last=1)
        done["cluster_leases"] = leases.purge_leases(conn, before=now - JOB_RUNS_KEEP)
    with engine.begin() as conn:
        done["auth_failures"] = store_auth.purge_failures(
            conn, now=now, window_start=now - auth.FAILURE_WINDOW
        )
    done["nodes"] = nodes.forget_old_nodes(engine, days=NODES_KEEP_DAYS)
    done["probes"] = probes.compact_history(engine, now=now)
    return done


def purge_summary(done: dict[str, int | str]) -> str:
    counts = ", ".join(f"{v} {k}" for k, v in done.items() if not isinstance(v, str))
    extra = "; ".join(v for v in done.values() if isinstance(v, str))
    return f"purged {counts}" + (f"; {extra}" if extra else "")


def optimise_database(engine: Engine) -> str:
    """PostgreSQL: VACUUM (ANALYZE) of the busy tables. SQLite: PRAGMA optimize and a
    WAL checkpoint (TRUNCATE). Returns a one-line summary. Runs outside any transaction.
    """
    if engine.dialect.name == "postgresql":
        tables = store.vacuum_analyze(engine)
        return f"VACUUM (ANALYZE) of {len(tables)} tables"
    frames, moved = store.optimise_sqlite(engine)
    if frames < 0:
        return "PRAGMA optimize; WAL checkpoint could not complete (readers busy), will retry"
    return f"PRAGMA optimize; WAL checkpoint moved {moved} of {frames} frames and truncated the log"
