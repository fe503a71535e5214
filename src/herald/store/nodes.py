"""Cluster membership: one row per node process, kept fresh by heartbeats."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select, text, update

from herald.store.dialect import upsert
from herald.store.tables import nodes


def register(conn: Connection, values: dict[str, Any], *, now: datetime) -> None:
    """Insert or replace this node's row (a restarted node with the same name takes it over)."""
    row = {
        **values,
        "state": "active",
        "drain_requested": False,
        "started_at": now,
        "heartbeat_at": now,
    }
    conn.execute(upsert(conn, nodes, row, key=["name"]))


def heartbeat(
    conn: Connection,
    name: str,
    *,
    state: str,
    now: datetime,
    stats: dict[str, Any] | None = None,
) -> bool | None:
    """Refresh this node's heartbeat and state (and, when given, its ``stats``).

    Returns whether a drain was requested, or None when the row is gone
    (deleted by an operator): the caller registers again.
    """
    extra = {} if stats is None else {"stats": stats}
    row = conn.execute(
        update(nodes)
        .where(nodes.c.name == name)
        .values(heartbeat_at=now, state=state, **extra)
        .returning(nodes.c.drain_requested)
    ).first()
    return None if row is None else bool(row.drain_requested)


def mark_gone(conn: Connection, name: str, *, now: datetime) -> None:
    conn.execute(update(nodes).where(nodes.c.name == name).values(state="gone", heartbeat_at=now))


def request_drain(conn: Connection, name: str) -> bool:
    """Ask node ``name`` to drain; False if there is no such node."""
    result = conn.execute(
        update(nodes)
        .where(nodes.c.name == name, nodes.c.state != "gone")
        .values(drain_requested=True)
    )
    return result.rowcount == 1


def list_nodes(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(select(nodes).order_by(nodes.c.name)).mappings()]


def list_versions(conn: Connection) -> list[dict[str, Any]]:
    """Name, version, state and heartbeat of every node, read only from columns
    every schema revision has, so a newer Herald can list the nodes of a
    database it still has to migrate (``herald migrate --check``)."""
    query = select(nodes.c.name, nodes.c.version, nodes.c.state, nodes.c.heartbeat_at)
    return [dict(r) for r in conn.execute(query.order_by(nodes.c.name)).mappings()]


def forget_gone(conn: Connection, *, before: datetime) -> int:
    """Delete rows of nodes gone (or silent) since before ``before``."""
    result = conn.execute(delete(nodes).where(nodes.c.heartbeat_at < before))
    return result.rowcount


def fence(conn: Connection, application_names: list[str]) -> int:
    """End the database sessions of the given nodes (PostgreSQL; elsewhere a no-op).

    A node frozen in the middle of a statement can hold row locks that no
    server timeout releases; ending its sessions lets the live nodes take its
    work over. Returns how many sessions were ended.
    """
    if conn.dialect.name != "postgresql" or not application_names:
        return 0
    ended = conn.execute(
        text(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = ANY(:names) AND pid <> pg_backend_pid()"
        ),
        {"names": application_names},
    ).scalar()
    return int(ended or 0)
