"""The outbox: materialising recipients into deliveries, and reading its counts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, exists, func, literal, or_, select

from herald.store.dialect import insert_ignore
from herald.store.tables import (
    campaign_lists,
    deliveries,
    lists,
    subscribers,
    subscriptions,
    suppressions,
)


def eligible_subscribers(campaign_id: int, among: Callable[[Any], Any]) -> Any:
    """A WHERE clause: the subscriber (``subscribers`` row) may receive this campaign.

    Enabled, not suppressed, and subscribed to one of the campaign's lists
    (confirmed, or unconfirmed on a single opt-in list). ``among`` builds the
    caller's condition on a subscriber id column (a chunk, a claimed batch):
    it is applied here to ``subscribers.id`` and again inside the
    subscription test, so that a planner which hashes that test (PostgreSQL
    does while statistics are missing) reads the batch's subscriptions, not
    every subscription of the campaign's lists for each batch.
    """
    subscribed = exists().where(
        subscriptions.c.subscriber_id == subscribers.c.id,
        among(subscriptions.c.subscriber_id),
        subscriptions.c.list_id == campaign_lists.c.list_id,
        campaign_lists.c.campaign_id == campaign_id,
        lists.c.id == subscriptions.c.list_id,
        or_(
            subscriptions.c.status == "confirmed",
            and_(subscriptions.c.status == "unconfirmed", lists.c.optin == "single"),
        ),
    )
    suppressed = exists().where(suppressions.c.email == subscribers.c.email)
    return and_(among(subscribers.c.id), subscribers.c.status == "enabled", subscribed, ~suppressed)


def next_cursor(conn: Connection, *, after: int, chunk: int) -> int | None:
    """Where materialising resumes after the chunk (after, after+chunk]; None when
    that chunk reaches the last subscriber."""
    upto = after + chunk
    max_id = conn.scalar(select(func.max(subscribers.c.id))) or 0
    return upto if upto < max_id else None


def materialise_chunk(
    conn: Connection, campaign_id: int, *, after: int, chunk: int, now: datetime
) -> int:
    """Insert pending deliveries for eligible subscribers with id in (after, after+chunk].

    Idempotent (``ON CONFLICT DO NOTHING`` on (campaign, subscriber)).
    Returns the number of rows inserted.
    """
    upto = after + chunk
    source = select(
        literal(campaign_id),
        subscribers.c.id,
        literal("pending"),
        literal(0),
        literal(0),
        literal(now, deliveries.c.due_at.type),
        literal(now, deliveries.c.created_at.type),
        literal(now, deliveries.c.updated_at.type),
    ).where(eligible_subscribers(campaign_id, lambda ids: and_(ids > after, ids <= upto)))
    stmt = insert_ignore(conn, deliveries).from_select(
        [
            "campaign_id",
            "subscriber_id",
            "status",
            "attempts",
            "lease_epoch",
            "due_at",
            "created_at",
            "updated_at",
        ],
        source,
    )
    # preserve_rowcount: SQLAlchemy reports no count for an INSERT … SELECT on
    # PostgreSQL without it.
    return max(conn.execute(stmt.execution_options(preserve_rowcount=True)).rowcount, 0)


def status_counts(conn: Connection, campaign_id: int) -> dict[str, int]:
    """Number of deliveries of a campaign per status."""
    rows = conn.execute(
        select(deliveries.c.status, func.count())
        .where(deliveries.c.campaign_id == campaign_id)
        .group_by(deliveries.c.status)
    )
    return {str(status): int(n) for status, n in rows}


def timings(conn: Connection, campaign_id: int) -> dict[str, Any]:
    """First and last ``sent_at`` of a campaign's deliveries."""
    row = conn.execute(
        select(func.min(deliveries.c.sent_at), func.max(deliveries.c.sent_at)).where(
            deliveries.c.campaign_id == campaign_id, deliveries.c.status == "sent"
        )
    ).one()
    return {"first_sent_at": row[0], "last_sent_at": row[1]}
