from __future__ import annotations

import pytest

from herald.domain.addresses import normalise_email, parse_from
from herald.errors import InvalidInput


def test_it_lower_cases_the_whole_address() -> None:
    assert normalise_email("Alice.Smith@Example.COM") == "alice.smith@example.com"


def test_it_ignores_surrounding_spaces() -> None:
    assert normalise_email("  bob@example.com ") == "bob@example.com"


def test_it_keeps_an_internationalised_domain_in_unicode() -> None:
    assert normalise_email("info@Bücher.de") == "info@bücher.de"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "no-at-sign",
        "a@",
        "@example.com",
        "a b@example.com",
        "Alice <alice@example.com>",
        "alice@example.com\r\nBcc: x@y.com",
        "alice@example.com\n",
        "ali\x00ce@example.com",
        "alice\t@example.com",
        "alice@exa\x7fmple.com",
        "jörg@example.com",
    ],
)
def test_it_refuses_invalid_addresses(raw: str) -> None:
    with pytest.raises(InvalidInput):
        normalise_email(raw)


def test_it_says_why_an_address_is_invalid() -> None:
    with pytest.raises(InvalidInput, match=r"example\.com"):
        normalise_email("a..b@example.com")


def test_it_parses_a_sender_with_a_display_name() -> None:
    assert parse_from("Herald News <News@Example.com>") == ("Herald News", "news@example.com")


def test_it_unquotes_a_quoted_display_name() -> None:
    assert parse_from('"Smith, \\"Jo\\"" <jo@example.com>') == ('Smith, "Jo"', "jo@example.com")


def test_it_accepts_a_non_ascii_display_name() -> None:
    assert parse_from("Zoë Ärger <z@example.com>") == ("Zoë Ärger", "z@example.com")


def test_it_parses_a_bare_sender_address() -> None:
    assert parse_from("news@example.com") == ("", "news@example.com")


@pytest.mark.parametrize(
    "raw",
    [
        "News\r\nBcc: x@y.com <news@example.com>",
        "News <news@example.com>\r\nBcc: x@y.com",
        "News\x00 <news@example.com>",
        "News <news@example.com",
        "News news@example.com>",
        "News <not an address>",
    ],
)
def test_it_refuses_unsafe_or_malformed_senders(raw: str) -> None:
    with pytest.raises(InvalidInput):
        parse_from(raw)
