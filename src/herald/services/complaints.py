"""Spam complaints: record one per delivery, suppress the address, unsubscribe it.

What a feedback-loop (ARF) processor calls. The alert engine reads
``complaint_rate``; mailbox providers want it under 0.3 %.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from herald.domain.clock import as_utc, utcnow
from herald.domain.feedback import delivery_from_message_id, message_id_from_arf
from herald.errors import InvalidInput, NotFound
from herald.store import complaints as store
from herald.store import subscriptions as store_subscriptions
from herald.store import suppressions as store_suppressions

REASON = "complaint"


def record_complaint(
    engine: Engine,
    secret: str,
    *,
    delivery_id: int | None = None,
    message_id: str | None = None,
    arf: bytes | None = None,
) -> dict[str, Any]:
    """Record a complaint about one delivery, named by id, Message-ID or ARF report.

    Side effects, in one transaction: the complaint row (once per delivery:
    a repeated report changes nothing and returns ``recorded: False``), the
    address suppressed with reason "complaint", and the subscriber
    unsubscribed from the campaign's lists. Raises InvalidInput (nothing or
    an unusable reference given), NotFound (no such delivery, or a Message-ID
    Herald did not sign).
    """
    target = _delivery_id(secret, delivery_id=delivery_id, message_id=message_id, arf=arf)
    now = utcnow()
    with engine.begin() as conn:
        delivery = store.delivery_for_complaint(conn, target)
        if delivery is None:
            raise NotFound(f"no delivery {target}")
        recorded = store.insert_complaint(conn, delivery, now=now)
        store_suppressions.suppress(
            conn, [delivery["email"]], reason=REASON, source=f"delivery {target}", now=now
        )
        unsubscribed = 0
        if delivery["campaign_id"] is not None:
            unsubscribed = store_subscriptions.unsubscribe_from_campaign_lists(
                conn, delivery["subscriber_id"], delivery["campaign_id"], now=now
            )
    return {
        "delivery_id": target,
        "campaign_id": delivery["campaign_id"],
        "email": delivery["email"],
        "recorded": recorded,
        "unsubscribed_lists": unsubscribed,
    }


def complaint_rate(engine: Engine, *, since: datetime) -> tuple[int, int]:
    """(complaints recorded since ``since``, messages sent since ``since``)."""
    with engine.begin() as conn:
        return store.count_since(conn, as_utc(since))


def _delivery_id(
    secret: str, *, delivery_id: int | None, message_id: str | None, arf: bytes | None
) -> int:
    if sum(x is not None for x in (delivery_id, message_id, arf)) != 1:
        raise InvalidInput("give exactly one of delivery_id, message_id or arf")
    if delivery_id is not None:
        return delivery_id
    if arf is not None:
        message_id = message_id_from_arf(arf)
        if message_id is None:
            raise InvalidInput("the ARF report names no original Message-ID")
    assert message_id is not None
    found = delivery_from_message_id(secret, message_id)
    if found is None:
        raise NotFound(f"{message_id[:200]!r} is not a message Herald sent")
    return found
