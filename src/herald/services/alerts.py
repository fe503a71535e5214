"""Alert use cases: read what the rules judge, store alert states, list and silence alerts.

The engine that runs the rules on a schedule is `herald.ops.alerts`; this
module is its (and the CLI's and API's) way to the database.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from herald.domain.alerting import NodeSeen, RelaySeen, rule_named
from herald.domain.alertstate import RESOLVED, AlertState, Silence
from herald.domain.clock import as_utc, utcnow
from herald.errors import InvalidInput, NotFound
from herald.services.nodes import ALIVE_SECONDS
from herald.store import alerts as store
from herald.store import monitoring

STATEMENT_MILLISECONDS = 5000
# Nodes silent for longer are no longer judged (see services.monitoring).
NODE_WINDOW = timedelta(hours=24)
HISTORY = timedelta(days=30)


@dataclass(frozen=True)
class ClusterReading:
    """Raw figures for one evaluation, read in one transaction."""

    nodes: tuple[NodeSeen, ...]
    stats: dict[str, dict[str, Any]]  # node name → its heartbeat stats
    running_campaigns: int
    pending_due: int
    oldest_pending_age: float
    relays: tuple[RelaySeen, ...]
    relay_totals: dict[str, int]  # sent, deferred, failed over every relay, ever
    server: str | None
    alerts: list[AlertState]
    silences: list[Silence]


def read_cluster(engine: Engine) -> ClusterReading:
    """Everything the rules need from the database, plus the stored alerts and silences.

    Raises SQLAlchemyError when the database cannot answer.
    """
    with engine.begin() as conn:
        monitoring.limit_statement_time(conn, milliseconds=STATEMENT_MILLISECONDS)
        now = utcnow()
        beats = monitoring.node_beats(conn, since=now - NODE_WINDOW)
        stats = store.node_stats(conn, since=now - NODE_WINDOW)
        running = monitoring.running_campaigns(conn)
        open_rows = monitoring.open_deliveries(conn, now=now)
        relay_rows = monitoring.relay_activity(conn)
        server = store.server_identity(conn)
        stored = store.active_alerts(conn)
        silences = store.list_silences(conn, now=now)
    due = [r for r in open_rows if r["oldest_due"] is not None]
    oldest = min((as_utc(r["oldest_due"]) for r in due), default=None)
    enabled = [r for r in relay_rows if r["enabled"] and r["state"] != "disabled"]
    return ClusterReading(
        nodes=tuple(_node(r, now) for r in beats),
        stats=stats,
        running_campaigns=len(running),
        pending_due=sum(int(r["pending"] or 0) for r in due),
        oldest_pending_age=0.0 if oldest is None else max(0.0, (now - oldest).total_seconds()),
        relays=tuple(RelaySeen(str(r["name"]), str(r["state"])) for r in enabled),
        relay_totals={
            k: sum(int(r[k]) for r in relay_rows) for k in ("sent", "deferred", "failed")
        },
        server=server,
        alerts=[_state(r) for r in stored],
        silences=[_silence(r) for r in silences],
    )


def save_states(
    engine: Engine,
    states: list[AlertState],
    *,
    node: str,
    replace_all: bool = False,
    prune: bool = False,
) -> list[AlertState]:
    """Store ``states`` (insert new ones, update known ones); returns them with ids.

    ``replace_all``: the caller kept state in memory through an outage, so any
    other active row is stale and is marked resolved. ``prune``: also delete
    alerts resolved and silences expired more than 30 days ago.
    """
    now = utcnow()
    saved = []
    with engine.begin() as conn:
        for state in states:
            values = _row(state, node=node)
            if state.id is None or not store.update_alert(conn, state.id, values):
                state = replace(state, id=store.insert_alert(conn, values))
            saved.append(state)
        if replace_all:
            store.resolve_others(conn, [s.id for s in saved if s.id is not None], now=now)
        if prune:
            store.prune_resolved(conn, before=now - HISTORY)
            store.prune_silences(conn, before=now - HISTORY)
    return saved


def list_alerts(engine: Engine, *, hours: float = 24.0) -> list[dict[str, Any]]:
    """Active alerts and those resolved in the last ``hours``, newest first."""
    with engine.begin() as conn:
        rows = store.recent_alerts(conn, resolved_since=utcnow() - timedelta(hours=hours))
    return [_public(r) for r in rows]


def list_silences(engine: Engine) -> list[dict[str, Any]]:
    """Silences in force, soonest to expire first."""
    with engine.begin() as conn:
        return store.list_silences(conn, now=utcnow())


def add_silence(
    engine: Engine,
    rule: str,
    *,
    key: str | None,
    seconds: float,
    comment: str = "",
    created_by: str = "",
) -> dict[str, Any]:
    """Silence ``rule`` (one ``key``, or all) for ``seconds``; returns the silence.

    Raises InvalidInput for an unknown rule or a duration that is not positive.
    """
    known = rule_named(rule)
    if known is None:
        raise InvalidInput(f"no alert rule named {rule!r}")
    if not 0 < seconds <= 366 * 86400:
        raise InvalidInput("a silence lasts more than 0 s and at most a year")
    now = utcnow()
    values = {
        "rule": known,
        "key": key or None,
        "expires_at": now + timedelta(seconds=seconds),
        "comment": comment[:2000],
        "created_by": created_by[:320],
        "created_at": now,
    }
    with engine.begin() as conn:
        silence_id = store.insert_silence(conn, values)
    return {"id": silence_id, **values}


def remove_silence(engine: Engine, silence_id: int) -> None:
    """End silence ``silence_id`` now. Raises NotFound when there is none."""
    with engine.begin() as conn:
        if not store.delete_silence(conn, silence_id):
            raise NotFound(f"no silence {silence_id}")


def burn_rates(engine: Engine, *, slo: float) -> tuple[float | None, float | None]:
    """The error-budget burn rate over 1 h and 6 h, from the probes' history; (None,
    None) when this version has no probes."""
    burn = _optional("herald.services.probes", "burn_rate")
    if burn is None:
        return None, None
    fast = burn(engine, window=timedelta(hours=1), slo=slo)
    slow = burn(engine, window=timedelta(hours=6), slo=slo)
    return fast, slow


def complaints_since(engine: Engine, *, since: datetime) -> tuple[int, int] | None:
    """(complaints, messages sent) since ``since``; None when complaints are not recorded."""
    rate = _optional("herald.services.complaints", "complaint_rate")
    if rate is None:
        return None
    complaints, sent = rate(engine, since=since)
    return int(complaints), int(sent)


def _optional(module: str, name: str) -> Callable[..., Any] | None:
    """A function another part of Herald provides, or None when it is absent."""
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return found if callable(found) else None


def _node(row: dict[str, Any], now: datetime) -> NodeSeen:
    age = max(0.0, (now - as_utc(row["heartbeat_at"])).total_seconds())
    roles = tuple(r for r in str(row["roles"]).split(",") if r)
    return NodeSeen(str(row["name"]), roles, str(row["state"]), age, age <= ALIVE_SECONDS)


def _state(row: dict[str, Any]) -> AlertState:
    def when(name: str) -> datetime | None:
        value = row[name]
        return None if value is None else as_utc(value)

    return AlertState(
        rule=str(row["rule"]),
        key=str(row["key"]),
        severity=str(row["severity"]),
        summary=str(row["summary"]),
        status=str(row["status"]),
        started_at=as_utc(row["started_at"]),
        details=dict(row["details"] or {}),
        fired_at=when("fired_at"),
        notified_at=when("notified_at"),
        resolved_at=when("resolved_at"),
        id=int(row["id"]),
    )


def _silence(row: dict[str, Any]) -> Silence:
    return Silence(int(row["id"]), str(row["rule"]), row["key"], as_utc(row["expires_at"]))


def _row(state: AlertState, *, node: str) -> dict[str, Any]:
    return {
        "rule": state.rule,
        "key": state.key,
        "status": state.status,
        "severity": state.severity,
        "summary": state.summary,
        "details": state.details,
        "node": node,
        "started_at": state.started_at,
        "fired_at": state.fired_at,
        "notified_at": state.notified_at,
        "resolved_at": state.resolved_at,
    }


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "active": row["status"] != RESOLVED}
