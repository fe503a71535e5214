"""What the database says about the cluster's health, for ``/metrics`` and ``herald check``.

`read_snapshot` is one short, read-only transaction with a time bound: a
scrape or a check must answer promptly even when the database does not, so
it is tried once (no failover retry loop) and its error is the caller's
signal that the database is down.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from herald.domain.clock import as_utc, utcnow
from herald.domain.nagios import HttpProbe, Observation
from herald.errors import DatabaseUnavailable, InvalidInput
from herald.services import health
from herald.services.nodes import ALIVE_SECONDS
from herald.store import monitoring as store
from herald.store.engine import make_engine

STATEMENT_MILLISECONDS = 2000
# A node silent for longer is no longer reported: by then it has been noticed
# (HeraldNodeLost), and one restarted under a new name (hostname-pid) is not
# reported lost forever.
NODE_REPORT_WINDOW = timedelta(hours=24)
PROBE_SECONDS = 5.0


@dataclass(frozen=True)
class CampaignOutbox:
    campaign_id: int
    name: str
    pending: int
    sending: int
    oldest_pending_age: float  # seconds the oldest due pending row has waited; 0 if none


@dataclass(frozen=True)
class NodeBeat:
    name: str
    roles: tuple[str, ...]
    state: str
    heartbeat_age: float
    alive: bool


@dataclass(frozen=True)
class RelayActivity:
    name: str
    enabled: bool
    state: str
    sent: int
    deferred: int
    failed: int
    latency_ms: float | None


@dataclass(frozen=True)
class Snapshot:
    """The cluster as the database shows it at one moment."""

    round_trip: float  # seconds for one SELECT 1
    campaigns: dict[str, int]
    outbox: list[CampaignOutbox]
    nodes: list[NodeBeat]
    relays: list[RelayActivity]

    def live(self, role: str) -> int:
        """How many nodes with ``role`` are alive and not draining."""
        return sum(1 for n in self.nodes if n.alive and n.state == "active" and role in n.roles)


def read_snapshot(engine: Engine, *, milliseconds: int = STATEMENT_MILLISECONDS) -> Snapshot:
    """Read campaigns, open deliveries, node heartbeats and relay reports in one
    read-only transaction whose statements each stop after ``milliseconds``.

    Raises SQLAlchemyError when the database cannot answer.
    """
    with engine.connect() as conn:
        conn.execution_options(sqlite_begin="DEFERRED")  # a reader takes no write lock
        with conn.begin():
            store.limit_statement_time(conn, milliseconds=milliseconds)
            started = time.perf_counter()
            store.ping(conn)
            round_trip = time.perf_counter() - started
            now = utcnow()
            counts = store.campaign_counts(conn)
            running = store.running_campaigns(conn)
            open_rows = store.open_deliveries(conn, now=now)
            beats = store.node_beats(conn, since=now - NODE_REPORT_WINDOW)
            relay_rows = store.relay_activity(conn)
    return Snapshot(
        round_trip=round_trip,
        campaigns=counts,
        outbox=_outbox(running, open_rows, now),
        nodes=[_beat(row, now) for row in beats],
        relays=[_relay(row) for row in relay_rows],
    )


def observe(engine: Engine) -> Observation:
    """What ``herald check`` judges: database usable (schema current), then the snapshot."""
    problem = health.database_problem(engine)
    if problem is not None:
        return Observation(database_problem=problem)
    try:
        snap = read_snapshot(engine)
    except SQLAlchemyError as exc:
        return Observation(database_problem=f"database query failed: {type(exc).__name__}")
    ages = [c.oldest_pending_age for c in snap.outbox]
    return Observation(
        db_seconds=snap.round_trip,
        running_campaigns=snap.campaigns.get("running", 0),
        live_workers=snap.live("worker"),
        pending=sum(c.pending + c.sending for c in snap.outbox),
        oldest_pending_age=max(ages, default=0.0),
        relay_states=tuple(
            (r.name, r.state) for r in snap.relays if r.enabled and r.state != "disabled"
        ),
    )


def with_probe(obs: Observation, probe: HttpProbe | None) -> Observation:
    """``obs`` with the ``--url`` answer added."""
    if probe is None:
        return obs
    return replace(obs, http=probe)


def probe_url(url: str, *, timeout: float = PROBE_SECONDS) -> HttpProbe:
    """GET ``url`` (a node's ``/readyz``, say) once; the answer's status and time.

    Never raises: an error is returned in the probe. Raises InvalidInput only
    for a URL that is not http:// or https://.
    """
    if not url.startswith(("http://", "https://")):
        raise InvalidInput(f"--url must be an http:// or https:// URL, not {url!r}")
    started = time.perf_counter()
    try:
        # Straight to the node, never through an HTTP proxy from the environment.
        # The scheme is checked above: no file:// or other handler can be reached.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=timeout) as answer:
            status = int(answer.status)
    except urllib.error.HTTPError as exc:
        return HttpProbe(url, exc.code, time.perf_counter() - started, _reason(exc))
    except (OSError, ValueError) as exc:
        return HttpProbe(url, None, None, str(getattr(exc, "reason", exc)))
    return HttpProbe(url, status, time.perf_counter() - started)


def _reason(exc: urllib.error.HTTPError) -> str | None:
    """The ``reason`` of a JSON error body (``/readyz`` says why it is not ready)."""
    try:
        body = json.loads(exc.read(2000) or b"{}")
    except (OSError, ValueError):
        return None
    reason = body.get("reason") or body.get("status") if isinstance(body, dict) else None
    return None if reason is None else str(reason)


def engine_for_check(url: str) -> Engine:
    """An engine on ``url`` that creates nothing: a missing SQLite file is reported,
    not made (a check must not leave an empty database behind).

    Raises DatabaseUnavailable.
    """
    path = make_url(url).database if url.startswith("sqlite") else None
    if path and path != ":memory:" and not Path(path).exists():
        raise DatabaseUnavailable(f"no database at {path}: run 'herald init'")
    return make_engine(url, pool_size=1)


def _outbox(
    running: dict[int, str], rows: list[dict[str, Any]], now: datetime
) -> list[CampaignOutbox]:
    by_id = {int(r["campaign_id"]): r for r in rows}
    result = []
    for campaign_id, name in sorted(running.items()):
        row = by_id.get(campaign_id, {})
        oldest = row.get("oldest_due")
        age = max(0.0, (now - as_utc(oldest)).total_seconds()) if oldest is not None else 0.0
        result.append(
            CampaignOutbox(
                campaign_id,
                name,
                int(row.get("pending") or 0),
                int(row.get("sending") or 0),
                age,
            )
        )
    return result


def _beat(row: dict[str, Any], now: datetime) -> NodeBeat:
    age = max(0.0, (now - as_utc(row["heartbeat_at"])).total_seconds())
    roles = tuple(r for r in str(row["roles"]).split(",") if r)
    return NodeBeat(str(row["name"]), roles, str(row["state"]), age, age <= ALIVE_SECONDS)


def _relay(row: dict[str, Any]) -> RelayActivity:
    state = str(row["state"]) if row["enabled"] else "disabled"
    latency = row["latency_ms"]
    return RelayActivity(
        str(row["name"]),
        bool(row["enabled"]),
        state,
        int(row["sent"]),
        int(row["deferred"]),
        int(row["failed"]),
        None if latency is None else float(latency),
    )
