"""Alert state, silences, and the readings only the alert rules need.

Every statement that writes says so; the rest only read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from herald.store.tables import alert_silences, alerts, nodes


def active_alerts(conn: Connection) -> list[dict[str, Any]]:
    """Every pending or firing alert, oldest first."""
    rows = conn.execute(
        select(alerts).where(alerts.c.status != "resolved").order_by(alerts.c.id)
    ).mappings()
    return [dict(r) for r in rows]


def recent_alerts(conn: Connection, *, resolved_since: datetime) -> list[dict[str, Any]]:
    """Every active alert, and those resolved at or after ``resolved_since``; newest first."""
    rows = conn.execute(
        select(alerts)
        .where((alerts.c.status != "resolved") | (alerts.c.resolved_at >= resolved_since))
        .order_by(alerts.c.id.desc())
    ).mappings()
    return [dict(r) for r in rows]


def insert_alert(conn: Connection, values: dict[str, Any]) -> int:
    """Store a new alert instance; returns its id. Side effect: one row inserted."""
    return int(conn.execute(insert(alerts).values(**values).returning(alerts.c.id)).scalar_one())


def update_alert(conn: Connection, alert_id: int, values: dict[str, Any]) -> bool:
    """Overwrite alert ``alert_id``'s state; False when the row is gone (pruned)."""
    result = conn.execute(update(alerts).where(alerts.c.id == alert_id).values(**values))
    return result.rowcount == 1


def resolve_others(conn: Connection, keep: list[int], *, now: datetime) -> int:
    """Mark every active alert whose id is not in ``keep`` resolved (an engine that
    kept its state in memory through an outage knows better). Returns how many.
    """
    result = conn.execute(
        update(alerts)
        .where(alerts.c.status != "resolved", alerts.c.id.not_in(keep))
        .values(status="resolved", resolved_at=now)
    )
    return result.rowcount


def prune_resolved(conn: Connection, *, before: datetime) -> int:
    """Delete alerts resolved before ``before``. Side effect: history trimmed."""
    result = conn.execute(
        delete(alerts).where(alerts.c.status == "resolved", alerts.c.resolved_at < before)
    )
    return result.rowcount


def list_silences(conn: Connection, *, now: datetime) -> list[dict[str, Any]]:
    """Silences not yet expired, soonest to expire first."""
    rows = conn.execute(
        select(alert_silences)
        .where(alert_silences.c.expires_at > now)
        .order_by(alert_silences.c.expires_at, alert_silences.c.id)
    ).mappings()
    return [dict(r) for r in rows]


def insert_silence(conn: Connection, values: dict[str, Any]) -> int:
    """Store a silence; returns its id. Side effect: one row inserted."""
    return int(
        conn.execute(
            insert(alert_silences).values(**values).returning(alert_silences.c.id)
        ).scalar_one()
    )


def delete_silence(conn: Connection, silence_id: int) -> bool:
    """Remove silence ``silence_id``; False when there is none."""
    result = conn.execute(delete(alert_silences).where(alert_silences.c.id == silence_id))
    return result.rowcount == 1


def prune_silences(conn: Connection, *, before: datetime) -> int:
    """Delete silences that expired before ``before``."""
    result = conn.execute(delete(alert_silences).where(alert_silences.c.expires_at < before))
    return result.rowcount


def node_stats(conn: Connection, *, since: datetime) -> dict[str, dict[str, Any]]:
    """Name → reported stats of every node not gone that heartbeated since ``since``."""
    rows = conn.execute(
        select(nodes.c.name, nodes.c.stats).where(
            nodes.c.state != "gone", nodes.c.heartbeat_at >= since
        )
    )
    return {str(name): dict(stats) for name, stats in rows if isinstance(stats, dict)}


def server_identity(conn: Connection) -> str | None:
    """Which database server answers: PostgreSQL's system identifier, start time,
    address and port (each changes on a failover or a restart); None on SQLite.

    The system identifier may be refused to an unprivileged role: the rest
    still tells a promoted standby (another address or start time) apart.
    """
    if conn.dialect.name != "postgresql":
        return None
    where = text(
        "SELECT pg_postmaster_start_time()::text || '@'"
        " || coalesce(host(inet_server_addr()), 'socket') || ':'"
        " || coalesce(inet_server_port()::text, '')"
    )
    identity = str(conn.execute(where).scalar_one())
    try:
        with conn.begin_nested():
            system = conn.execute(text("SELECT system_identifier FROM pg_control_system()"))
            identity = f"{system.scalar_one()}/{identity}"
    except DBAPIError:
        pass
    return identity
