"""A campaign seen before it is sent: rendered for one subscriber, or mailed as a test.

Neither touches the outbox: a preview writes nothing, and a test message goes
straight to a relay through the SMTP transport, to the given addresses only
(never to the campaign's lists), marked "[Test] " and without tracking.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from herald.delivery.kits import SendKit, make_kit
from herald.delivery.smtp import SmtpConnection
from herald.domain.addresses import normalise_email
from herald.domain.relays import RelayConfig
from herald.errors import Conflict, InvalidInput, NotFound, RelayUnavailable
from herald.services import relays as relay_service
from herald.store import campaigns as store
from herald.store import subscribers as store_subscribers

MAX_TEST_ADDRESSES = 10
TEST_PREFIX = "[Test] "


@dataclass(frozen=True)
class TestResult:
    """What the relay said for one test address."""

    address: str
    ok: bool
    relay: str | None
    reply: str


def preview_campaign(
    engine: Engine, secret: str, campaign_id: int, *, subscriber_id: int, base_url: str
) -> dict[str, Any]:
    """The campaign rendered for one subscriber: ``{"subject", "html", "text"}``.

    No side effects (no delivery, no tracking event). Raises NotFound (campaign
    or subscriber), TemplateError, RenderError (the template fails for them).
    """
    with engine.begin() as conn:
        campaign = store.get_campaign(conn, campaign_id)
        subscriber = store_subscribers.get_subscriber(conn, subscriber_id)
    if subscriber is None:
        raise NotFound(f"no subscriber {subscriber_id}")
    kit = make_kit(campaign, secret=secret, base_url=base_url)
    rendered = kit.compiled.render(
        {
            "subscriber": {
                "email": subscriber["email"],
                "name": subscriber["name"],
                "attribs": subscriber["attribs"],
            },
            "campaign": kit.public,
            "unsubscribe_url": kit.unsubscribe_url(subscriber_id),
        }
    )
    return {"subject": rendered.subject, "html": rendered.html, "text": rendered.text}


async def send_test(
    engine: Engine,
    secret: str,
    campaign_id: int,
    *,
    addresses: list[str],
    env_relays: list[RelayConfig],
    base_url: str,
) -> list[TestResult]:
    """Send the campaign now to each of ``addresses`` (at most 10) as a test.

    Relays: the stored enabled ones, else ``env_relays`` (HERALD_RELAYS); each
    address goes to the first relay that answers. Returns one result per
    address (a refused address is a result, not an error). Raises InvalidInput
    (bad or too many addresses), NotFound, TemplateError, Conflict (no relay
    configured), RelayUnavailable (no relay could be reached for any address).
    """
    rcpts = _checked_addresses(addresses)
    # The reads are blocking: off the event loop, which serves other requests.
    campaign, stored = await asyncio.to_thread(_load, engine, secret, campaign_id)
    kit = make_kit(campaign, secret=secret, base_url=base_url)
    relays = stored or env_relays
    if not relays:
        raise Conflict("no relay is configured: add one (herald relays add) or set HERALD_RELAYS")
    connections = [SmtpConnection(relay) for relay in relays]
    try:
        results = [await _send_one(kit, connections, rcpt) for rcpt in rcpts]
    finally:
        for connection in connections:
            await connection.close()
    if all(r.relay is None for r in results):
        raise RelayUnavailable(f"no relay could be reached: {results[0].reply}")
    return results


def _load(
    engine: Engine, secret: str, campaign_id: int
) -> tuple[dict[str, Any], list[RelayConfig]]:
    with engine.begin() as conn:
        campaign = store.get_campaign(conn, campaign_id)
    return campaign, relay_service.load_relay_configs(engine, secret)


def _checked_addresses(addresses: list[str]) -> list[str]:
    if not addresses:
        raise InvalidInput("give at least one address")
    if len(addresses) > MAX_TEST_ADDRESSES:
        raise InvalidInput(f"a test goes to at most {MAX_TEST_ADDRESSES} addresses")
    return list(dict.fromkeys(normalise_email(a) for a in addresses))


async def _send_one(kit: SendKit, connections: list[SmtpConnection], rcpt: str) -> TestResult:
    """Try each relay in turn until one gives an answer about this message."""
    data = _test_message(kit, rcpt)
    reply = "no relay"
    for connection in connections:
        outcome = await connection.send(kit.envelope_from, rcpt, data, prepared=True)
        if outcome.ok or not outcome.before_envelope:
            return TestResult(rcpt, outcome.ok, connection.relay.name, outcome.reply)
        reply = f"{connection.relay.name}: {outcome.reply}"
    return TestResult(rcpt, False, None, reply)


def _test_message(kit: SendKit, rcpt: str) -> bytes:
    """The campaign rendered for ``rcpt`` as a stranger, marked as a test, untracked."""
    rendered = kit.compiled.render(
        {
            "subscriber": {"email": rcpt, "name": "", "attribs": {}},
            "campaign": kit.public,
            "unsubscribe_url": f"{kit.base_url}/",
        }
    )
    return kit.builder.build(
        to_addr=rcpt,
        to_name="",
        subject=TEST_PREFIX + rendered.subject,
        html=rendered.html_parts,
        text=rendered.text_parts,
        message_id=f"<test.{secrets.token_hex(8)}@{kit.domain}>",
        unsubscribe_url=f"{kit.base_url}/",
    )
