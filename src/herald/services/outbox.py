"""The worker's transactions on the outbox: claim, ack, release, housekeeping.

Each function is one short transaction; no transaction is ever held across
network I/O (the worker sends between them). Each is retried on a fresh
connection when the database connection is lost (failover); every statement
here is a guarded update or an idempotent insert, so a replay is harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from herald.domain.clock import utcnow
from herald.domain.states import SuppressionReason
from herald.store import campaigns as store_campaigns
from herald.store import claims, suppressions
from herald.store import deliveries as store_deliveries
from herald.store import transactional as store_tx
from herald.store.retry import run_in_transaction

MATERIALISE_CHUNK = 5_000


@dataclass(frozen=True)
class Housekeeping:
    """What one housekeeping pass did."""

    requeued: int
    failed: int
    materialised: int
    finished: list[int]
    started: list[int]


def claim_batch(
    engine: Engine, *, owner: str, limit: int, lease_ttl: float
) -> list[claims.Claimed]:
    """Claim up to ``limit`` deliveries for ``owner`` (see store.claims.claim)."""
    return run_in_transaction(
        engine,
        lambda conn: claims.claim(
            conn, owner=owner, limit=limit, lease_ttl=lease_ttl, now=utcnow()
        ),
    )


def record_results(
    engine: Engine, acks: Sequence[claims.Ack], *, owner: str, bounced: Sequence[str] = ()
) -> int:
    """Write a group of results; returns how many acks were refused.

    Side effect: ``bounced`` addresses are added to the suppression list in the
    same transaction as their acks.
    """

    def write(conn: Connection) -> int:
        now = utcnow()
        refused = claims.ack(conn, acks, owner=owner, now=now)
        suppressions.suppress(
            conn, bounced, reason=SuppressionReason.HARD_BOUNCE.value, source="smtp", now=now
        )
        return refused

    return run_in_transaction(engine, write)


def release_claims(engine: Engine, items: Sequence[tuple[int, int]], *, owner: str) -> int:
    """Give back unsent claimed rows; returns how many were released."""
    return run_in_transaction(
        engine, lambda conn: claims.release(conn, items, owner=owner, now=utcnow())
    )


def campaign_statuses(
    engine: Engine, campaign_ids: Sequence[int]
) -> dict[int, tuple[str, float | None]]:
    """(status, rate limit) of each campaign."""
    return run_in_transaction(engine, lambda conn: store_campaigns.statuses(conn, campaign_ids))


def housekeeping(engine: Engine, *, max_attempts: int, chunks: int = 4) -> Housekeeping:
    """Start due scheduled campaigns, re-queue expired leases, materialise a few
    chunks, finish completed campaigns.

    Safe on every node at once: each step is a guarded update. Each chunk is
    its own transaction so materialising a huge list never holds a long lock.
    """

    def first_steps(conn: Connection) -> tuple[list[int], tuple[int, int], list[tuple[int, int]]]:
        now = utcnow()
        store_tx.revive_carriers(conn, now=now)
        return (
            store_campaigns.start_due(conn, now=now),
            claims.requeue_expired(conn, now=now, max_attempts=max_attempts),
            store_campaigns.running_unmaterialised(conn),
        )

    started, (requeued, failed), todo = run_in_transaction(engine, first_steps)
    inserted = 0
    for campaign_id, cursor in todo:
        for _ in range(chunks):
            try:
                n, nxt = _materialise_one(engine, campaign_id, cursor)
            except _LostRace:
                break
            inserted += n
            if nxt is None:
                break
            cursor = nxt
    finished = run_in_transaction(
        engine, lambda conn: store_campaigns.finish_if_done(conn, now=utcnow())
    )
    return Housekeeping(
        requeued=requeued,
        failed=failed,
        materialised=inserted,
        finished=finished,
        started=started,
    )


class _LostRace(Exception):
    """Another node took this chunk first; roll back and move on."""


def _materialise_one(engine: Engine, campaign_id: int, cursor: int) -> tuple[int, int | None]:

    def chunk(conn: Connection) -> tuple[int, int | None]:
        now = utcnow()
        nxt = store_deliveries.next_cursor(conn, after=cursor, chunk=MATERIALISE_CHUNK)
        # The cursor moves first: its guarded update locks the campaign row, so
        # a node racing for the same chunk waits there and then finds the
        # cursor moved, instead of inserting rows that wait on ours and are
        # rolled back.
        if not store_campaigns.advance_cursor(conn, campaign_id, old=cursor, new=nxt, now=now):
            raise _LostRace
        n = store_deliveries.materialise_chunk(
            conn, campaign_id, after=cursor, chunk=MATERIALISE_CHUNK, now=now
        )
        return n, nxt

    return run_in_transaction(engine, chunk)


def renew_leases(engine: Engine, ids: Sequence[int], *, owner: str, lease_ttl: float) -> list[int]:
    """Extend the leases this node still holds; returns the ids renewed."""
    return run_in_transaction(
        engine,
        lambda conn: claims.renew(conn, ids, owner=owner, lease_ttl=lease_ttl, now=utcnow()),
    )


def load_campaign(engine: Engine, campaign_id: int) -> dict[str, object]:
    return run_in_transaction(engine, lambda conn: store_campaigns.get_campaign(conn, campaign_id))
