"""Public subscriber pages: subscribe form, double opt-in, confirm, preferences."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from herald.domain import tokens
from herald.services import auth, lists
from herald.store import signups, subscriptions
from herald.store.tables import deliveries, subscribers, unsubscribes
from tests.factories import (
    SECRET,
    add_subscribers,
    finished,
    make_campaign,
    relay,
    run_worker_until,
)
from tests.sinks import Sink
from tests.webapp import WebApp, web_app

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
async def app(database_url: str, tmp_path: Path) -> AsyncIterator[WebApp]:
    async with web_app(database_url, tmp_path) as app:
        yield app


def _public_list(engine: Engine, name: str = "News", *, double: bool = False) -> int:
    return lists.create_list(engine, name, double_optin=double, public=True)


def _subscriber_id(engine: Engine, address: str) -> int | None:
    with engine.begin() as conn:
        return conn.scalar(select(subscribers.c.id).where(subscribers.c.email == address))


def _statuses(engine: Engine, address: str) -> dict[int, str]:
    subscriber_id = _subscriber_id(engine, address)
    if subscriber_id is None:
        return {}
    with engine.begin() as conn:
        return subscriptions.statuses(conn, subscriber_id)


def _tx_count(engine: Engine) -> int:
    with engine.begin() as conn:
        query = select(func.count()).where(deliveries.c.tx_campaign_id.is_not(None))
        return int(conn.scalar(query) or 0)


def _tx_sent(engine: Engine) -> bool:
    with engine.begin() as conn:
        query = select(deliveries.c.status).where(deliveries.c.tx_campaign_id.is_not(None))
        return list(conn.scalars(query)) == ["sent"]


def _link(sink: Sink, address: str, path: str) -> str:
    """The first link to ``path`` in the text part of the message ``address`` received."""
    raw = next(m.data for m in sink.messages if m.rcpts == (address,))
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    match = re.search(rf"http://herald\.test({path}/[A-Za-z0-9_-]+)", text)
    assert match is not None, text
    return match.group(1)


async def test_it_subscribes_at_once_to_a_single_opt_in_list(app: WebApp, engine: Engine) -> None:
    list_id = _public_list(engine)
    shown = await app.http.get(f"/subscribe/{list_id}")
    assert shown.status_code == 200 and 'name="email"' in shown.text

    done = await app.http.post(
        f"/subscribe/{list_id}", data={"email": "Ann@Example.com", "name": "Ann"}
    )

    assert done.status_code == 200 and "You are subscribed" in done.text
    assert _statuses(engine, "ann@example.com") == {list_id: "confirmed"}
    ann = _subscriber_id(engine, "ann@example.com") or 0
    with engine.begin() as conn:
        [consent] = signups.consent_log(conn, ann)
    assert (consent["action"], consent["source"], consent["ip"]) == (
        "subscribe",
        "form",
        "127.0.0.0",
    )
    assert _tx_count(engine) == 0


async def test_it_confirms_a_double_opt_in_from_the_link_in_the_email_it_sent(
    app: WebApp, engine: Engine, sink: Sink
) -> None:
    list_id = _public_list(engine, double=True)
    asked = await app.http.post(f"/subscribe/{list_id}", data={"email": "bo@example.com"})
    assert asked.status_code == 200 and "Check your inbox" in asked.text
    assert _statuses(engine, "bo@example.com") == {list_id: "unconfirmed"}

    await asyncio.to_thread(run_worker_until, engine, [relay(sink.url)], lambda: _tx_sent(engine))
    path = _link(sink, "bo@example.com", "/confirm")

    shown = await app.http.get(path)
    assert shown.status_code == 200 and 'method="post"' in shown.text
    assert _statuses(engine, "bo@example.com") == {list_id: "unconfirmed"}  # GET changed nothing
    confirmed = await app.http.post(path)
    assert confirmed.status_code == 200 and "Subscription confirmed" in confirmed.text
    assert _statuses(engine, "bo@example.com") == {list_id: "confirmed"}
    again = await app.http.post(path)
    assert again.status_code == 200 and "Subscription confirmed" in again.text
    bo = _subscriber_id(engine, "bo@example.com") or 0
    with engine.begin() as conn:
        log = signups.consent_log(conn, bo)
    assert [c["action"] for c in log] == ["subscribe", "confirm"]


async def test_it_sends_one_confirmation_per_address_and_never_tells_who_is_subscribed(
    app: WebApp, engine: Engine
) -> None:
    list_id = _public_list(engine, double=True)
    add_subscribers(engine, list_id, 1)  # user1@example.com, confirmed
    answers = set()
    for address in ["new@example.com"] * 3 + ["user1@example.com"]:
        reply = await app.http.post(f"/subscribe/{list_id}", data={"email": address})
        assert reply.status_code == 200
        answers.add(reply.text)
    assert len(answers) == 1  # the same page whoever asked
    assert _tx_count(engine) == 1  # one confirmation, none to the known subscriber
    assert _statuses(engine, "user1@example.com") == {list_id: "confirmed"}


async def test_it_shows_the_form_again_for_an_invalid_address(app: WebApp, engine: Engine) -> None:
    list_id = _public_list(engine)
    reply = await app.http.post(
        f"/subscribe/{list_id}", data={"email": "not an <address>", "name": "<b>Eve</b>"}
    )
    assert reply.status_code == 400
    assert 'role="alert"' in reply.text and 'name="email"' in reply.text
    assert "&lt;b&gt;Eve&lt;/b&gt;" in reply.text and "<b>Eve</b>" not in reply.text


async def test_it_ignores_a_filled_honeypot_and_slows_a_flood_down(
    app: WebApp, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    list_id = _public_list(engine)
    bot = await app.http.post(
        f"/subscribe/{list_id}", data={"email": "bot@example.com", "website": "http://spam"}
    )
    assert bot.status_code == 200
    assert _subscriber_id(engine, "bot@example.com") is None
    codes = []
    for n in range(10):
        reply = await app.http.post(f"/subscribe/{list_id}", data={"email": f"p{n}@example.com"})
        codes.append(reply.status_code)
    assert codes[:9] == [200] * 9 and codes[9] == 429
    assert int(reply.headers["Retry-After"]) > 0
    assert _subscriber_id(engine, "p9@example.com") is None
    elsewhere_ip = ("198.51.100.9", 1)
    async with web_app(database_url, tmp_path / "other", client=elsewhere_ip) as other:
        elsewhere = await other.http.post(f"/subscribe/{list_id}", data={"email": "x@example.com"})
    assert elsewhere.status_code == 200  # the limit is per client address


@pytest.mark.parametrize("page", ["/confirm", "/preferences"])
async def test_it_answers_404_to_forged_links_and_private_lists(
    app: WebApp, engine: Engine, page: str
) -> None:
    private = lists.create_list(engine, "Staff", double_optin=True)
    assert (await app.http.get(f"/subscribe/{private}")).status_code == 404
    posted = await app.http.post(f"/subscribe/{private}", data={"email": "a@example.com"})
    assert posted.status_code == 404 and _subscriber_id(engine, "a@example.com") is None
    add_subscribers(engine, private, 1, status="unconfirmed")
    purpose, values = (
        (tokens.CONFIRM, (1, private)) if page == "/confirm" else (tokens.PREFERENCES, (1,))
    )
    good = tokens.sign(SECRET, purpose, values)
    foreign = tokens.sign("another-secret", purpose, values)
    flipped = good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1]
    for token in (foreign, flipped, good[:-3], tokens.sign(SECRET, tokens.UNSUBSCRIBE, (1, 1))):
        assert (await app.http.get(f"{page}/{token}")).status_code == 404
        assert (
            await app.http.post(f"{page}/{token}", data={"list": str(private)})
        ).status_code == 404
    assert _statuses(engine, "user1@example.com") == {private: "unconfirmed"}


async def test_it_saves_preferences_from_the_link_in_a_campaign_message(
    app: WebApp, engine: Engine, sink: Sink
) -> None:
    news = _public_list(engine, "News")
    offers = _public_list(engine, "Offers", double=True)
    staff = lists.create_list(engine, "Staff")
    add_subscribers(engine, news, 1)
    campaign_id = make_campaign(
        engine, html='<p>Hi</p><p><a href="{{ preferences_url }}">preferences</a></p>'
    )
    await asyncio.to_thread(
        run_worker_until, engine, [relay(sink.url)], finished(engine, campaign_id)
    )
    path = _link(sink, "user1@example.com", "/preferences")

    shown = await app.http.get(path)
    assert shown.status_code == 200
    assert "News" in shown.text and "Offers" in shown.text and "Staff" not in shown.text
    assert re.search(rf'value="{news}" checked', shown.text)
    assert not re.search(rf'value="{offers}" checked', shown.text)
    assert _statuses(engine, "user1@example.com") == {news: "confirmed"}  # GET changed nothing

    saved = await app.http.post(path, data={"list": [str(offers), str(staff)]})

    assert saved.status_code == 200 and "saved" in saved.text
    assert _statuses(engine, "user1@example.com") == {news: "unsubscribed", offers: "confirmed"}
    with engine.begin() as conn:
        reasons = list(conn.scalars(select(unsubscribes.c.reason)))
    assert reasons == ["preferences"]


async def test_it_opens_the_form_when_a_list_is_made_public_through_the_api(
    app: WebApp, engine: Engine
) -> None:
    token = auth.create_token(engine, "editor-token", "editor")[0]
    headers = {"Authorization": f"Bearer {token}"}
    created = await app.http.post("/api/v1/lists", json={"name": "Club"}, headers=headers)
    list_id = created.json()["id"]
    assert created.json()["public"] is False
    assert (await app.http.get(f"/subscribe/{list_id}")).status_code == 404

    changed = await app.http.patch(
        f"/api/v1/lists/{list_id}", json={"public": True}, headers=headers
    )

    assert changed.status_code == 200 and changed.json()["public"] is True
    shown = await app.http.get(f"/subscribe/{list_id}")
    assert shown.status_code == 200 and "Subscribe to Club" in shown.text
