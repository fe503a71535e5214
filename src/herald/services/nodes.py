"""Cluster membership use cases: register, heartbeat, list, drain."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from herald import __version__
from herald.domain.clock import as_utc, utcnow
from herald.errors import NotFound
from herald.store import nodes as store
from herald.store.engine import application_name

ALIVE_SECONDS = 5.0


def register_node(engine: Engine, name: str, *, roles: str) -> None:
    """Record this process as an active node (replacing a previous row of that name)."""
    values = {
        "name": name,
        "roles": roles,
        "version": __version__,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    with engine.begin() as conn:
        store.register(conn, values, now=utcnow())


def heartbeat(
    engine: Engine,
    name: str,
    *,
    draining: bool,
    roles: str,
    stats: dict[str, Any] | None = None,
) -> bool:
    """Refresh the heartbeat (and the node's ``stats``, read by the alert rules);
    returns True when an operator asked this node to drain."""
    state = "draining" if draining else "active"
    with engine.begin() as conn:
        requested = store.heartbeat(conn, name, state=state, now=utcnow(), stats=stats)
    if requested is None:
        register_node(engine, name, roles=roles)
        return False
    return requested


def leave(engine: Engine, name: str) -> None:
    """Mark this node gone (end of a drain)."""
    with engine.begin() as conn:
        store.mark_gone(conn, name, now=utcnow())


def request_drain(engine: Engine, name: str) -> None:
    """Ask a node to drain. Raises NotFound for an unknown or gone node."""
    with engine.begin() as conn:
        if not store.request_drain(conn, name):
            raise NotFound(f"no live node named {name!r}")


def list_nodes(engine: Engine) -> list[dict[str, Any]]:
    """Every known node with ``alive``: heartbeat seen recently and not gone."""
    now = utcnow()
    with engine.begin() as conn:
        rows = store.list_nodes(conn)
    for row in rows:
        age = (now - as_utc(row["heartbeat_at"])).total_seconds()
        row["heartbeat_age_s"] = round(age, 1)
        row["alive"] = row["state"] != "gone" and age <= ALIVE_SECONDS
    return rows


def live_versions(engine: Engine) -> list[dict[str, str]]:
    """Name and version of every live node (as ``list_nodes`` counts them alive),
    read from columns every schema has: works on a database behind this code."""
    now = utcnow()
    with engine.begin() as conn:
        rows = store.list_versions(conn)
    return [
        {"name": r["name"], "version": r["version"]}
        for r in rows
        if r["state"] != "gone"
        and (now - as_utc(r["heartbeat_at"])).total_seconds() <= ALIVE_SECONDS
    ]


def forget_old_nodes(engine: Engine, *, days: float = 7.0) -> int:
    with engine.begin() as conn:
        return store.forget_gone(conn, before=utcnow() - timedelta(days=days))


def count_live(engine: Engine, *, role: str) -> int:
    """How many nodes with ``role`` are alive (at least 1: the caller is one)."""
    live = [n for n in list_nodes(engine) if n["alive"] and role in n["roles"].split(",")]
    return max(1, len(live))


def fence_stale(engine: Engine, *, me: str, stale_after: float) -> list[str]:
    """End the database sessions of nodes silent for ``stale_after`` seconds but not gone.

    Their leases have run out by then; a frozen node that wakes finds its
    sessions closed and reconnects, and its late acks are refused by the
    lease guard. Node ``me`` (the caller) is never fenced. Returns the names
    of the nodes fenced.
    """
    now = utcnow()
    with engine.begin() as conn:
        stale = [
            row["name"]
            for row in store.list_nodes(conn)
            if row["state"] != "gone"
            and row["name"] != me
            and (now - as_utc(row["heartbeat_at"])).total_seconds() > stale_after
        ]
        if stale and store.fence(conn, [application_name(n) for n in stale]):
            return stale
    return []
