"""Reply classification, against replies real relays and mailbox providers send."""

from __future__ import annotations

import pytest

from herald.domain.replies import (
    REPLY_MAX_CHARS,
    SendOutcome,
    Stage,
    classify,
    format_reply,
    relay_fault,
)

# (stage, code, message as aiosmtplib hands it over: code stripped, lines joined by \n)
REAL_WORLD: list[tuple[Stage, int, str, str]] = [
    # accepted
    ("dot", 250, "2.0.0 Ok: queued as 4Xk2Lq0qJzz9sWm", "sent"),
    ("dot", 250, "OK id=1rABCD-0001ab-2Q", "sent"),
    # try again later
    ("connect", 421, "4.7.0 mx.example.org Service not available, closing channel", "temporary"),
    ("rcpt", 450, "4.2.0 <a@b.test>: Recipient address rejected: Greylisted", "temporary"),
    ("rcpt", 451, "4.3.0 Temporary lookup failure", "temporary"),
    ("rcpt", 452, "4.2.2 The email account that you tried to reach is over quota.", "temporary"),
    ("mail", 451, "4.7.1 Please try again later", "temporary"),
    ("dot", 421, "4.7.28 Our system has detected an unusual rate of mail", "temporary"),
    ("auth", 454, "4.7.0 Temporary authentication failure", "temporary"),
    ("tls", 454, "4.7.0 TLS not available due to local problem", "temporary"),
    # the recipient is gone for good
    ("rcpt", 550, "5.1.1 <nobody@b.test>: Recipient address rejected: User unknown", "bounce"),
    (
        "rcpt",
        550,
        "5.1.1 The email account that you tried to reach does not exist.\n5.1.1 https://x",
        "bounce",
    ),
    ("rcpt", 550, "5.2.1 The email account that you tried to reach is disabled.", "bounce"),
    ("rcpt", 550, "5.5.0 Requested action not taken: mailbox unavailable", "bounce"),
    ("rcpt", 550, "5.4.1 Recipient address rejected: Access denied. AS(201806281)", "bounce"),
    ("rcpt", 551, "User not local; please try <forward@b.test>", "bounce"),
    ("rcpt", 552, "5.2.2 Mailbox full", "bounce"),
    ("rcpt", 553, "5.1.3 Bad recipient address syntax", "bounce"),
    ("rcpt", 501, "5.1.3 Invalid address", "bounce"),
    ("rcpt", 554, "5.7.1 <x@b.test>: Recipient address rejected: Access denied", "bounce"),
    ("rcpt", 554, "delivery error: dd This user doesn't have a yahoo.com account", "bounce"),
    ("rcpt", 550, "Requested action not taken: mailbox unavailable", "bounce"),
    ("dot", 550, "5.1.1 user unknown", "bounce"),
    ("dot", 554, "5.4.14 Hop count exceeded - possible mail loop", "bounce"),
    # the relay will not take our mail, whoever it is for
    ("rcpt", 554, "5.7.1 <x@b.test>: Relay access denied", "relay_broken"),
    ("rcpt", 550, "5.7.1 Relaying denied", "relay_broken"),
    ("rcpt", 550, "5.7.1 Unable to relay for x@b.test", "relay_broken"),
    (
        "rcpt",
        553,
        "5.7.1 <me@a.test>: Sender address rejected: not owned by user me",
        "relay_broken",
    ),
    ("rcpt", 554, "5.7.1 <unknown[10.0.0.9]>: Client host rejected: Access denied", "relay_broken"),
    ("rcpt", 550, "Unauthenticated senders not allowed", "relay_broken"),
    (
        "rcpt",
        550,
        "5.7.1 Service unavailable, Client host blocked using zen.spamhaus.org",
        "relay_broken",
    ),
    ("rcpt", 503, "5.5.1 Error: need MAIL command", "relay_broken"),
    ("mail", 530, "5.7.0 Authentication required", "relay_broken"),
    ("mail", 530, "5.7.0 Must issue a STARTTLS command first", "relay_broken"),
    ("mail", 553, "5.7.1 Sender address rejected: not logged in", "relay_broken"),
    ("mail", 550, "5.1.8 Sender domain does not exist", "relay_broken"),
    ("mail", 552, "5.3.4 Message size exceeds fixed limit", "relay_broken"),
    ("auth", 535, "5.7.8 Username and Password not accepted.", "relay_broken"),
    ("auth", 534, "5.7.9 Application-specific password required.", "relay_broken"),
    (
        "auth",
        538,
        "5.7.11 Encryption required for requested authentication mechanism",
        "relay_broken",
    ),
    ("connect", 554, "5.7.1 Service unavailable; client host blocked", "relay_broken"),
    ("ehlo", 501, "5.5.4 Invalid EHLO argument", "relay_broken"),
    ("tls", 502, "5.5.1 STARTTLS not recognised", "relay_broken"),
    ("data", 503, "5.5.1 Error: need RCPT command", "relay_broken"),
    ("dot", 552, "5.3.4 Error: message file too big", "relay_broken"),
    ("dot", 550, "5.7.1 Message rejected due to content restrictions", "relay_broken"),
    (
        "dot",
        554,
        "Message rejected: Email address is not verified. The following identities"
        " failed the check in region EU-WEST-1: me@a.test",
        "relay_broken",
    ),
    ("dot", 554, "Transaction failed", "relay_broken"),
]


@pytest.mark.parametrize(("stage", "code", "message", "kind"), REAL_WORLD)
def test_it_classifies_real_world_replies(stage: Stage, code: int, message: str, kind: str) -> None:
    outcome = classify(stage, code, message)
    assert outcome.kind == kind
    assert outcome.code == code
    assert outcome.ambiguous is False


@pytest.mark.parametrize("stage", ["connect", "ehlo", "mail", "rcpt", "data", "dot"])
def test_it_treats_a_missing_reply_as_temporary(stage: Stage) -> None:
    outcome = classify(stage, None, "Connection lost")
    assert outcome == SendOutcome(
        "temporary", None, f"{stage}: Connection lost", ambiguous=False, stage=stage
    )


def test_it_marks_a_lost_reply_after_the_dot_as_ambiguous() -> None:
    outcome = classify("dot", None, "Timed out waiting for server response", after_dot=True)
    assert outcome.kind == "temporary"
    assert outcome.ambiguous is True


def test_it_is_not_ambiguous_when_a_reply_arrived_after_the_dot() -> None:
    assert classify("dot", 451, "4.3.0 try later", after_dot=True).ambiguous is False
    assert classify("dot", 250, "ok", after_dot=True).ambiguous is False


def test_it_treats_a_success_code_before_the_dot_as_a_protocol_error() -> None:
    assert classify("data", 250, "OK").kind == "relay_broken"


def test_it_reports_a_tls_failure_as_a_broken_relay() -> None:
    outcome = relay_fault("tls", "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    assert outcome.kind == "relay_broken"
    assert outcome.code is None
    assert outcome.reply.startswith("tls: [SSL")


def test_it_keeps_the_stored_reply_to_one_short_line() -> None:
    reply = format_reply("rcpt", 550, "5.1.1 first line\n5.1.1 second   line\t" + "x" * 500)
    assert "\n" not in reply
    assert reply.startswith("rcpt: 550 5.1.1 first line 5.1.1 second line x")
    assert len(reply) == REPLY_MAX_CHARS


def test_it_says_no_reply_when_there_is_no_text() -> None:
    assert format_reply("connect", None, "  ") == "connect: no reply"


def test_it_reports_only_sent_as_ok() -> None:
    assert classify("dot", 250, "ok").ok
    assert not classify("rcpt", 550, "5.1.1 unknown").ok
