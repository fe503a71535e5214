"""A campaign sent end to end by a real worker to real SMTP sinks, on both backends."""

from __future__ import annotations

import email
import email.policy
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, select

from herald.services import campaigns, outbox
from herald.store.tables import suppressions
from tests.factories import (
    add_subscribers,
    campaign_status,
    delivery_rows,
    finished,
    make_campaign,
    make_list,
    options,
    relay,
    run_worker_until,
    set_subscription_status,
)
from tests.sinks import Sink, fail_rcpt, reply_to_all, temp_fail_then_ok

SinkFactory = Callable[..., Sink]
# The slow-ack test's lease, and an ack two and a half times slower. A lease
# of 1 s let a stall of the test machine near a second lapse leases (and so
# send again) even with renewals working; 2 s leaves room for that.
SLOW_ACK_LEASE_SECONDS = 2.0
SLOW_COMMIT_SECONDS = 2.5 * SLOW_ACK_LEASE_SECONDS


def test_it_delivers_a_campaign_once_to_each_subscriber(engine: Engine, sink: Sink) -> None:
    list_id = make_list(engine)
    emails = add_subscribers(engine, list_id, 2000)
    campaign_id = make_campaign(engine)

    run_worker_until(engine, [relay(sink.url)], finished(engine, campaign_id))

    assert sink.count() == 2000
    ids = sink.message_ids()
    assert len(ids) == 2000
    assert max(ids.values()) == 1
    assert sorted(r for m in sink.messages for r in m.rcpts) == sorted(emails)
    report = campaigns.campaign_report(engine, campaign_id)
    assert report["counts"]["sent"] == 2000
    assert report["total"] == 2000
    assert {r["status"] for r in delivery_rows(engine, campaign_id)} == {"sent"}


def test_it_personalises_each_message_and_sets_list_headers(engine: Engine, sink: Sink) -> None:
    list_id = make_list(engine)
    add_subscribers(engine, list_id, 3)
    campaign_id = make_campaign(engine)

    run_worker_until(engine, [relay(sink.url)], finished(engine, campaign_id))

    by_rcpt = {m.rcpts[0]: m for m in sink.messages}
    msg = email.message_from_bytes(by_rcpt["user2@example.com"].data, policy=email.policy.default)
    assert msg["Subject"] == "Hello User 2"
    assert msg["To"].addresses[0].addr_spec == "user2@example.com"
    assert msg["From"].addresses[0].addr_spec == "news@herald.test"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "<http://herald.test/u/" in msg["List-Unsubscribe"]
    assert "mailto:" in msg["List-Unsubscribe"]
    html = msg.get_body(("html",))
    text = msg.get_body(("plain",))
    assert html is not None
    assert text is not None
    assert "Hi User 2 from City2" in html.get_content()
    assert "Hi User 2 from City2" in text.get_content()
    rows = {r["email"]: r for r in delivery_rows(engine, campaign_id)}
    assert rows["user2@example.com"]["message_id"] == msg["Message-ID"]


def test_it_retries_a_temporary_failure_then_delivers(
    engine: Engine, sink_factory: SinkFactory
) -> None:
    sink = sink_factory(temp_fail_then_ok(1))
    list_id = make_list(engine)
    add_subscribers(engine, list_id, 20)
    campaign_id = make_campaign(engine)

    run_worker_until(engine, [relay(sink.url)], finished(engine, campaign_id))

    rows = delivery_rows(engine, campaign_id)
    assert {r["status"] for r in rows} == {"sent"}
    assert all(r["attempts"] == 2 for r in rows)
    assert sink.count() == 20
    with engine.begin() as conn:
        assert conn.execute(select(suppressions)).all() == []


def test_it_bounces_and_suppresses_a_rejected_recipient(
    engine: Engine, sink_factory: SinkFactory
) -> None:
    sink = sink_factory(fail_rcpt({"user3@example.com": 550, "user7@example.com": 550}))
    list_id = make_list(engine)
    add_subscribers(engine, list_id, 10)
    campaign_id = make_campaign(engine)

    run_worker_until(engine, [relay(sink.url)], finished(engine, campaign_id))

    rows = {r["email"]: r for r in delivery_rows(engine, campaign_id)}
    bounced = {e for e, r in rows.items() if r["status"] == "bounced"}
    assert bounced == {"user3@example.com", "user7@example.com"}
    assert all(rows[e]["attempts"] == 1 for e in bounced)  # no retry of a hard bounce
    assert "550" in (rows["user3@example.com"]["last_reply"] or "")
    with engine.begin() as conn:
        suppressed = set(conn.scalars(select(suppressions.c.email)))
    assert suppressed == bounced
    assert sink.count() == 8

    # A later campaign never even materialises the suppressed addresses.
    second = make_campaign(engine)
    run_worker_until(engine, [relay(sink.url)], finished(engine, second))
    assert {r["email"] for r in delivery_rows(engine, second)} == set(rows) - bounced


def test_a_reply_with_a_nul_byte_bounces_and_the_campaign_finishes(
    engine: Engine, sink_factory: SinkFactory
) -> None:
    # PostgreSQL text cannot hold NUL: the ack writing such a reply used to
    # fail, and the acker retried it forever while the campaign stood still.
    sink = sink_factory(reply_to_all(550, "5.1.1 no\x00such user", stage="rcpt"))
    list_id = make_list(engine)
    add_subscribers(engine, list_id, 3)
    campaign_id = make_campaign(engine)

    run_worker_until(engine, [relay(sink.url)], finished(engine, campaign_id))

    rows = delivery_rows(engine, campaign_id)
    assert [r["status"] for r in rows] == ["bounced"] * 3
    assert all("550 5.1.1 nosuch user" in (r["last_reply"] or "") for r in rows)


def test_it_skips_unsubscribed_and_unconfirmed_double_opt_in(engine: Engine, sink: Sink) -> None:
    news = make_list(engine)
    add_subscribers(engine, news, 5)
    set_subscription_status(engine, "user4@example.com", "unsubscribed")
    beta = make_list(engine, "Beta", double=True)
    add_subscribers(engine, beta, 2, start=100, status="unconfirmed")
    campaign_id = make_campaign(engine)
    beta_campaign = make_campaign(engine, list_name="Beta")

    run_worker_until(
        engine,
        [relay(sink.url)],
        lambda: finished(engine, campaign_id)() and finished(engine, beta_campaign)(),
    )

    received = {r for m in sink.messages for r in m.rcpts}
    assert received == {f"user{n}@example.com" for n in (1, 2, 3, 5)}
    assert delivery_rows(engine, beta_campaign) == []


def test_it_fails_one_delivery_whose_template_breaks_not_the_campaign(
    engine: Engine, sink: Sink
) -> None:
    list_id = make_list(engine)
    add_subscribers(engine, list_id, 4)
    html = "{% if subscriber.name == 'User 2' %}{{ 1 / 0 }}{% endif %}<p>ok</p>"
    campaign_id = make_campaign(engine, html=html)

    run_worker_until(engine, [relay(sink.url)], finished(engine, campaign_id))

    rows = {r["email"]: r for r in delivery_rows(engine, campaign_id)}
    assert rows["user2@example.com"]["status"] == "failed"
    assert "render" in rows["user2@example.com"]["last_reply"]
    assert sorted(r["status"] for r in rows.values()) == ["failed", "sent", "sent", "sent"]
    assert sink.count() == 3


def test_it_pauses_within_a_second_and_resumes(engine: Engine, sink: Sink) -> None:
    list_id = make_list(engine)
    add_subscribers(engine, list_id, 300)
    campaign_id = make_campaign(engine)
    campaigns.change_status(engine, campaign_id, "pause")

    # Paused before any claim: the worker materialises but sends nothing.
    run_worker_until(
        engine,
        [relay(sink.url)],
        lambda: campaigns.campaign_report(engine, campaign_id)["materialised"],
        opts=options(),
    )
    assert sink.count() == 0
    assert campaign_status(engine, campaign_id) == "paused"

    campaigns.change_status(engine, campaign_id, "resume")
    run_worker_until(engine, [relay(sink.url)], finished(engine, campaign_id))
    assert sink.count() == 300


def test_a_slow_ack_keeps_its_lease_so_nothing_is_sent_twice(
    engine: Engine, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sent rows whose ack takes longer than the lease (a database slow to commit)
    keep being renewed: no node, this one included, re-queues and resends them."""
    add_subscribers(engine, make_list(engine), 30)
    campaign_id = make_campaign(engine)
    record = outbox.record_results

    def slow_record(*args: Any, **kwargs: Any) -> int:
        time.sleep(SLOW_COMMIT_SECONDS)  # runs in the acker's thread
        return record(*args, **kwargs)

    monkeypatch.setattr(outbox, "record_results", slow_record)
    opts = options(lease_ttl=SLOW_ACK_LEASE_SECONDS, keeper_interval=0.1)
    run_worker_until(engine, [relay(sink.url)], finished(engine, campaign_id), opts=opts)

    ids = sink.message_ids()
    assert len(ids) == 30
    assert max(ids.values()) == 1
    assert {r["status"] for r in delivery_rows(engine, campaign_id)} == {"sent"}
