"""A campaign sent through a real Postfix relay (Debian's), which relays into a sink.

Herald's worker talks SMTP to a private Postfix on 127.0.0.1; Postfix queues
each message and relays it on its own schedule into an aiosmtpd sink. So the
worker is finished when Postfix has *accepted* everything, and the tests then
wait, with a deadline, for Postfix to have delivered it.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Callable

from sqlalchemy import Engine, select

from herald.services import campaigns
from herald.store.tables import suppressions
from tests.factories import (
    add_subscribers,
    delivery_rows,
    finished,
    make_campaign,
    make_list,
    relay,
    run_worker_until,
)
from tests.postfix import PostfixRelay
from tests.processes import wait_until
from tests.sinks import Received, fail_rcpt

RELAY_DEADLINE = 60.0


def _is_bounce_report(message: Received) -> bool:
    """Sent with the null sender, as every delivery status report is (RFC 5321 4.5.5)."""
    return message.mail_from in {"", "<>"}


def _wait_for_sink(postfix: PostfixRelay, count: int) -> None:
    try:
        wait_until(
            lambda: postfix.sink.count() >= count,
            RELAY_DEADLINE,
            f"Postfix to relay {count} messages into the sink",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- maillog ---\n{postfix.log()}") from None


def test_it_delivers_every_subscriber_once_through_postfix(
    engine: Engine, postfix_relay: PostfixRelay
) -> None:
    list_id = make_list(engine)
    emails = add_subscribers(engine, list_id, 200)
    campaign_id = make_campaign(engine)

    run_worker_until(
        engine, [relay(postfix_relay.url, name="postfix")], finished(engine, campaign_id)
    )
    _wait_for_sink(postfix_relay, len(emails))

    sink = postfix_relay.sink
    ids = sink.message_ids()
    assert len(ids) == 200
    assert max(ids.values()) == 1
    assert sorted(r for m in sink.messages for r in m.rcpts) == sorted(emails)
    assert not any(_is_bounce_report(m) for m in sink.messages)
    rows = delivery_rows(engine, campaign_id)
    assert {r["status"] for r in rows} == {"sent"}
    assert {r["relay"] for r in rows} == {"postfix"}
    # Postfix's reply to the final dot, naming the queue file it took.
    assert all(re.match(r"dot: 250 .*queued as", r["last_reply"] or "") for r in rows)
    assert {r["message_id"] for r in rows} == set(ids)
    assert campaigns.campaign_report(engine, campaign_id)["counts"]["sent"] == 200

    by_rcpt = {m.rcpts[0]: m for m in sink.messages}
    msg = email.message_from_bytes(by_rcpt["user7@example.com"].data, policy=email.policy.default)
    assert msg["Subject"] == "Hello User 7"
    html = msg.get_body(("html",))
    assert html is not None
    assert "Hi User 7 from City7" in html.get_content()
    assert "by relay.herald.test (Postfix)" in " ".join(str(msg["Received"]).split())


def test_it_counts_a_recipient_postfix_bounces_later_as_sent(
    engine: Engine, postfix_factory: Callable[..., PostfixRelay]
) -> None:
    """Postfix answers 250 to Herald and only later meets the 550, so it bounces
    by mail: a report to the envelope sender. Herald cannot learn of such an
    asynchronous bounce over SMTP; that is why it needs a bounce mailbox.
    """
    postfix = postfix_factory(fail_rcpt({"user3@example.com": 550}))
    list_id = make_list(engine)
    add_subscribers(engine, list_id, 10)
    campaign_id = make_campaign(engine)

    run_worker_until(engine, [relay(postfix.url, name="postfix")], finished(engine, campaign_id))
    _wait_for_sink(postfix, 10)  # nine messages and one bounce report

    rows = {r["email"]: r for r in delivery_rows(engine, campaign_id)}
    assert rows["user3@example.com"]["status"] == "sent"
    assert (rows["user3@example.com"]["last_reply"] or "").startswith("dot: 250")
    with engine.begin() as conn:
        assert conn.execute(select(suppressions)).all() == []
    messages = postfix.sink.messages
    delivered = {r for m in messages if not _is_bounce_report(m) for r in m.rcpts}
    assert delivered == set(rows) - {"user3@example.com"}
    reports = [m for m in messages if _is_bounce_report(m)]
    assert [m.rcpts for m in reports] == [("news@herald.test",)]
    report = reports[0].data.decode("utf-8", "replace")
    assert "user3@example.com" in report
    assert "550" in report
