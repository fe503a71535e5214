"""Tracking events: batched, idempotent inserts and per-campaign counts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, distinct, func, select

from herald.store.dialect import insert_ignore
from herald.store.tables import tracking_events


def insert_events(conn: Connection, events: Sequence[dict[str, Any]]) -> None:
    """Insert events; one already stored (same ``event_id``) is skipped."""
    if events:
        conn.execute(insert_ignore(conn, tracking_events), list(events))


def counts(conn: Connection, campaign_id: int) -> dict[str, dict[str, int]]:
    """``{"open": {"total": n, "unique": m}, "click": {…}}`` for one campaign."""
    query = (
        select(
            tracking_events.c.kind,
            func.count(),
            func.count(distinct(tracking_events.c.delivery_id)),
        )
        .where(tracking_events.c.campaign_id == campaign_id)
        .group_by(tracking_events.c.kind)
    )
    found = {
        kind: {"total": total, "unique": unique} for kind, total, unique in conn.execute(query)
    }
    return {kind: found.get(kind, {"total": 0, "unique": 0}) for kind in ("open", "click")}
