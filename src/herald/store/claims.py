"""Claiming deliveries under a lease, acknowledging results, re-queueing stale leases.

This is the module where the two backends differ most. PostgreSQL claims with
``FOR UPDATE SKIP LOCKED`` so several nodes take disjoint batches without
waiting; SQLite serialises writers anyway (every transaction is ``BEGIN
IMMEDIATE``), so a plain ``UPDATE … WHERE id IN (SELECT … LIMIT n)`` is enough.

An ack is guarded by ``lease_owner`` and ``lease_epoch``: once a row's lease
expired and another node re-claimed it (bumping the epoch), the first node's
late ack matches nothing and is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, or_, select, text, update

from herald.domain.clock import as_utc
from herald.store.deliveries import eligible_subscribers
from herald.store.dialect import among_ids
from herald.store.tables import campaigns, deliveries, subscribers, suppressions


@dataclass(frozen=True, slots=True)
class Claimed:
    """One claimed delivery with what is needed to render it."""

    delivery_id: int
    campaign_id: int
    epoch: int
    attempts: int
    subscriber_id: int
    email: str
    name: str
    attribs: dict[str, Any]
    eligible: bool
    data: dict[str, Any] | None = None  # a transactional message's template data
    transactional: bool = False


@dataclass(frozen=True, slots=True)
class Ack:
    """The result of one send attempt, to be written back."""

    delivery_id: int
    epoch: int
    status: str  # sent | pending (retry) | failed | bounced
    relay: str | None
    reply: str
    message_id: str | None
    due_at: datetime | None = None  # for retries
    count_attempt: bool = True


def claim(
    conn: Connection, *, owner: str, limit: int, lease_ttl: float, now: datetime
) -> list[Claimed]:
    """Claim up to ``limit`` due, pending deliveries of running campaigns.

    Side effect: the rows become ``sending`` with this owner, a lease until
    ``now + lease_ttl`` and a bumped epoch. Rows whose subscriber is no longer
    eligible (unsubscribed, suppressed, blocklisted) are returned with
    ``eligible=False`` so the caller acks them as failed without sending.
    """
    expires = now + timedelta(seconds=lease_ttl)
    budgets = _rate_budgets(conn, now)
    rows = _claim_rows(conn, owner, limit, expires, now, exclude=list(budgets))
    for campaign_id, (allowed, tokens) in budgets.items():
        want = min(allowed, limit - len(rows))
        got = _claim_rows(conn, owner, want, expires, now, only=campaign_id) if want > 0 else []
        conn.execute(
            update(campaigns)
            .where(campaigns.c.id == campaign_id)
            .values(rate_tokens=tokens - len(got), rate_at=now)
        )
        rows.extend(got)
    if not rows:
        return []
    return _with_subscribers(conn, rows)


def _claim_rows(
    conn: Connection,
    owner: str,
    limit: int,
    expires: datetime,
    now: datetime,
    *,
    exclude: Sequence[int] = (),
    only: int | None = None,
) -> list[Any]:
    """Claim due rows of running campaigns (all but ``exclude``, or just ``only``).

    A transactional row has no ``campaign_id``; its hidden tx campaign is
    ``tx_campaign_id`` (see tables.deliveries).
    """
    carrier = func.coalesce(deliveries.c.campaign_id, deliveries.c.tx_campaign_id)
    due = (
        select(deliveries.c.id)
        .join(campaigns, campaigns.c.id == carrier)
        .where(
            deliveries.c.status == "pending",
            deliveries.c.due_at <= now,
            campaigns.c.status == "running",
        )
        .order_by(deliveries.c.due_at, deliveries.c.id)
        .limit(limit)
    )
    if only is not None:
        due = due.where(deliveries.c.campaign_id == only)
    elif exclude:
        # Transactional rows (NULL campaign_id) are never rate-limited.
        due = due.where(
            or_(deliveries.c.campaign_id.is_(None), deliveries.c.campaign_id.not_in(list(exclude)))
        )
    if conn.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True, of=deliveries)
    return list(
        conn.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(due.scalar_subquery()))
            .values(
                status="sending",
                lease_owner=owner,
                lease_expires=expires,
                lease_epoch=deliveries.c.lease_epoch + 1,
                updated_at=now,
            )
            .returning(
                deliveries.c.id,
                deliveries.c.campaign_id,
                carrier.label("carrier_id"),
                deliveries.c.subscriber_id,
                deliveries.c.lease_epoch,
                deliveries.c.attempts,
                deliveries.c.data,
            )
        ).all()
    )


def _rate_budgets(conn: Connection, now: datetime) -> dict[int, tuple[int, float]]:
    """For each running, rate-limited campaign: (rows claimable now, tokens available).

    A token bucket per campaign, stored on the campaign row so every node draws
    from the same one; it refills at ``rate_limit`` per second up to one
    second's worth (at least one message). On PostgreSQL the rows are locked
    (``FOR UPDATE``) so two nodes cannot spend the same tokens.
    """
    query = select(
        campaigns.c.id, campaigns.c.rate_limit, campaigns.c.rate_tokens, campaigns.c.rate_at
    ).where(campaigns.c.status == "running", campaigns.c.rate_limit.is_not(None))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(of=campaigns)
    budgets = {}
    for row in conn.execute(query):
        rate = float(row.rate_limit)
        burst = max(rate, 1.0)
        if row.rate_at is None:
            tokens = burst
        else:
            elapsed = max(0.0, (now - as_utc(row.rate_at)).total_seconds())
            tokens = min(burst, float(row.rate_tokens or 0.0) + rate * elapsed)
        budgets[int(row.id)] = (int(tokens), tokens)
    return budgets


def _with_subscribers(conn: Connection, rows: Sequence[Any]) -> list[Claimed]:
    by_campaign: dict[int, list[int]] = {}
    for r in rows:
        by_campaign.setdefault(r.carrier_id, []).append(r.subscriber_id)
    tx = {r.carrier_id for r in rows if r.campaign_id is None}
    # (campaign, subscriber) -> (email, name, attribs, eligible)
    people: dict[tuple[int, int], tuple[str, str, Any, bool]] = {}
    for cid, sub_ids in by_campaign.items():
        ok = (
            _tx_eligible()
            if cid in tx
            else eligible_subscribers(cid, _within(min(sub_ids), max(sub_ids)))
        )
        query = select(
            subscribers.c.id,
            subscribers.c.email,
            subscribers.c.name,
            subscribers.c.attribs,
            ok.label("ok"),
        ).where(among_ids(conn, subscribers.c.id, sub_ids))
        for sid, email, name, attribs, eligible in conn.execute(query).all():
            people[cid, sid] = (email, name, attribs, bool(eligible))
    out = []
    for delivery_id, campaign_id, cid, sid, epoch, attempts, data in rows:
        email, name, attribs, eligible = people[cid, sid]
        out.append(
            Claimed(
                delivery_id=delivery_id,
                campaign_id=cid,
                epoch=epoch,
                attempts=attempts,
                subscriber_id=sid,
                email=email,
                name=name,
                attribs=dict(attribs or {}),
                eligible=eligible,
                data=data,
                transactional=campaign_id is None,
            )
        )
    return out


def _within(low: int, high: int) -> Callable[[Any], Any]:
    """The condition "between ``low`` and ``high``" on a subscriber id column."""
    return lambda ids: ids.between(low, high)


def _tx_eligible() -> Any:
    """A WHERE clause: a transactional message may go to this subscriber (enabled,
    not suppressed); no list subscription is needed."""
    suppressed = select(suppressions.c.email).where(suppressions.c.email == subscribers.c.email)
    return and_(subscribers.c.status == "enabled", ~suppressed.exists())


def ack(conn: Connection, acks: Sequence[Ack], *, owner: str, now: datetime) -> int:
    """Write results back, guarded by owner and epoch.

    Returns how many acks were refused because the lease had moved on (another
    node re-claimed the row after this node's lease expired). An ack for a row
    that was re-queued but not re-claimed since is still accepted.
    """
    if not acks:
        return 0
    # Rows are updated in id order, as renew() locks them: two transactions of
    # one node (acks and lease renewal) then never wait on each other in a cycle.
    rows = [
        (
            a.delivery_id,
            a.epoch,
            a.status,
            a.relay,
            # A relay's reply may hold NUL, which PostgreSQL text cannot.
            a.reply.replace("\x00", "")[:1000],
            a.message_id,
            1 if a.count_attempt else 0,
            a.due_at or now,
            now if a.status == "sent" else None,
        )
        for a in sorted(acks, key=lambda a: a.delivery_id)
    ]
    if conn.dialect.name == "postgresql":
        done = _ack_postgresql(conn, rows, owner, now)
    else:
        done = _ack_sqlite(conn, rows, owner, now)
    return len(acks) - done  # each writer returns a count of at least 0


# Bind names of one ack's values, in the order ack() lists them.
_ACK_FIELDS = (
    "b_id",
    "b_epoch",
    "b_status",
    "b_relay",
    "b_reply",
    "b_mid",
    "b_inc",
    "b_due",
    "b_sent",
)

# The guard of an ack, on both backends: the row is still ours (so sending, see
# _HELD), or it was re-queued after our lease ran out (say, while the database
# was unreachable) but not re-claimed since: the epoch is still ours and what
# we did is still the truth. A re-claim bumps the epoch.
_ACK_GUARD = (
    "{t}lease_epoch = {epoch}"
    " AND ({t}lease_owner = {owner} OR ({t}status = 'pending' AND {t}lease_owner IS NULL))"
)

# _HELD: only claim() sets lease_owner, and every step that moves a row out of
# ``sending`` clears it, so "lease_owner = me" already means "sending, mine".
# The acks and renewals test the owner alone and leave status out on purpose:
# with status in the WHERE clause, PostgreSQL's planner, whose statistics lag a
# freshly materialised campaign (they say almost nothing is ``sending``), walks
# the status index through every dead ``sending`` version instead of looking
# the few hundred ids up by primary key: an ack then cost ~250 µs a row and
# PostgreSQL's CPU grew with the campaign.

# The same guarded update as one statement over arrays: a group of a few
# hundred acks costs no per-row statement on either side (executemany's
# per-row parameters cost more client CPU than the send). The rows are locked
# first, in id order (see ack()), by _LOCK_POSTGRESQL.
_LOCK_POSTGRESQL = text(
    "SELECT id FROM deliveries WHERE id = ANY(CAST(:b_id AS bigint[])) ORDER BY id FOR UPDATE"
)
_ACK_POSTGRESQL = text(
    """
    UPDATE deliveries AS d
    SET status = v.status, relay = v.relay, last_reply = v.reply, message_id = v.mid,
        attempts = d.attempts + v.inc, due_at = v.due, sent_at = v.sent,
        lease_owner = NULL, lease_expires = NULL, updated_at = :now
    FROM unnest(
        CAST(:b_id AS bigint[]), CAST(:b_epoch AS integer[]), CAST(:b_status AS text[]),
        CAST(:b_relay AS text[]), CAST(:b_reply AS text[]), CAST(:b_mid AS text[]),
        CAST(:b_inc AS integer[]), CAST(:b_due AS timestamptz[]), CAST(:b_sent AS timestamptz[])
    ) AS v(id, epoch, status, relay, reply, mid, inc, due, sent)
    WHERE d.id = v.id AND """
    + _ACK_GUARD.format(t="d.", epoch="v.epoch", owner=":owner")
)

# SQLite: one statement per row through the driver's executemany, with the
# timestamps in SQLAlchemy's storage format (what every read of them parses).
# SQLAlchemy's own per-row parameter processing cost four times the update.
_ACK_SQLITE = (
    "UPDATE deliveries SET status = ?, relay = ?, last_reply = ?, message_id = ?,"
    " attempts = attempts + ?, due_at = ?, sent_at = ?,"
    " lease_owner = NULL, lease_expires = NULL, updated_at = ?"
    " WHERE id = ? AND " + _ACK_GUARD.format(t="", epoch="?", owner="?")
)


def _ack_postgresql(
    conn: Connection, rows: Sequence[tuple[Any, ...]], owner: str, now: datetime
) -> int:
    """Lock the acked rows in id order, then update them all in one statement;
    return how many rows took their ack. ``rows`` are as ack() builds them."""
    columns = list(zip(*rows, strict=True))
    params = dict(zip(_ACK_FIELDS, map(list, columns), strict=True))
    conn.execute(_LOCK_POSTGRESQL, {"b_id": params["b_id"]})
    return max(conn.execute(_ACK_POSTGRESQL, {**params, "owner": owner, "now": now}).rowcount, 0)


def _ack_sqlite(
    conn: Connection, rows: Sequence[tuple[Any, ...]], owner: str, now: datetime
) -> int:
    """Update the acked rows one statement each (one executemany); return how
    many took their ack. ``rows`` are as ack() builds them."""
    stamp = deliveries.c.due_at.type.bind_processor(conn.dialect) or str
    at = stamp(now)
    params = [
        (
            status,
            relay,
            reply,
            mid,
            inc,
            at if due is now else stamp(due),
            None if sent is None else at,
            at,
            delivery_id,
            epoch,
            owner,
        )
        for delivery_id, epoch, status, relay, reply, mid, inc, due, sent in rows
    ]
    return max(conn.exec_driver_sql(_ACK_SQLITE, params).rowcount, 0)


def requeue_expired(
    conn: Connection, *, now: datetime, max_attempts: int, limit: int = 5000
) -> tuple[int, int]:
    """Return rows whose lease expired to ``pending`` (``attempts + 1``).

    Rows that already used ``max_attempts`` become ``failed`` instead.
    Returns (re-queued, failed). Safe to run on every node: a row is moved by
    whichever node's UPDATE reaches it first; the other matches nothing. On
    PostgreSQL rows locked by another transaction are skipped, not waited
    for: a node frozen in the middle of a transaction must not stall the
    nodes that are taking over its work (they retry on the next pass).
    """
    failed = _requeue(
        conn,
        now,
        limit,
        deliveries.c.attempts + 1 >= max_attempts,
        status="failed",
        last_reply="lease expired too many times",
    )
    # due_at is left as it was, so re-queued rows go out before the rest of the
    # backlog instead of waiting behind it.
    requeued = _requeue(conn, now, limit, None, status="pending")
    return requeued, failed


def _requeue(conn: Connection, now: datetime, limit: int, extra: Any, **values: Any) -> int:
    expired = select(deliveries.c.id).where(
        deliveries.c.status == "sending", deliveries.c.lease_expires < now
    )
    if extra is not None:
        expired = expired.where(extra)
    expired = expired.limit(limit)
    if conn.dialect.name == "postgresql":
        expired = expired.with_for_update(skip_locked=True)
    result = conn.execute(
        update(deliveries)
        .where(deliveries.c.id.in_(expired.scalar_subquery()))
        .values(
            attempts=deliveries.c.attempts + 1,
            lease_owner=None,
            lease_expires=None,
            updated_at=now,
            **values,
        )
    )
    return max(result.rowcount, 0)


def release(
    conn: Connection, items: Sequence[tuple[int, int]], *, owner: str, now: datetime
) -> int:
    """Give back claimed rows unsent (pause, drain): ``pending`` again, no attempt counted.

    ``items`` are (delivery id, epoch). Returns how many were released.
    """
    if not items:
        return 0
    stmt = (
        update(deliveries)
        .where(
            deliveries.c.id == bindparam("b_id"),
            deliveries.c.lease_epoch == bindparam("b_epoch"),
            deliveries.c.lease_owner == owner,
            deliveries.c.status == "sending",
        )
        .values(status="pending", lease_owner=None, lease_expires=None, updated_at=now)
    )
    result = conn.execute(stmt, [{"b_id": i, "b_epoch": e} for i, e in sorted(items)])
    return max(result.rowcount, 0)


def renew(
    conn: Connection, ids: Sequence[int], *, owner: str, lease_ttl: float, now: datetime
) -> list[int]:
    """Extend the lease of rows this owner still holds and whose lease has not run out.

    Returns the ids renewed; a row missing from the answer has been lost (its
    lease ran out, or another node took it) and must not be sent.
    """
    if not ids:
        return []
    # No status test: a row with our owner is ours and sending (see _HELD).
    mine = select(deliveries.c.id).where(
        among_ids(conn, deliveries.c.id, ids),
        deliveries.c.lease_owner == owner,
        deliveries.c.lease_expires > now,
    )
    if conn.dialect.name == "postgresql":
        # Lock in id order, the order acks use (see ack()).
        mine = mine.order_by(deliveries.c.id).with_for_update()
    rows = conn.execute(
        update(deliveries)
        .where(deliveries.c.id.in_(mine.scalar_subquery()))
        .values(lease_expires=now + timedelta(seconds=lease_ttl))
        .returning(deliveries.c.id)
    )
    return [int(r.id) for r in rows]
