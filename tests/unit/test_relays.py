"""Relay URLs: what they mean and how a bad one is refused."""

from __future__ import annotations

import pytest

from herald.domain.relays import RelayConfig, parse_relay_list, parse_relay_url
from herald.errors import ConfigError


def test_it_reads_a_plain_smtp_url_with_defaults() -> None:
    relay = parse_relay_url("smtp://mail.example.org")
    assert relay == RelayConfig(
        name="mail.example.org:25",
        host="mail.example.org",
        port=25,
        tls="none",
        username=None,
        password=None,
        verify_tls=True,
        timeout=60.0,
    )


def test_it_reads_credentials_port_and_options() -> None:
    relay = parse_relay_url(
        "smtp://api%40example.org:s%3Acret%2F@relay.test:587?tls=starttls&verify=false",
        name="primary",
    )
    assert relay.name == "primary"
    assert (relay.host, relay.port, relay.tls) == ("relay.test", 587, "starttls")
    assert relay.username == "api@example.org"
    assert relay.password == "s:cret/"
    assert relay.verify_tls is False


def test_it_defaults_smtps_to_implicit_tls_on_port_465() -> None:
    relay = parse_relay_url("smtps://u:p@relay.test")
    assert (relay.port, relay.tls) == (465, "implicit")


def test_it_accepts_an_explicit_tls_mode_and_timeout() -> None:
    relay = parse_relay_url("smtp://127.0.0.1:2525?tls=implicit&timeout=2.5")
    assert relay.tls == "implicit"
    assert relay.timeout == 2.5


def test_it_keeps_an_empty_password() -> None:
    assert parse_relay_url("smtp://user:@relay.test").password == ""


def test_it_never_shows_the_password_in_repr() -> None:
    relay = parse_relay_url("smtp://user:hunter2@relay.test")
    assert "hunter2" not in repr(relay)
    assert "user" in repr(relay)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("http://relay.test", "scheme"),
        ("relay.test:25", "scheme"),
        ("smtp://", "host is missing"),
        ("smtp://relay.test:0", "port"),
        ("smtp://relay.test:70000", "port"),
        ("smtp://relay.test:twenty", "port"),
        ("smtp://relay.test:25?tls=ssl", "tls must be"),
        ("smtp://relay.test:25?tsl=starttls", "unknown option 'tsl'"),
        ("smtp://relay.test:25?verify=maybe", "verify must be"),
        ("smtp://relay.test:25?timeout=0", "timeout"),
        ("smtp://relay.test:25?timeout=soon", "timeout"),
        ("smtp://relay.test:25?tls=none&tls=starttls", "given twice"),
        ("smtp://relay.test:25/path", "no path"),
        ("smtps://relay.test?tls=starttls", "implicit"),
        ("smtp://[::1]:25", "IPv6"),
        ("smtp://:pw@relay.test", "user name"),
    ],
)
def test_it_refuses_a_bad_url_with_a_clear_message(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        parse_relay_url(url)


def test_it_does_not_echo_the_password_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_relay_url("smtp://user:hunter2@relay.test:99999")
    assert "hunter2" not in caught.value.message
    assert "user:***@relay.test:99999" in caught.value.message


def test_it_names_listed_relays_in_order() -> None:
    relays = parse_relay_list(" smtp://a.test:25 , smtps://u:p@b.test ,")
    assert [r.name for r in relays] == ["relay-1", "relay-2"]
    assert [(r.host, r.tls) for r in relays] == [("a.test", "none"), ("b.test", "implicit")]


def test_it_reads_an_empty_list_as_no_relays() -> None:
    assert parse_relay_list("") == []
    assert parse_relay_list(" , ") == []


def test_it_refuses_a_list_with_a_bad_entry() -> None:
    with pytest.raises(ConfigError, match="scheme"):
        parse_relay_list("smtp://a.test,ftp://b.test")


def test_it_refuses_the_same_relay_twice() -> None:
    with pytest.raises(ConfigError, match="twice"):
        parse_relay_list("smtp://a.test:25,smtp://A.test:25")
