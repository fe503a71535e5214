"""Opens and clicks from a real received message, recorded without the database."""

from __future__ import annotations

import asyncio
import email
import email.policy
import html as htmllib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import Engine, select

from herald.services import campaigns, tracking
from herald.store.tables import tracking_events
from tests.factories import (
    add_subscribers,
    finished,
    make_campaign,
    make_list,
    relay,
    run_worker_until,
)
from tests.processes import free_port
from tests.sinks import Sink
from tests.webapp import WebApp, web_app

HTML = (
    '<html><body><p>Hi {{ subscriber.name }}</p><a href="https://shop.example.com/sale">Sale</a>'
    '<p><a href="{{ unsubscribe_url }}">unsubscribe</a></p></body></html>'
)


class Site:
    def __init__(self, app: WebApp) -> None:
        self.http, self.state = app.http, app.state

    @property
    def spool(self) -> tracking.Spool:
        assert self.state.spool is not None
        return self.state.spool


@pytest.fixture
async def site(database_url: str, tmp_path: Path) -> AsyncIterator[Site]:
    async with web_app(database_url, tmp_path) as app:
        yield Site(app)


def links_in(sink: Sink, rcpt: str) -> tuple[str, str]:
    """(click link, open pixel) from the HTML part received by ``rcpt``."""
    [message] = [m for m in sink.messages if rcpt in m.rcpts]
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    body = parsed.get_body(("html",))
    assert body is not None
    text = body.get_content()
    hrefs = [htmllib.unescape(h) for h in re.findall(r'href="([^"]+)"', text)]
    [click] = [h for h in hrefs if "/t/c/" in h]
    [pixel] = [htmllib.unescape(p) for p in re.findall(r'<img src="([^"]+)"', text)]
    assert not any(h == "shop.example.com/sale" for h in hrefs)
    assert any("/u/" in h for h in hrefs)  # the unsubscribe link is left alone
    return click, pixel


def send(engine: Engine, sink: Sink, campaign_id: int) -> None:
    run_worker_until(engine, [relay(sink.url)], finished(engine, campaign_id))


async def sent_campaign(engine: Engine, sink: Sink, recipients: int) -> int:
    """A campaign with tracked links, sent to ``recipients`` subscribers; its id."""
    add_subscribers(engine, make_list(engine), recipients)
    campaign_id = make_campaign(engine, html=HTML)
    await asyncio.to_thread(send, engine, sink, campaign_id)
    return campaign_id


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def test_opens_and_clicks_are_counted_unique_and_total(
    site: Site, engine: Engine, sink: Sink
) -> None:
    campaign_id = await sent_campaign(engine, sink, 3)
    click, pixel = links_in(sink, "user1@example.com")
    _, other_pixel = links_in(sink, "user2@example.com")

    for _ in range(2):
        redirect = await site.http.get(path_of(click))
        assert redirect.status_code == 302
        assert redirect.headers["location"] == "https://shop.example.com/sale"
    for url in (pixel, pixel, other_pixel):
        image = await site.http.get(path_of(url))
        assert image.headers["content-type"] == "image/gif"
    scraped = (await site.http.get("/metrics")).text
    assert re.search(r"^herald_tracking_spool_bytes [1-9]", scraped, re.MULTILINE)
    assert tracking.drain(engine, site.spool) == 5

    with engine.begin() as conn:
        stored = conn.execute(select(tracking_events.c.user_agent, tracking_events.c.ip)).all()
    assert {tuple(r) for r in stored} == {("python-httpx/" + httpx.__version__, "127.0.0.0")}
    report = campaigns.campaign_report(engine, campaign_id)
    assert report["opens"] == {"total": 3, "unique": 2}
    assert report["clicks"] == {"total": 2, "unique": 1}
    assert report["open_rate"] == round(2 / 3, 4)


async def test_a_forged_or_altered_link_records_nothing_and_redirects_nowhere(
    site: Site, engine: Engine, sink: Sink
) -> None:
    campaign_id = await sent_campaign(engine, sink, 1)
    click, _ = links_in(sink, "user1@example.com")
    elsewhere = path_of(click).split("?u=")[0] + "?u=https%3A%2F%2Fevil.example.net%2F"
    refused = await site.http.get(elsewhere)
    assert refused.status_code == 404 and "location" not in refused.headers
    bogus = await site.http.get("/t/o/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.gif")
    assert bogus.status_code == 200 and bogus.headers["content-type"] == "image/gif"
    assert tracking.drain(engine, site.spool) == 0
    assert campaigns.campaign_report(engine, campaign_id)["clicks"]["total"] == 0


async def test_clicks_are_recorded_while_the_database_is_down(
    engine: Engine, sink: Sink, tmp_path: Path
) -> None:
    campaign_id = await sent_campaign(engine, sink, 1)
    click, pixel = links_in(sink, "user1@example.com")
    # A node whose database is unreachable: nothing listens on this port.
    unreachable = f"postgresql://herald@127.0.0.1:{free_port()}/herald"
    async with web_app(unreachable, tmp_path / "down") as down:
        assert (await down.http.get(path_of(click))).status_code == 302
        assert (await down.http.get(path_of(pixel))).status_code == 200
    state = down.state
    assert state.spool is not None and state.spool.backlog() > 0
    # The database is back (here: the campaign's own): the spool drains into it.
    assert tracking.drain(engine, state.spool) == 2
    assert state.spool.backlog() == 0
    report = campaigns.campaign_report(engine, campaign_id)
    assert (report["opens"]["total"], report["clicks"]["total"]) == (1, 1)


async def test_a_campaign_can_opt_out_of_tracking(engine: Engine, sink: Sink) -> None:
    add_subscribers(engine, make_list(engine), 1)
    draft = campaigns.CampaignDraft(
        name="Plain",
        subject="Plain",
        html=HTML,
        text=None,
        from_addr="News <news@herald.test>",
        list_names=("News",),
        track=False,
    )
    campaign_id = campaigns.create_campaign(engine, draft)
    campaigns.change_status(engine, campaign_id, "start")
    await asyncio.to_thread(send, engine, sink, campaign_id)
    [message] = sink.messages
    assert b"/t/c/" not in message.data and b"/t/o/" not in message.data
    assert b"shop.example.com/sale" in message.data
