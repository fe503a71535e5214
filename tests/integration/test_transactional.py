"""Transactional send (POST /api/v1/tx): durable in the outbox, sent by the normal workers."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, update

from herald.domain.clock import utcnow
from herald.services import auth, outbox
from herald.store import suppressions
from herald.store.tables import campaigns, deliveries
from tests.factories import relay, run_worker_until
from tests.sinks import Sink
from tests.webapp import WebApp, web_app

CODE_MAIL = {
    "subject": "Your code, {{ subscriber.name or 'friend' }}",
    "html": "<p>Your code is {{ data.code }}</p>",
    "text": "Your code is {{ data.code }}",
}


@pytest.fixture
async def app(database_url: str, tmp_path: Path) -> AsyncIterator[WebApp]:
    async with web_app(database_url, tmp_path) as app:
        yield app


def _headers(app: WebApp, role: str) -> dict[str, str]:
    token = auth.create_token(app.runtime.engine, f"{role}-token", role)[0]
    return {"Authorization": f"Bearer {token}"}


def _all_sent(engine: Engine, ids: list[int]) -> bool:
    with engine.begin() as conn:
        query = select(func.count()).where(deliveries.c.id.in_(ids), deliveries.c.status == "sent")
        return conn.scalar(query) == len(ids)


async def test_it_sends_each_message_with_its_data_through_a_worker(
    app: WebApp, engine: Engine, sink: Sink
) -> None:
    editor = _headers(app, "editor")
    ids = []
    for code in ("4711", "0815"):  # two messages of one content to one address
        body = {"to": "Alice@Example.com", "name": "Alice", "data": {"code": code}, **CODE_MAIL}
        queued = await app.http.post("/api/v1/tx", json=body, headers=editor)
        assert queued.status_code == 202, queued.text
        ids.append(queued.json()["delivery_id"])

    await asyncio.to_thread(
        run_worker_until, engine, [relay(sink.url)], lambda: _all_sent(engine, ids)
    )

    assert sorted(m.rcpts for m in sink.messages) == [("alice@example.com",)] * 2
    bodies = []
    for received in sink.messages:
        msg = email.message_from_bytes(received.data, policy=email.policy.default)
        assert msg["Subject"] == "Your code, Alice"
        assert msg["List-Unsubscribe"] is None and msg["List-Unsubscribe-Post"] is None
        bodies.append(msg.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    assert sorted(b.strip() for b in bodies) == ["Your code is 0815", "Your code is 4711"]
    status = await app.http.get(f"/api/v1/tx/{ids[0]}", headers=_headers(app, "viewer"))
    assert status.json()["status"] == "sent"
    listed = await app.http.get("/api/v1/campaigns", headers=editor)
    assert listed.json() == []  # the hidden carrier is no campaign of the user's


async def test_it_refuses_a_suppressed_address_and_queues_nothing(
    app: WebApp, engine: Engine
) -> None:
    with engine.begin() as conn:
        suppressions.suppress(
            conn, ["gone@example.com"], reason="hard_bounce", source="test", now=utcnow()
        )
    body = {"to": "gone@example.com", "data": {"code": "1"}, **CODE_MAIL}
    refused = await app.http.post("/api/v1/tx", json=body, headers=_headers(app, "editor"))
    assert refused.status_code == 409
    assert "suppress" in refused.json()["detail"]
    with engine.begin() as conn:
        assert conn.scalar(select(func.count()).select_from(deliveries)) == 0


async def test_it_refuses_a_viewer_a_bad_template_and_a_header_injection(app: WebApp) -> None:
    body = {"to": "bob@example.com", **CODE_MAIL}
    assert (
        await app.http.post("/api/v1/tx", json=body, headers=_headers(app, "viewer"))
    ).status_code == 403
    editor = _headers(app, "editor")
    broken = {**body, "html": "{% for %}"}
    assert (await app.http.post("/api/v1/tx", json=broken, headers=editor)).status_code in (
        400,
        422,
    )
    injected = {**body, "subject": "Hi\r\nBcc: x@example.com"}
    assert (await app.http.post("/api/v1/tx", json=injected, headers=editor)).status_code == 422
    unknown = await app.http.post(
        "/api/v1/tx",
        json={**body, "template_id": 999, "html": None, "text": None, "subject": None},
        headers=editor,
    )
    assert unknown.status_code == 404


async def test_it_sets_running_again_a_carrier_an_older_node_finished(
    app: WebApp, engine: Engine
) -> None:
    body = {"to": "carol@example.com", "data": {"code": "9"}, **CODE_MAIL}
    queued = await app.http.post("/api/v1/tx", json=body, headers=_headers(app, "editor"))
    assert queued.status_code == 202
    with engine.begin() as conn:
        carrier = conn.scalar(select(deliveries.c.tx_campaign_id))
        # What a node without carriers does: no open row has this campaign_id.
        conn.execute(update(campaigns).values(status="finished", finished_at=utcnow()))

    outbox.housekeeping(engine, max_attempts=3)

    with engine.begin() as conn:
        status = conn.scalar(select(campaigns.c.status).where(campaigns.c.id == carrier))
    assert status == "running"
