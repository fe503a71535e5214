"""One-click unsubscribe (RFC 8058) from the header of a real received message."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select

from herald.services.campaigns import campaign_report
from herald.store import subscriptions
from herald.store.tables import unsubscribes
from tests.factories import (
    add_subscribers,
    finished,
    make_campaign,
    make_list,
    relay,
    run_worker_until,
)
from tests.sinks import Sink
from tests.webapp import web_app


@pytest.fixture
async def client(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with web_app(database_url, tmp_path) as app:
        yield app.http


async def _send_campaign(engine: Engine, sink: Sink, recipients: int) -> None:
    """Send a campaign to user1..userN@example.com through ``sink``, to the end."""
    list_id = make_list(engine)
    add_subscribers(engine, list_id, recipients)
    campaign_id = make_campaign(engine)
    await asyncio.to_thread(
        run_worker_until, engine, [relay(sink.url)], finished(engine, campaign_id)
    )


def _link_for(sink: Sink, address: str) -> str:
    raw = next(m.data for m in sink.messages if m.rcpts == (address,))
    header = email.message_from_bytes(raw, policy=email.policy.default)["List-Unsubscribe"]
    match = re.search(r"<(http[^>]+)>", str(header))
    assert match is not None
    return match.group(1).removeprefix("http://herald.test")


def _status(engine: Engine, subscriber_id: int) -> set[str]:
    with engine.begin() as conn:
        return set(subscriptions.statuses(conn, subscriber_id).values())


async def test_it_unsubscribes_with_a_one_click_post_and_never_with_a_get(
    engine: Engine, sink: Sink, client: httpx.AsyncClient
) -> None:
    await _send_campaign(engine, sink, 3)
    path = _link_for(sink, "user2@example.com")

    shown = await client.get(path)
    assert shown.status_code == 200
    assert 'method="post"' in shown.text
    assert _status(engine, 2) == {"confirmed"}  # a GET changes nothing

    done = await client.post(
        path,
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200
    assert "unsubscribed" in done.text
    assert _status(engine, 2) == {"unsubscribed"}
    assert _status(engine, 1) == {"confirmed"}
    again = await client.post(path, content="List-Unsubscribe=One-Click")
    assert again.status_code == 200  # idempotent


@pytest.mark.parametrize("mangle", ["flip", "truncate", "foreign"])
async def test_it_answers_404_to_a_forged_link_and_changes_nothing(
    engine: Engine, sink: Sink, client: httpx.AsyncClient, mangle: str
) -> None:
    await _send_campaign(engine, sink, 1)
    path = _link_for(sink, "user1@example.com")
    token = path.rsplit("/", 1)[1]
    forged = {
        "flip": token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:],
        "truncate": token[:-4],
        "foreign": "AAAAAAAAAAEAAAAAAAAAAQWuvLy6MZShao3Gjw",
    }[mangle]

    assert (await client.get(f"/u/{forged}")).status_code == 404
    assert (
        await client.post(f"/u/{forged}", content="List-Unsubscribe=One-Click")
    ).status_code == 404
    assert _status(engine, 1) == {"confirmed"}


async def test_it_keeps_the_reason_given_on_the_page_and_counts_it_in_the_report(
    engine: Engine, sink: Sink, client: httpx.AsyncClient
) -> None:
    await _send_campaign(engine, sink, 3)
    page = await client.get(_link_for(sink, "user1@example.com"))
    assert 'name="reason"' in page.text and "<textarea" in page.text

    done = await client.post(
        _link_for(sink, "user1@example.com"),
        data={"reason": "too_many", "comment": "  weekly\r\nwould be fine ", "confirm": "yes"},
    )
    one_click = await client.post(
        _link_for(sink, "user2@example.com"), content="List-Unsubscribe=One-Click"
    )

    assert done.status_code == one_click.status_code == 200
    assert _status(engine, 1) == _status(engine, 2) == {"unsubscribed"}
    with engine.begin() as conn:
        rows = conn.execute(
            select(unsubscribes.c.subscriber_id, unsubscribes.c.reason, unsubscribes.c.comment)
        ).all()
    assert sorted(tuple(r) for r in rows) == [(1, "too_many", "weekly would be fine"), (2, "", "")]
    assert campaign_report(engine, 1)["unsubscribes"] == 2
