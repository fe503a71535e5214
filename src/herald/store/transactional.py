"""Transactional messages: hidden carrier campaigns and one delivery per message.

A carrier is a ``campaigns`` row of kind ``tx`` holding one content (from,
subject, html, text), running and materialised from birth so the
materialiser and the finisher leave it alone. Its deliveries have a NULL
``campaign_id`` (the (campaign, subscriber) uniqueness would otherwise allow
one message per address) and name the carrier in ``tx_campaign_id``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from herald.store.dialect import insert_ignore
from herald.store.tables import campaigns, deliveries, subscribers


def find_carrier(conn: Connection, key: str) -> int | None:
    """The running tx carrier named ``key`` (a content hash), or None.

    A carrier paused by a restore (store.dump.pause_running) is not reused:
    new messages go to a fresh one while the restored ones wait for a person.
    """
    query = (
        select(campaigns.c.id)
        .where(campaigns.c.kind == "tx", campaigns.c.name == key, campaigns.c.status == "running")
        .order_by(campaigns.c.id)
        .limit(1)
    )
    found = conn.scalar(query)
    return None if found is None else int(found)


def create_carrier(conn: Connection, key: str, content: dict[str, Any], *, now: datetime) -> int:
    """Insert a running tx carrier for ``content`` (from_addr, subject, html, text).

    Two nodes racing may each create one for the same content: harmless, each
    message names the carrier it was queued on.
    """
    result = conn.execute(
        insert(campaigns).values(
            name=key,
            kind="tx",
            status="running",
            from_addr=content["from_addr"],
            subject=content["subject"],
            html=content["html"],
            text=content["text"],
            template_id=content.get("template_id"),
            materialised=True,
            materialise_cursor=0,
            track=False,
            created_at=now,
            updated_at=now,
            started_at=now,
        )
    )
    pk = result.inserted_primary_key
    assert pk is not None
    return int(pk[0])


def upsert_recipient(conn: Connection, email: str, *, name: str, now: datetime) -> dict[str, Any]:
    """The subscriber row for a normalised address, inserted (enabled) if missing.

    An existing subscriber is left as it is (name, status, attributes).
    """
    conn.execute(
        insert_ignore(conn, subscribers).values(
            email=email, name=name, attribs={}, status="enabled", created_at=now, updated_at=now
        )
    )
    row = conn.execute(select(subscribers).where(subscribers.c.email == email)).mappings().one()
    return dict(row)


def insert_delivery(
    conn: Connection, carrier_id: int, subscriber_id: int, *, data: Any, now: datetime
) -> int:
    """Queue one transactional message (pending, due now); returns the delivery id."""
    result = conn.execute(
        insert(deliveries).values(
            campaign_id=None,
            tx_campaign_id=carrier_id,
            subscriber_id=subscriber_id,
            status="pending",
            attempts=0,
            lease_epoch=0,
            due_at=now,
            data=data,
            created_at=now,
            updated_at=now,
        )
    )
    pk = result.inserted_primary_key
    assert pk is not None
    return int(pk[0])


def delivery_status(conn: Connection, delivery_id: int) -> dict[str, Any] | None:
    """Status, attempts, last reply, Message-ID and carrier of a transactional delivery, or None."""
    row = (
        conn.execute(
            select(
                deliveries.c.id,
                deliveries.c.status,
                deliveries.c.attempts,
                deliveries.c.last_reply,
                deliveries.c.message_id,
                deliveries.c.sent_at,
                deliveries.c.tx_campaign_id.label("carrier_id"),
            ).where(deliveries.c.id == delivery_id, deliveries.c.tx_campaign_id.is_not(None))
        )
        .mappings()
        .first()
    )
    return None if row is None else dict(row)


def revive_carriers(conn: Connection, *, now: datetime) -> int:
    """Set running again every tx carrier a node of an older version finished.

    During a rolling upgrade, nodes that predate carriers finish them as
    campaigns with no open delivery (they do not see the NULL campaign_id
    rows), which would strand queued messages. A carrier is never finished
    on purpose, so in steady state this matches nothing. Returns how many.
    """
    result = conn.execute(
        update(campaigns)
        .where(campaigns.c.kind == "tx", campaigns.c.status == "finished")
        .values(status="running", finished_at=None, updated_at=now)
    )
    return max(result.rowcount, 0)
