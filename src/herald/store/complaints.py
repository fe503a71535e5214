"""Spam complaints (feedback loops) and the counts the complaint rate needs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from herald.store.dialect import insert_ignore
from herald.store.tables import complaints, deliveries, subscribers


def delivery_for_complaint(conn: Connection, delivery_id: int) -> dict[str, Any] | None:
    """The delivery (id, campaign, subscriber, address) a complaint is about, or None."""
    row = conn.execute(
        select(
            deliveries.c.id,
            deliveries.c.campaign_id,
            deliveries.c.subscriber_id,
            subscribers.c.email,
        )
        .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
        .where(deliveries.c.id == delivery_id)
    ).mappings()
    found = row.first()
    return None if found is None else dict(found)


def insert_complaint(conn: Connection, delivery: dict[str, Any], *, now: datetime) -> bool:
    """Record a complaint about ``delivery``; False when one was already recorded."""
    values = {
        "delivery_id": delivery["id"],
        "campaign_id": delivery["campaign_id"],
        "subscriber_id": delivery["subscriber_id"],
        "email": delivery["email"],
        "at": now,
    }
    stmt = insert_ignore(conn, complaints).values(**values).returning(complaints.c.id)
    return conn.execute(stmt).scalar() is not None


def count_since(conn: Connection, since: datetime) -> tuple[int, int]:
    """(complaints recorded at or after ``since``, messages sent at or after it)."""
    got = conn.scalar(select(func.count()).where(complaints.c.at >= since)) or 0
    sent = conn.scalar(
        select(func.count()).where(deliveries.c.status == "sent", deliveries.c.sent_at >= since)
    )
    return int(got), int(sent or 0)


def count_for_campaign(conn: Connection, campaign_id: int) -> int:
    query = select(func.count()).where(complaints.c.campaign_id == campaign_id)
    return int(conn.scalar(query) or 0)
