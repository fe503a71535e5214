"""The status report behind ``herald status``, ``/status`` and ``/status.json``.

Per endpoint and per relay, for each window: probes, uptime %, error rate,
p50/p95/p99 and the error budget left against the SLO; the same over all
endpoints together (the SLO itself); the cluster's nodes and the relays'
stored circuit states; and an overall state from each target's newest result.

A public report (the status page) carries relay *names* only and no error
text (which may name hosts): only when the last failure happened.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from herald.domain import slo as slomath
from herald.domain.clock import as_utc, utcnow
from herald.domain.slo import Figures, Tally
from herald.services.nodes import ALIVE_SECONDS
from herald.services.probes import Key, endpoints_tally, reading, window_tallies
from herald.store import monitoring as monitoring_store
from herald.store import probes as store

# A target whose newest result is older than this is no longer probed (a
# removed relay, say): it still shows its history but does not set the state.
CURRENT = timedelta(hours=1)
NODE_WINDOW = timedelta(hours=24)


def status_report(
    engine: Engine,
    *,
    windows: list[str],
    slo: float,
    public: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The report as plain data (JSON-ready), read in one transaction.

    Raises InvalidInput for an unknown window name.
    """
    now = now or utcnow()
    spans = {name: slomath.parse_window(name) for name in windows}
    with reading(engine) as conn:
        per_window = window_tallies(conn, starts={n: now - span for n, span in spans.items()})
        latest = store.latest_results(conn)
        failures = store.latest_failures(conn)
        beats = monitoring_store.node_beats(conn, since=now - NODE_WINDOW)
        relays = monitoring_store.relay_activity(conn)
    targets = _targets(per_window, latest, failures, slo=slo, public=public)
    nodes = [_node(row, now) for row in beats]
    return {
        "generated_at": now.isoformat(),
        "slo_pct": slo,
        "windows": list(spans),
        "state": _overall(latest, now),
        "endpoints": {
            name: _figures(endpoints_tally(by_target), slo)
            for name, by_target in per_window.items()
        },
        "targets": targets,
        "node_counts": _node_counts(nodes),
        # Node names are host names by default: the public page shows counts only.
        "nodes": [] if public else nodes,
        "relays": [
            {"name": r["name"], "state": r["state"] if r["enabled"] else "disabled"} for r in relays
        ],
    }


def _targets(
    per_window: dict[str, dict[Key, Tally]],
    latest: list[dict[str, Any]],
    failures: list[dict[str, Any]],
    *,
    slo: float,
    public: bool,
) -> list[dict[str, Any]]:
    newest = {(str(r["kind"]), str(r["target"])): r for r in latest}
    failed = {(str(r["kind"]), str(r["target"])): r for r in failures}
    keys = set(newest).union(*(set(by_target) for by_target in per_window.values()))
    targets = []
    for kind, name in sorted(keys):
        last, fail = newest.get((kind, name)), failed.get((kind, name))
        targets.append(
            {
                "kind": kind,
                "name": name,
                "up": None if last is None else bool(last["ok"]),
                "last_probe_at": None if last is None else as_utc(last["at"]).isoformat(),
                "last_latency_ms": None if last is None else _ms(last["latency_ms"]),
                "last_error": _last_error(fail, public=public),
                "windows": {
                    window: _figures(by_target.get((kind, name), Tally()), slo)
                    for window, by_target in per_window.items()
                },
            }
        )
    return targets


def _last_error(row: dict[str, Any] | None, *, public: bool) -> dict[str, Any] | None:
    if row is None:
        return None
    error = {"at": as_utc(row["at"]).isoformat(), "http_status": row["http_status"]}
    if not public:
        error["error"] = row["error"]
    return error


def _figures(tally: Tally, slo: float) -> dict[str, Any]:
    figures: Figures = slomath.figures(tally, slo)
    return {
        key: (round(value, 4) if isinstance(value, float) else value)
        for key, value in asdict(figures).items()
    }


def _overall(latest: list[dict[str, Any]], now: datetime) -> str:
    """``operational`` (every current target up), ``degraded`` (some down), ``down``
    (every endpoint down), or ``unknown`` (nothing probed in the last hour)."""
    current = [r for r in latest if now - as_utc(r["at"]) <= CURRENT]
    if not current:
        return "unknown"
    endpoints = [r for r in current if r["kind"] == slomath.ENDPOINT]
    if endpoints and not any(r["ok"] for r in endpoints):
        return "down"
    return "operational" if all(r["ok"] for r in current) else "degraded"


def _node(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    age = max(0.0, (now - as_utc(row["heartbeat_at"])).total_seconds())
    return {
        "name": row["name"],
        "roles": [r for r in str(row["roles"]).split(",") if r],
        "state": row["state"],  # active | draining
        "alive": age <= ALIVE_SECONDS,
        "heartbeat_age_s": round(age, 1),
    }


def _node_counts(nodes: list[dict[str, Any]]) -> dict[str, int]:
    """Live nodes (active, recent heartbeat) and draining ones."""
    return {
        "live": sum(1 for n in nodes if n["alive"] and n["state"] == "active"),
        "draining": sum(1 for n in nodes if n["alive"] and n["state"] == "draining"),
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)
