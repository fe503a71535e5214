"""Transactional send: one templated message to one address, through the outbox.

The message is durable (a ``deliveries`` row) when this returns, and the
normal workers send it: same relays, breakers, retries and Message-ID
dedup as campaigns. Each distinct content rides on a hidden carrier
campaign (store.transactional) so workers compile it once, not per message.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

from herald.domain.addresses import normalise_email, parse_from
from herald.domain.clock import utcnow
from herald.domain.rendering import compile_campaign
from herald.errors import Conflict, InvalidInput, NotFound
from herald.store import suppressions
from herald.store import templates as store_templates
from herald.store import transactional as store

MAX_DATA_BYTES = 64 * 1024


@dataclass(frozen=True)
class TxMessage:
    """One transactional message: a stored template or inline content, for one address."""

    to: str
    from_addr: str
    data: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    template_id: int | None = None
    subject: str | None = None
    html: str | None = None
    text: str | None = None


def send_transactional(engine: Engine, message: TxMessage) -> int:
    """Queue ``message``; returns its delivery id (committed before this returns).

    Raises InvalidInput (bad address, sender, content or data; TemplateError
    when the content cannot compile), NotFound (unknown template), Conflict
    (the address is suppressed or blocklisted).
    """
    with engine.begin() as conn:
        return enqueue(conn, message)


def enqueue(conn: Connection, message: TxMessage) -> int:
    """``send_transactional`` inside the caller's transaction (double opt-in uses it).

    Side effect: the recipient becomes a subscriber (enabled, on no list) if new.
    """
    to = normalise_email(message.to)
    _check_data(message.data)
    now = utcnow()
    content = _content(conn, message)
    key = _carrier_key(content)
    carrier = store.find_carrier(conn, key)
    if carrier is None:
        compile_campaign(content["subject"], content["html"], content["text"])
        carrier = store.create_carrier(conn, key, content, now=now)
    if suppressions.is_suppressed(conn, to):
        raise Conflict(f"{to} is on the suppression list: nothing was sent")
    recipient = store.upsert_recipient(conn, to, name=message.name[:255], now=now)
    if recipient["status"] != "enabled":
        raise Conflict(f"{to} is blocklisted: nothing was sent")
    return store.insert_delivery(conn, carrier, int(recipient["id"]), data=message.data, now=now)


def delivery_status(engine: Engine, delivery_id: int) -> dict[str, Any]:
    """Where a transactional message is: status, attempts, last reply. Raises NotFound."""
    with engine.begin() as conn:
        row = store.delivery_status(conn, delivery_id)
    if row is None:
        raise NotFound(f"no transactional message {delivery_id}")
    return row


def _content(conn: Connection, message: TxMessage) -> dict[str, Any]:
    """From, subject, html and text of the message, from its template or inline."""
    parse_from(message.from_addr)
    if message.template_id is not None:
        if message.html is not None or message.text is not None:
            raise InvalidInput("give either template_id or html/text, not both")
        template = store_templates.get_template(conn, message.template_id)
        if template is None:
            raise NotFound(f"no template {message.template_id}")
        subject = message.subject if message.subject is not None else template["subject"]
        html, text = template["html"], template["text"]
    else:
        if message.subject is None or (message.html is None and message.text is None):
            raise InvalidInput("give template_id, or a subject with html and/or text")
        subject, html, text = message.subject, message.html or "", message.text
    if any(c in subject for c in "\r\n\0"):
        raise InvalidInput("the subject must be a single line")
    return {
        "from_addr": message.from_addr,
        "subject": subject,
        "html": html,
        "text": text,
        "template_id": message.template_id,
    }


def _carrier_key(content: dict[str, Any]) -> str:
    """A name for the carrier of this exact content (a changed template gets a new one)."""
    parts = [content[k] or "" for k in ("from_addr", "subject", "html", "text")]
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return f"tx:{digest[:40]}"


def _check_data(data: Any) -> None:
    if not isinstance(data, dict):
        raise InvalidInput("data must be an object")
    try:
        size = len(json.dumps(data))
    except (TypeError, ValueError) as exc:
        raise InvalidInput("data must be plain JSON") from exc
    if size > MAX_DATA_BYTES:
        raise InvalidInput(f"data is larger than {MAX_DATA_BYTES} bytes")
