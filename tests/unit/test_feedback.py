"""Which delivery a spam complaint is about: Herald's signed Message-IDs and ARF reports."""

from __future__ import annotations

from herald.domain.feedback import delivery_from_message_id, message_id_from_arf
from herald.domain.mime import make_message_id

SECRET = "s3cret"


def test_it_reads_the_delivery_of_a_message_id_it_signed() -> None:
    assert delivery_from_message_id(SECRET, make_message_id(42, 7, SECRET, "ex.com")) == 42
    assert delivery_from_message_id(SECRET, make_message_id(9, None, SECRET, "ex.com")) == 9
    bare = make_message_id(42, 7, SECRET, "ex.com").strip("<>")
    assert delivery_from_message_id(SECRET, f"  {bare} ") == 42


def test_it_refuses_ids_it_did_not_sign() -> None:
    ours = make_message_id(42, 7, SECRET, "ex.com")
    assert delivery_from_message_id("other-secret", ours) is None
    assert delivery_from_message_id(SECRET, ours.replace("<42.", "<43.")) is None
    assert delivery_from_message_id(SECRET, ours.replace(".7.", ".8.")) is None
    assert delivery_from_message_id(SECRET, "<random@ex.com>") is None
    assert delivery_from_message_id(SECRET, "") is None


def test_it_finds_the_original_message_id_in_an_arf_report() -> None:
    mid = make_message_id(5, 1, SECRET, "ex.com")
    report = (
        'Content-Type: multipart/report; report-type=feedback-report; boundary="x"\r\n\r\n'
        "--x\r\nContent-Type: text/plain\r\n\r\nspam\r\n"
        "--x\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n\r\n"
        "--x\r\nContent-Type: message/rfc822\r\n\r\n"
        f"Message-ID: {mid}\r\nSubject: s\r\n\r\nbody\r\n"
        "--x--\r\n"
    ).encode()
    assert message_id_from_arf(report) == mid
    assert message_id_from_arf(b"Subject: no report\r\n\r\nhello") is None
