"""Subscriptions: a subscriber's consent, per list."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, select, update

from herald.store.tables import campaign_lists, subscriptions


def unsubscribe(
    conn: Connection, subscriber_id: int, list_ids: Sequence[int], *, now: datetime
) -> int:
    """Mark the subscriber unsubscribed from ``list_ids``; returns how many changed.

    Idempotent: a subscription already unsubscribed is left as it is.
    """
    if not list_ids:
        return 0
    result = conn.execute(
        update(subscriptions)
        .where(
            subscriptions.c.subscriber_id == subscriber_id,
            subscriptions.c.list_id.in_(list(list_ids)),
            subscriptions.c.status != "unsubscribed",
        )
        .values(status="unsubscribed", updated_at=now)
    )
    return max(result.rowcount, 0)


def campaign_list_ids(conn: Connection, campaign_id: int) -> list[int]:
    rows = conn.scalars(
        select(campaign_lists.c.list_id).where(campaign_lists.c.campaign_id == campaign_id)
    )
    return [int(r) for r in rows]


def statuses(conn: Connection, subscriber_id: int) -> dict[int, str]:
    """List id → subscription status of one subscriber."""
    rows = conn.execute(
        select(subscriptions.c.list_id, subscriptions.c.status).where(
            subscriptions.c.subscriber_id == subscriber_id
        )
    )
    return {int(r.list_id): str(r.status) for r in rows}
