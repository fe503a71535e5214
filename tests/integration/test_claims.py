"""Claims, leases and guarded acks at the store level, on both backends."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, select, text
from sqlalchemy.pool import NullPool

from herald.delivery.results import Results
from herald.domain.clock import as_utc, utcnow
from herald.services import campaigns, outbox
from herald.store import claims
from herald.store.tables import deliveries
from tests.factories import add_subscribers, make_campaign, make_list


def _prepare(engine: Engine, count: int = 3) -> int:
    make_list(engine)
    add_subscribers(engine, 1, count)
    campaign_id = make_campaign(engine)
    outbox.housekeeping(engine, max_attempts=5)  # materialise
    return campaign_id


def _statuses(engine: Engine) -> dict[int, str]:
    with engine.begin() as conn:
        return {r.id: r.status for r in conn.execute(select(deliveries.c.id, deliveries.c.status))}


def _sent(row: claims.Claimed) -> claims.Ack:
    return claims.Ack(row.delivery_id, row.epoch, "sent", "r", "250 ok", "<m>")


def test_it_gives_disjoint_claims_to_two_nodes(engine: Engine) -> None:
    _prepare(engine, 10)
    a = outbox.claim_batch(engine, owner="a", limit=6, lease_ttl=30)
    b = outbox.claim_batch(engine, owner="b", limit=6, lease_ttl=30)
    assert len(a) == 6
    assert len(b) == 4
    assert not {r.delivery_id for r in a} & {r.delivery_id for r in b}


def test_it_refuses_a_late_ack_once_another_node_reclaimed_the_row(engine: Engine) -> None:
    _prepare(engine, 1)
    [first] = outbox.claim_batch(engine, owner="a", limit=5, lease_ttl=30)
    with engine.begin() as conn:
        claims.requeue_expired(conn, now=utcnow() + timedelta(minutes=5), max_attempts=5)
    [second] = outbox.claim_batch(engine, owner="b", limit=5, lease_ttl=30)
    assert second.epoch == first.epoch + 1

    assert outbox.record_results(engine, [_sent(first)], owner="a") == 1
    assert _statuses(engine) == {first.delivery_id: "sending"}
    assert outbox.record_results(engine, [_sent(second)], owner="b") == 0
    assert _statuses(engine) == {first.delivery_id: "sent"}


def test_it_accepts_a_late_ack_for_a_row_requeued_but_not_reclaimed(engine: Engine) -> None:
    _prepare(engine, 1)
    [row] = outbox.claim_batch(engine, owner="a", limit=5, lease_ttl=30)
    with engine.begin() as conn:
        assert claims.requeue_expired(
            conn, now=utcnow() + timedelta(minutes=5), max_attempts=5
        ) == (1, 0)

    assert outbox.record_results(engine, [_sent(row)], owner="a") == 0
    assert _statuses(engine) == {row.delivery_id: "sent"}
    assert outbox.claim_batch(engine, owner="b", limit=5, lease_ttl=30) == []


def test_it_claims_requeued_rows_before_the_rest_of_the_backlog(engine: Engine) -> None:
    _prepare(engine, 5)
    first = outbox.claim_batch(engine, owner="a", limit=2, lease_ttl=30)
    with engine.begin() as conn:
        claims.requeue_expired(conn, now=utcnow() + timedelta(minutes=5), max_attempts=5)
    again = outbox.claim_batch(engine, owner="b", limit=2, lease_ttl=30)
    assert {r.delivery_id for r in again} == {r.delivery_id for r in first}


def test_a_reply_with_a_nul_byte_is_recorded_without_it(engine: Engine) -> None:
    _prepare(engine, 2)
    rows = outbox.claim_batch(engine, owner="a", limit=5, lease_ttl=30)
    acks = [
        claims.Ack(r.delivery_id, r.epoch, "bounced", "r", f"550 no\x00such user {n}", None)
        for n, r in enumerate(rows)
    ]
    assert outbox.record_results(engine, acks, owner="a") == 0
    with engine.begin() as conn:
        replies = conn.scalars(select(deliveries.c.last_reply).order_by(deliveries.c.id)).all()
    assert sorted(replies) == ["550 nosuch user 0", "550 nosuch user 1"]


def test_a_group_of_mixed_results_is_stored_as_given(engine: Engine) -> None:
    """Every kind of value an ack carries (no relay, no Message-ID, non-ASCII
    text, a retry's own due time, no attempt counted) comes back as it went in."""
    _prepare(engine, 4)
    sent, retry, bounce, relay_fault = outbox.claim_batch(engine, owner="a", limit=5, lease_ttl=30)
    now = utcnow()
    later = now + timedelta(minutes=7)
    acks = [
        claims.Ack(sent.delivery_id, sent.epoch, "sent", "relay-ü", "250 ok: queued ✓", "<1.x@y>"),
        claims.Ack(retry.delivery_id, retry.epoch, "pending", "r", "451 later", None, later),
        claims.Ack(bounce.delivery_id, bounce.epoch, "bounced", "r", "550 no such user", "<3.x@y>"),
        claims.Ack(
            relay_fault.delivery_id,
            relay_fault.epoch,
            "pending",
            None,
            "mail: 530",
            None,
            later,
            count_attempt=False,
        ),
    ]
    with engine.begin() as conn:
        assert claims.ack(conn, acks, owner="a", now=now) == 0
        rows = conn.execute(select(deliveries).order_by(deliveries.c.id)).mappings().all()
    stored = {
        r["id"]: (
            r["status"],
            r["relay"],
            r["last_reply"],
            r["message_id"],
            r["attempts"],
            as_utc(r["due_at"]),
            r["sent_at"] and as_utc(r["sent_at"]),
            r["lease_owner"],
        )
        for r in rows
    }
    assert stored == {
        sent.delivery_id: ("sent", "relay-ü", "250 ok: queued ✓", "<1.x@y>", 1, now, now, None),
        retry.delivery_id: ("pending", "r", "451 later", None, 1, later, None, None),
        bounce.delivery_id: ("bounced", "r", "550 no such user", "<3.x@y>", 1, now, None, None),
        relay_fault.delivery_id: ("pending", None, "mail: 530", None, 0, later, None, None),
    }


def _statements(engine: Engine, action: Callable[[], object]) -> list[tuple[str, Any]]:
    """The statements (and parameters) that ``action`` sends to the database."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return seen


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_acks_and_renewals_keep_off_the_status_index_when_statistics_say_nothing_is_sending(
    engine: Engine,
) -> None:
    # Statistics taken while every row was pending, as right after a campaign is
    # materialised: the planner then believes almost no row is ``sending`` and,
    # given a status test, walks the status index through every dead version.
    _prepare(engine, 3000)
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE deliveries")
    rows = outbox.claim_batch(engine, owner="a", limit=3000, lease_ttl=30)
    some = rows[:300]
    writes = _statements(
        engine,
        lambda: (
            outbox.renew_leases(engine, [r.delivery_id for r in some], owner="a", lease_ttl=30),
            outbox.record_results(engine, [_sent(r) for r in some], owner="a"),
        ),
    )
    writes = [(s, p) for s, p in writes if "deliveries" in s and "UPDATE" in s]
    assert len(writes) == 3  # the renewal, the ack's lock and the ack
    with engine.connect() as conn:
        for statement, parameters in writes:
            plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, parameters))
            assert "ix_deliveries_status" not in plan, plan


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_result_the_database_refuses_does_not_hold_back_the_others(
    engine: Engine,
) -> None:
    # A Message-ID longer than its column: PostgreSQL refuses the whole group,
    # and retrying the same write would fail forever.
    _prepare(engine, 3)
    rows = sorted(
        outbox.claim_batch(engine, owner="a", limit=5, lease_ttl=30), key=lambda r: r.delivery_id
    )
    results = Results(engine, "a")
    for n, row in enumerate(rows):
        mid = f"<{'x' * 300}@example.com>" if n == 1 else f"<{n}@example.com>"
        results.ack(claims.Ack(row.delivery_id, row.epoch, "sent", "r", "250 ok", mid))

    await asyncio.wait_for(results.flush(), timeout=30)

    assert results.unwritten() == []
    with engine.begin() as conn:
        stored = conn.execute(
            select(deliveries.c.status, deliveries.c.message_id, deliveries.c.last_reply).order_by(
                deliveries.c.id
            )
        ).all()
    assert [s.status for s in stored] == ["sent"] * 3
    assert [s.message_id for s in stored] == ["<0@example.com>", None, "<2@example.com>"]
    assert "the database refused them (StringDataRightTruncation)" in stored[1].last_reply


def test_nodes_materialising_at_once_insert_each_recipient_once(engine: Engine) -> None:
    list_id = make_list(engine)
    add_subscribers(engine, list_id, 12_000)  # three chunks
    campaign_id = make_campaign(engine)
    barrier = threading.Barrier(3)

    def node() -> int:
        barrier.wait()
        inserted = 0
        for _ in range(5):
            inserted += outbox.housekeeping(engine, max_attempts=5, chunks=1).materialised
        return inserted

    with ThreadPoolExecutor(3) as pool:
        counts = list(pool.map(lambda _: node(), range(3)))

    assert sum(counts) == 12_000
    with engine.begin() as conn:
        rows = conn.execute(
            select(deliveries.c.subscriber_id).where(deliveries.c.campaign_id == campaign_id)
        ).all()
    assert len(rows) == len({r.subscriber_id for r in rows}) == 12_000
    assert campaigns.campaign_report(engine, campaign_id)["materialised"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_claim_reads_the_subscriptions_of_its_batch_not_of_the_whole_list(
    engine: Engine,
) -> None:
    _prepare(engine, 3 * outbox.MATERIALISE_CHUNK)
    # A new connection: a pooled one still holds the materialisation's reads
    # among the statistics it has not reported yet.
    fresh = create_engine(engine.url, poolclass=NullPool)
    with fresh.begin() as conn:
        rows = claims.claim(conn, owner="a", limit=100, lease_ttl=30, now=utcnow())
        read = conn.execute(
            text(
                "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables"
                " WHERE relname = 'subscriptions'"
            )
        ).scalar_one()
    fresh.dispose()
    assert len(rows) == 100
    # Without statistics PostgreSQL hashes the eligibility test. Unbounded, that
    # read every subscription of the list for each batch (15,000 here);
    # bounded by the batch's ids, about the batch.
    assert read <= 2 * len(rows)
