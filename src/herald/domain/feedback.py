"""Spam complaints from feedback loops: which delivery a report is about.

A report names the message by its Message-ID (Herald's own, which carries
the delivery id and an HMAC: see ``domain.mime.make_message_id``), directly or
inside an ARF report (RFC 5965: ``multipart/report`` whose third part holds
the original message or its headers).
"""

from __future__ import annotations

import hmac
import re
from email import message_from_bytes, policy
from email.message import Message

from herald.domain.mime import make_message_id
from herald.errors import InvalidInput

_OURS = re.compile(r"<?(\d{1,18})\.(t|\d{1,18})\.([0-9a-f]{16})@([^>\s]+)>?")


def delivery_from_message_id(secret: str, message_id: str) -> int | None:
    """The delivery id inside one of Herald's Message-IDs, or None.

    None for anything Herald did not sign with ``secret`` (a forged or edited
    id cannot point a complaint at another subscriber's delivery).
    """
    match = _OURS.fullmatch(message_id.strip())
    if match is None:
        return None
    delivery, campaign, _, domain = match.groups()
    campaign_id = None if campaign == "t" else int(campaign)
    try:
        expected = make_message_id(int(delivery), campaign_id, secret, domain)
    except InvalidInput:
        return None
    given = f"<{match.group(1)}.{campaign}.{match.group(3)}@{domain}>"
    return int(delivery) if hmac.compare_digest(expected, given) else None


def message_id_from_arf(raw: bytes) -> str | None:
    """The original Message-ID reported in an ARF report, or None if there is none."""
    report = message_from_bytes(raw, policy=policy.compat32)
    for part in report.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            inner = part.get_payload()
            original = inner[0] if isinstance(inner, list) and inner else None
            if isinstance(original, Message) and original.get("Message-ID"):
                return str(original["Message-ID"]).strip()
        elif kind == "text/rfc822-headers":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                headers = message_from_bytes(payload, policy=policy.compat32)
                if headers.get("Message-ID"):
                    return str(headers["Message-ID"]).strip()
    return None
