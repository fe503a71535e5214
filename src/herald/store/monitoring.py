"""Read-only queries behind ``/metrics`` and ``herald check``.

Every statement here only reads; each is an aggregate over an index
(``deliveries (campaign_id, status)``) or a small table (campaigns, nodes,
relays), so a scrape every few seconds from every node stays cheap.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, func, select, text

from herald.store.tables import campaigns, deliveries, nodes, relays


def limit_statement_time(conn: Connection, *, milliseconds: int) -> None:
    """Bound every later statement of this transaction (PostgreSQL; SQLite readers
    in WAL mode never wait for writers, so it needs no bound).

    Side effect: ``SET LOCAL``, which ends with the transaction.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"SET LOCAL statement_timeout = {int(milliseconds)}"))


def ping(conn: Connection) -> None:
    """One round trip to the server."""
    conn.execute(text("SELECT 1"))


def campaign_counts(conn: Connection) -> dict[str, int]:
    """How many campaigns are in each status (statuses with none are absent);
    transactional carriers are not counted."""
    query = select(campaigns.c.status, func.count()).where(campaigns.c.kind == "campaign")
    rows = conn.execute(query.group_by(campaigns.c.status))
    return {str(status): int(n) for status, n in rows}


def running_campaigns(conn: Connection) -> dict[int, str]:
    """Id → name of every running campaign."""
    rows = conn.execute(
        select(campaigns.c.id, campaigns.c.name).where(campaigns.c.status == "running")
    )
    return {int(cid): str(name) for cid, name in rows}


def open_deliveries(conn: Connection, *, now: datetime) -> list[dict[str, Any]]:
    """Per running campaign with open work: pending and sending rows, and the
    ``due_at`` of the earliest pending row already due (None when none is due).
    Transactional messages count under their carrier (a running ``tx:…`` campaign).
    """
    pending = deliveries.c.status == "pending"
    carrier = func.coalesce(deliveries.c.campaign_id, deliveries.c.tx_campaign_id)
    rows = conn.execute(
        select(
            carrier.label("campaign_id"),
            func.sum(case((pending, 1), else_=0)).label("pending"),
            func.sum(case((deliveries.c.status == "sending", 1), else_=0)).label("sending"),
            func.min(
                case((pending & (deliveries.c.due_at <= now), deliveries.c.due_at), else_=None)
            ).label("oldest_due"),
        )
        .join(campaigns, campaigns.c.id == carrier)
        .where(campaigns.c.status == "running", deliveries.c.status.in_(["pending", "sending"]))
        .group_by(carrier)
    ).mappings()
    return [dict(r) for r in rows]


def node_beats(conn: Connection, *, since: datetime) -> list[dict[str, Any]]:
    """Name, roles, state and last heartbeat of every node not marked gone that
    heartbeated at or after ``since``."""
    rows = conn.execute(
        select(nodes.c.name, nodes.c.roles, nodes.c.state, nodes.c.heartbeat_at)
        .where(nodes.c.state != "gone", nodes.c.heartbeat_at >= since)
        .order_by(nodes.c.name)
    ).mappings()
    return [dict(r) for r in rows]


def relay_activity(conn: Connection) -> list[dict[str, Any]]:
    """What nodes last reported about each stored relay (no address, no credentials)."""
    rows = conn.execute(
        select(
            relays.c.name,
            relays.c.enabled,
            relays.c.state,
            relays.c.sent,
            relays.c.deferred,
            relays.c.failed,
            relays.c.latency_ms,
        ).order_by(relays.c.name)
    ).mappings()
    return [dict(r) for r in rows]
