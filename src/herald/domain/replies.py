"""What an SMTP outcome means for a delivery.

`classify` turns "what stage we were at, what the relay said" into one of four
kinds, which decide what happens next:

- ``sent``: the relay took responsibility for the message (2xx to the final dot).
- ``temporary``: try again later, preferably on another relay (4xx, timeouts,
  refused or dropped connections).
- ``bounce``: the relay refused this recipient for good; the address is
  suppressed.
- ``relay_broken``: the relay refuses us, whoever the recipient (bad
  credentials, relaying denied, TLS failure, sender not allowed, a protocol
  error). Nobody is bounced; the relay is failed and the message retried.

Failures that come with no reply code but are still the relay's (or our
configuration's) fault, such as a TLS certificate that does not verify or a
relay that offers no STARTTLS or AUTH, are built with `relay_fault`.

Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Stage = Literal["connect", "ehlo", "tls", "auth", "mail", "rcpt", "data", "dot"]
OutcomeKind = Literal["sent", "temporary", "bounce", "relay_broken"]

REPLY_MAX_CHARS = 200

# Stages before the envelope: a refusal there is about us, never a recipient.
_SESSION_STAGES = frozenset({"connect", "ehlo", "tls", "auth", "mail"})
_AUTH_CODES = frozenset({530, 534, 535, 538})
_BOUNCE_CODES = frozenset({550, 551, 552, 553})
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_WHITESPACE = re.compile(r"\s+")
# Texts by which relays say "you may not send through me"; checked before any
# recipient reading, since Postfix reports its sender/client restrictions at RCPT.
_RELAY_TEXT = re.compile(
    r"relay(ing)? (access )?(denied|not permitted|prohibited)|unable to relay"
    r"|(we )?do not relay|relay not allowed|authentication required|must authenticate"
    r"|not authenticated|unauthenticated|authentication failed|sender address rejected"
    r"|client host rejected|helo command rejected|sender (is )?not (allowed|authorized)"
    r"|(email )?address is not verified|identities failed",
    re.IGNORECASE,
)
_RECIPIENT_TEXT = re.compile(
    r"recipient|mailbox|user unknown|unknown user|no such user|user not found"
    r"|account (is )?(disabled|inactive|does not exist)|does not exist|undeliverable"
    r"|unrouteable|invalid address|address rejected|no such (domain|address)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class SendOutcome:
    """The classified result of one SMTP transaction.

    ``reply`` is short and single-line, for storage (``"rcpt: 550 5.1.1 …"``).
    ``ambiguous`` is True when the final dot was sent and no reply was read: the
    relay may have accepted the message, so a retry may duplicate it.
    """

    kind: OutcomeKind
    code: int | None
    reply: str
    ambiguous: bool = False
    stage: Stage | None = None

    @property
    def ok(self) -> bool:
        """True when the relay accepted the message."""
        return self.kind == "sent"

    @property
    def before_envelope(self) -> bool:
        """Did it go wrong before RCPT (so the relay, not this message, is at fault)?"""
        return self.stage in _SESSION_STAGES


def classify(
    stage: Stage, code: int | None, message: str, *, after_dot: bool = False
) -> SendOutcome:
    """Classify what happened at ``stage`` of a one-recipient SMTP transaction.

    ``code`` is the relay's reply code, or None when no reply was read (refused
    connection, timeout, dropped connection, or a local TLS failure).
    ``after_dot`` says the final "." had been sent when things went wrong.

    Rules, in order:
    1. No reply (the network failed: refused, timed out, dropped) → temporary,
       ambiguous when ``after_dot``. A TLS handshake or certificate failure is
       not a network failure: report it with `relay_fault`.
    2. 2xx to the dot → sent. Any other code below 400 where a failure was
       reported is a protocol violation → relay_broken.
    3. 4xx → temporary.
    4. 5xx: auth codes (530/534/535/538), any refusal before RCPT, and
       relaying/authentication texts → relay_broken.
    5. 5xx at RCPT/DATA/dot: by enhanced status code when present (5.1.x
       recipient → bounce except 5.1.7/5.1.8, which are about the sender;
       5.2.x/5.4.x → bounce; 5.3.x/5.5.x/5.6.x/5.7.x → bounce only if the text
       is about the recipient, else relay_broken, as the message or our session
       is at fault, not the address), otherwise by basic code
       (550-553 → bounce, 554 → bounce when at RCPT or the text is about the
       recipient, others → relay_broken).
    """
    reply = format_reply(stage, code, message)
    if code is None:
        return SendOutcome("temporary", None, reply, ambiguous=after_dot, stage=stage)
    if code < 400:
        kind: OutcomeKind = "sent" if stage == "dot" and 200 <= code < 300 else "relay_broken"
        return SendOutcome(kind, code, reply, stage=stage)
    if code < 500:
        return SendOutcome("temporary", code, reply, stage=stage)
    return SendOutcome(_permanent_kind(stage, code, message), code, reply, stage=stage)


def relay_fault(stage: Stage, message: str) -> SendOutcome:
    """A ``relay_broken`` outcome for a failure with no reply code.

    For TLS handshake or certificate failures, and for a relay that lacks an
    extension we were configured to use (STARTTLS, AUTH).
    """
    return SendOutcome("relay_broken", None, format_reply(stage, None, message), stage=stage)


def format_reply(stage: Stage, code: int | None, message: str) -> str:
    """One short line for storage: ``"<stage>: <code> <text>"``, whitespace folded."""
    text = _WHITESPACE.sub(" ", message).strip()
    line = f"{stage}: {code} {text}" if code is not None else f"{stage}: {text or 'no reply'}"
    if len(line) > REPLY_MAX_CHARS:
        line = line[: REPLY_MAX_CHARS - 1] + "…"
    return line


def _permanent_kind(stage: Stage, code: int, message: str) -> OutcomeKind:
    if code in _AUTH_CODES or stage in _SESSION_STAGES or _RELAY_TEXT.search(message):
        return "relay_broken"
    enhanced = _ENHANCED.match(message)
    if enhanced and enhanced.group(1) == "5":
        return _enhanced_kind(int(enhanced.group(2)), int(enhanced.group(3)), message)
    if code in _BOUNCE_CODES:
        return "bounce"
    if code == 554 and (stage == "rcpt" or _RECIPIENT_TEXT.search(message)):
        return "bounce"
    return "relay_broken"


def _enhanced_kind(subject: int, detail: int, message: str) -> OutcomeKind:
    if subject == 1:
        # X.1.7 / X.1.8: the *sender's* address is bad or its domain unknown.
        return "relay_broken" if detail in (7, 8) else "bounce"
    if subject in (2, 4):
        return "bounce"
    # X.3 (mail system), X.5 (protocol), X.6 (content), X.7 (policy): about our
    # message or session unless the text names the recipient (e.g. Microsoft's
    # "550 5.5.0 … mailbox unavailable" for an unknown user).
    return "bounce" if _RECIPIENT_TEXT.search(message) else "relay_broken"
