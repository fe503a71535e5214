from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import EmailMessage
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.domain.mime import MessageBuilder, make_message_id
from herald.errors import InvalidInput

MESSAGE_ID = "<7.3.abcdef0123456789@mail.example.com>"
URL = "https://news.example.com/u/7/abc?x=1&y=2"
FREE_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=200)
BODY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=2000)


def make_builder(**overrides: Any) -> MessageBuilder:
    options: dict[str, Any] = {
        "message_id_domain": "mail.example.com",
        "list_unsubscribe_mailto": "unsubscribe@example.com",
    }
    options.update(overrides)
    return MessageBuilder("Herald News", "news@example.com", **options)


def build(builder: MessageBuilder | None = None, **overrides: Any) -> bytes:
    values: dict[str, Any] = {
        "to_addr": "alice@example.org",
        "to_name": "Alice",
        "subject": "Hello",
        "html": "<p>Hello</p>",
        "text": "Hello",
        "message_id": MESSAGE_ID,
        "unsubscribe_url": URL,
        "date": datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
    }
    values.update(overrides)
    return (builder or make_builder()).build(**values)


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(message: EmailMessage) -> tuple[EmailMessage, EmailMessage]:
    plain, html = message.iter_parts()
    assert isinstance(plain, EmailMessage)
    assert isinstance(html, EmailMessage)
    return plain, html


def canonical(text: str) -> str:
    """A text body's expected decoding: every line break as CRLF."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")


def display_name(message: EmailMessage) -> str:
    """The To display name, decoded as RFC 2047 section 6.2 says.

    CPython's address parser keeps the folding whitespace between adjacent
    encoded-words of a phrase (even its own output does not round-trip), so
    the phrase is decoded with ``email.header`` instead, which drops it.
    """
    raw = next(value for name, value in message.raw_items() if name == "To")
    phrase = raw.replace("\r\n", "").rpartition("<")[0].strip()
    if phrase.startswith('"'):
        return re.sub(r"\\(.)", r"\1", phrase[1:-1])
    return str(make_header(decode_header(phrase)))


def assert_well_formed(raw: bytes) -> EmailMessage:
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", raw) is None, "only CRLF line endings"
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    message = parse(raw)
    assert message.defects == []
    boundary = message.get_boundary()
    assert boundary is not None
    for part in parts(message):
        assert part.defects == []
        payload = part.get_payload(decode=False)
        assert isinstance(payload, str)
        assert boundary not in payload
        assert all(len(line) <= 76 for line in payload.split("\r\n"))
        assert not any(line.startswith((".", "From ")) for line in payload.split("\r\n"))
    return message


def test_it_builds_a_multipart_alternative_with_text_then_html() -> None:
    message = assert_well_formed(build())
    assert message.get_content_type() == "multipart/alternative"
    plain, html = parts(message)
    assert (plain.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    for part in (plain, html):
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert plain.get_content() == "Hello"
    assert html.get_content() == "<p>Hello</p>"


def test_it_writes_the_standard_headers() -> None:
    message = assert_well_formed(build())
    assert message["From"] == "Herald News <news@example.com>"
    assert message["To"] == "Alice <alice@example.org>"
    assert message["Subject"] == "Hello"
    assert message["Message-ID"] == MESSAGE_ID
    assert message["MIME-Version"] == "1.0"
    assert message["Date"].datetime == datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert message["List-Unsubscribe"] == (
        f"<{URL}>, <mailto:unsubscribe@example.com?subject=unsubscribe>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_it_omits_the_mailto_when_none_is_configured() -> None:
    message = parse(build(make_builder(list_unsubscribe_mailto=None)))
    assert message["List-Unsubscribe"] == f"<{URL}>"


def test_it_leaves_out_the_list_headers_of_transactional_mail() -> None:
    raw = build(make_builder(list_headers=False), unsubscribe_url=None)
    message = parse(raw)
    assert message["List-Unsubscribe"] is None and message["List-Unsubscribe-Post"] is None
    assert b"unsubscribe" not in raw.lower()
    assert message["Message-ID"] == MESSAGE_ID
    assert message.get_content_type() == "multipart/alternative"


def test_it_dates_the_message_now_when_no_date_is_given() -> None:
    message = parse(build(date=None))
    assert message["Date"].datetime.tzinfo is not None


def test_it_adds_extra_headers() -> None:
    builder = make_builder(extra_headers={"X-Campaign": "spring sale — 2024", "Precedence": "bulk"})
    message = assert_well_formed(build(builder))
    assert message["X-Campaign"] == "spring sale — 2024"
    assert message["Precedence"] == "bulk"


@pytest.mark.parametrize(
    "headers",
    [{"Subject": "x"}, {"Bad Name": "x"}, {"X-A": "a\r\nBcc: x@y.com"}, {"X-A": "a\x00"}],
)
def test_it_refuses_unsafe_extra_headers(headers: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        make_builder(extra_headers=headers)


@pytest.mark.parametrize(
    "subject",
    [
        "Grüße aus Zürich",
        "🎉 Spring sale: 50 % off everything 🎉",
        "日本語のニュースレター、今週のまとめ。" * 4,
        "A plain ASCII subject that is rather long and must therefore be folded "
        "over several lines to stay within seventy-eight columns",
        "Looks like =?utf-8?q?an_encoded_word?= but is not",
        "  leading and trailing spaces  ",
        "double  spaces",
        "x" * 1200,
        "",
    ],
)
def test_it_round_trips_subjects(subject: str) -> None:
    message = assert_well_formed(build(subject=subject))
    assert message["Subject"] == subject


def test_it_folds_headers_at_78_columns() -> None:
    raw = build(
        subject="Grüße " * 30 + "and a long plain tail " * 5,
        to_name="Zoë " * 30,
        unsubscribe_url="https://news.example.com/u/7",
    )
    header_block = raw.partition(b"\r\n\r\n")[0]
    assert all(len(line) <= 78 for line in header_block.split(b"\r\n"))
    plain_raw = build(subject="plain words " * 30, to_name="Plain Name " * 5)
    header_block = plain_raw.partition(b"\r\n\r\n")[0]
    assert all(len(line) <= 78 for line in header_block.split(b"\r\n"))
    assert parse(plain_raw)["Subject"] == "plain words " * 30


def test_it_keeps_encoded_words_within_75_characters() -> None:
    raw = build(subject="日本語のニュースレター " * 10, to_name="Ünïcode " * 20)
    for word in re.findall(rb"=\?utf-8\?b\?[^?]*\?=", raw):
        assert len(word) <= 75


@pytest.mark.parametrize(
    "name",
    [
        "Smith, John",
        'Jo "the boss" Smith',
        "back\\slash",
        "Zoë Ünïcode",
        "Éric, CEO (Sales) <evil@example.com>",
        "😀 emoji",
        "A very long display name " * 5,
    ],
)
def test_it_round_trips_display_names(name: str) -> None:
    message = assert_well_formed(build(to_name=name))
    assert display_name(message) == " ".join(name.split())
    assert message["To"].addresses[0].addr_spec == "alice@example.org"


def test_it_writes_a_bare_address_without_a_name() -> None:
    assert parse(build(to_name=""))["To"] == "alice@example.org"


def test_it_idna_encodes_an_internationalised_domain() -> None:
    message = parse(build(to_addr="info@bücher.de"))
    assert message["To"].addresses[0].domain == "xn--bcher-kva.de"


@pytest.mark.parametrize(
    "body",
    [
        "x" * 5000,
        ".\n.starts with a dot\n..two dots\nFrom the start\nFrom nowhere",
        "trailing spaces   \ntrailing tab\t\nend  ",
        "non-ASCII: Grüße, ünïcödé, 日本語, 😀\n",
        "mixed\r\nline\nendings\rhere\r\n",
        "= signs =3D and =\n=",
        "a" * 75 + "\n" + "b" * 76 + "\n" + "c" * 77 + "\n" + "." + "d" * 80,
        "",
    ],
)
def test_it_round_trips_bodies(body: str) -> None:
    message = assert_well_formed(build(html=body, text=body))
    for part in parts(message):
        assert part.get_content() == canonical(body)


def test_it_encodes_chunked_bodies_like_the_joined_text() -> None:
    chunks = ["<p>Hello ", "Zoë", "</p>\n", "." * 3, "From x", " " * 3, "y" * 90, ""]
    builder = make_builder()
    for _ in range(2):  # the second time from the chunk cache
        message = assert_well_formed(build(builder, html=chunks, text=tuple(chunks)))
        for part in parts(message):
            assert part.get_content() == canonical("".join(chunks))


@settings(max_examples=200, deadline=None)
@given(body=BODY_TEXT, cut=st.lists(st.integers(min_value=0, max_value=2000), max_size=6))
def test_it_round_trips_arbitrary_bodies(body: str, cut: list[int]) -> None:
    positions = sorted({0, len(body), *(c for c in cut if c < len(body))})
    chunks = [body[a:b] for a, b in pairwise(positions)]
    message = assert_well_formed(build(html=chunks, text=body))
    plain, html = parts(message)
    assert plain.get_content() == canonical(body)
    assert html.get_content() == canonical(body)


@settings(max_examples=200, deadline=None)
@given(subject=FREE_TEXT, name=FREE_TEXT)
def test_it_round_trips_arbitrary_subjects_and_names(subject: str, name: str) -> None:
    message = assert_well_formed(build(subject=subject, to_name=name))
    assert message["Subject"] == subject
    assert display_name(message) == " ".join(name.split())


INJECTION = "\r\nBcc: victim@example.net"


@pytest.mark.parametrize("field", ["subject", "to_name"])
def test_it_neutralises_line_breaks_in_free_text_headers(field: str) -> None:
    raw = build(**{field: "Hello" + INJECTION + "\nX-Evil: 1\x00"})
    message = assert_well_formed(raw)
    assert message["Bcc"] is None
    assert message["X-Evil"] is None
    assert b"\r\nBcc:" not in raw


@pytest.mark.parametrize(
    "overrides",
    [
        {"to_addr": "alice@example.org" + INJECTION},
        {"to_addr": "alice@example.org>, victim@example.net"},
        {"to_addr": "not-an-address"},
        {"message_id": "<a@example.com>" + INJECTION},
        {"message_id": "no-brackets@example.com"},
        {"unsubscribe_url": URL + INJECTION},
        {"unsubscribe_url": URL + ">, <https://evil.example"},
        {"unsubscribe_url": "javascript:alert(1)"},
    ],
)
def test_it_refuses_unsafe_addresses_ids_and_urls(overrides: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        build(**overrides)


@pytest.mark.parametrize(
    "options",
    [
        {"message_id_domain": "mail.example.com\r\nBcc: x@y.com"},
        {"list_unsubscribe_mailto": "u@example.com" + INJECTION},
    ],
)
def test_it_refuses_unsafe_campaign_settings(options: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        make_builder(**options)


def test_it_refuses_an_unsafe_sender() -> None:
    with pytest.raises(InvalidInput):
        MessageBuilder("News", "news@example.com" + INJECTION, message_id_domain="example.com")


def test_it_uses_a_boundary_that_quoted_printable_cannot_produce() -> None:
    message = parse(build())
    assert (message.get_boundary() or "").startswith("=_")


def test_it_makes_the_same_message_id_for_the_same_delivery() -> None:
    first = make_message_id(12, 34, "secret", "mail.example.com")
    assert first == make_message_id(12, 34, "secret", "mail.example.com")
    assert re.fullmatch(r"<12\.34\.[0-9a-f]{16}@mail\.example\.com>", first)


def test_it_makes_different_message_ids_for_different_inputs() -> None:
    ids = {
        make_message_id(12, 34, "secret", "example.com"),
        make_message_id(13, 34, "secret", "example.com"),
        make_message_id(12, None, "secret", "example.com"),
        make_message_id(12, 34, "other", "example.com"),
    }
    assert len(ids) == 4


def test_it_makes_message_ids_the_builder_accepts() -> None:
    builder = make_builder()
    message_id = builder.message_id_for(5, None, "secret")
    assert parse(build(builder, message_id=message_id))["Message-ID"] == message_id
