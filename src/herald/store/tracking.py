"""Tracking events: batched, idempotent inserts, per-campaign counts, daily roll-ups."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select, union, update

from herald.store.dialect import insert_ignore
from herald.store.tables import tracking_daily, tracking_events, tracking_uniques


def insert_events(conn: Connection, events: Sequence[dict[str, Any]]) -> None:
    """Insert events; one already stored (same ``event_id``) is skipped."""
    if events:
        conn.execute(insert_ignore(conn, tracking_events), list(events))


def counts(conn: Connection, campaign_id: int) -> dict[str, dict[str, int]]:
    """``{"open": {"total": n, "unique": m}, "click": {…}}`` for one campaign.

    Totals add the raw events to the daily roll-ups; unique counts take the
    distinct deliveries of the raw events together with those the roll-up
    kept in ``tracking_uniques``, so a report reads the same before and after.
    """
    raw = (
        select(tracking_events.c.kind, func.count())
        .where(tracking_events.c.campaign_id == campaign_id)
        .group_by(tracking_events.c.kind)
    )
    rolled = (
        select(tracking_daily.c.kind, func.sum(tracking_daily.c.events))
        .where(tracking_daily.c.campaign_id == campaign_id)
        .group_by(tracking_daily.c.kind)
    )
    readers = union(
        select(tracking_events.c.kind, tracking_events.c.delivery_id).where(
            tracking_events.c.campaign_id == campaign_id
        ),
        select(tracking_uniques.c.kind, tracking_uniques.c.delivery_id).where(
            tracking_uniques.c.campaign_id == campaign_id
        ),
    ).subquery()
    unique = select(readers.c.kind, func.count()).group_by(readers.c.kind)
    totals: dict[str, int] = {}
    for kind, n in [*conn.execute(raw), *conn.execute(rolled)]:
        totals[kind] = totals.get(kind, 0) + int(n or 0)
    uniques = {kind: int(n) for kind, n in conn.execute(unique)}
    return {
        kind: {"total": totals.get(kind, 0), "unique": uniques.get(kind, 0)}
        for kind in ("open", "click")
    }


def old_events(conn: Connection, *, before: datetime, limit: int) -> list[Row[Any]]:
    """Up to ``limit`` events older than ``before``, lowest id first (for the roll-up)."""
    query = (
        select(
            tracking_events.c.id,
            tracking_events.c.campaign_id,
            tracking_events.c.kind,
            tracking_events.c.delivery_id,
            tracking_events.c.url,
            tracking_events.c.at,
        )
        .where(tracking_events.c.at < before)
        .order_by(tracking_events.c.id)
        .limit(limit)
    )
    return list(conn.execute(query))


def delete_old_events(conn: Connection, *, through_id: int, before: datetime) -> int:
    """Delete events older than ``before`` with ids up to ``through_id``; returns how many.

    Side effect: the roll-up's guard. Another roll-up (a manual run beside
    the scheduled one) may be deleting the same rows: the caller compares
    the count with what it read and rolls back on a difference.
    """
    return conn.execute(
        delete(tracking_events).where(
            tracking_events.c.id <= through_id, tracking_events.c.at < before
        )
    ).rowcount


def add_daily_counts(conn: Connection, counts: dict[tuple[int, Any, str, str], int]) -> None:
    """Add ``{(campaign_id, day, kind, url): events}`` to the daily roll-ups.

    Side effect: creates a day's row on its first events. Callers run after
    ``delete_old_events`` in the same transaction, so two roll-ups never add
    the same events (the second one's guard fails first).
    """
    for (campaign_id, day, kind, url), events in counts.items():
        match = (
            tracking_daily.c.campaign_id == campaign_id,
            tracking_daily.c.day == day,
            tracking_daily.c.kind == kind,
            tracking_daily.c.url == url,
        )
        added = conn.execute(
            update(tracking_daily).where(*match).values(events=tracking_daily.c.events + events)
        ).rowcount
        if not added:
            conn.execute(
                insert(tracking_daily).values(
                    campaign_id=campaign_id, day=day, kind=kind, url=url, events=events
                )
            )


def add_uniques(conn: Connection, readers: set[tuple[int, str, int]]) -> None:
    """Remember ``(campaign_id, kind, delivery_id)`` triples; known ones are skipped."""
    if readers:
        rows = [{"campaign_id": c, "kind": k, "delivery_id": d} for c, k, d in sorted(readers)]
        conn.execute(insert_ignore(conn, tracking_uniques), rows)
