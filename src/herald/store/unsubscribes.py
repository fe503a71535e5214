"""Unsubscribe records: who left, from which campaign, and why."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, func, insert, select

from herald.store.tables import unsubscribes


def record(
    conn: Connection,
    subscriber_id: int,
    campaign_id: int | None,
    *,
    reason: str,
    comment: str,
    now: datetime,
) -> None:
    """Append one unsubscribe record (``campaign_id`` None: from the preferences page)."""
    conn.execute(
        insert(unsubscribes).values(
            subscriber_id=subscriber_id,
            campaign_id=campaign_id,
            reason=reason,
            comment=comment,
            at=now,
        )
    )


def count_for_campaign(conn: Connection, campaign_id: int) -> int:
    """How many subscribers unsubscribed through this campaign's messages."""
    query = select(func.count(func.distinct(unsubscribes.c.subscriber_id))).where(
        unsubscribes.c.campaign_id == campaign_id
    )
    return int(conn.scalar(query) or 0)


def reasons_for_campaign(conn: Connection, campaign_id: int) -> dict[str, int]:
    """Reason → number of records for this campaign ("" is one-click, no reason)."""
    query = (
        select(unsubscribes.c.reason, func.count())
        .where(unsubscribes.c.campaign_id == campaign_id)
        .group_by(unsubscribes.c.reason)
    )
    return {str(reason): int(n) for reason, n in conn.execute(query)}
