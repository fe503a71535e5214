"""Subscriptions: a subscriber's consent, per list."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select, update

from herald.store.tables import campaign_lists, subscribers, subscriptions


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


def members(
    conn: Connection, list_id: int, *, status: str | None, after: int, limit: int
) -> list[dict[str, Any]]:
    """The subscribers of a list with their subscription, by subscriber id after ``after``."""
    query = (
        select(
            subscribers.c.id,
            subscribers.c.email,
            subscribers.c.name,
            subscribers.c.status,
            subscriptions.c.status.label("subscription_status"),
            subscriptions.c.created_at.label("subscribed_at"),
            subscriptions.c.updated_at.label("subscription_updated_at"),
        )
        .join(subscribers, subscribers.c.id == subscriptions.c.subscriber_id)
        .where(subscriptions.c.list_id == list_id, subscriptions.c.subscriber_id > after)
    )
    if status:
        query = query.where(subscriptions.c.status == status)
    query = query.order_by(subscriptions.c.subscriber_id).limit(limit)
    return [dict(r) for r in conn.execute(query).mappings()]


def remove(conn: Connection, list_id: int, subscriber_id: int) -> bool:
    """Delete one subscription (not an unsubscribe: no record of consent remains)."""
    result = conn.execute(
        delete(subscriptions).where(
            subscriptions.c.list_id == list_id, subscriptions.c.subscriber_id == subscriber_id
        )
    )
    return result.rowcount == 1


def unsubscribe_from_campaign_lists(
    conn: Connection, subscriber_id: int, campaign_id: int, *, now: datetime
) -> int:
    """Unsubscribe a subscriber from every list of a campaign; returns how many changed."""
    return unsubscribe(conn, subscriber_id, campaign_list_ids(conn, campaign_id), now=now)
