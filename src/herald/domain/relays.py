"""SMTP relay settings and the URLs that describe them.

A relay is written as a URL, ``smtp://[user:pass@]host:port[?tls=…&verify=false]``
(or ``smtps://`` for implicit TLS), and ``HERALD_RELAYS`` holds a comma-separated
list of them. Parsing is pure: nothing here opens a connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, cast
from urllib.parse import parse_qsl, unquote, urlsplit

from herald.errors import ConfigError

TlsMode = Literal["none", "starttls", "implicit"]

_TLS_MODES: frozenset[str] = frozenset({"none", "starttls", "implicit"})
_DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
_DEFAULT_TLS: dict[str, TlsMode] = {"smtp": "none", "smtps": "implicit"}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_QUERY_KEYS = frozenset({"tls", "verify", "timeout"})


@dataclass(frozen=True)
class RelayConfig:
    """How to reach and log in to one SMTP relay.

    ``password`` is left out of ``repr`` so that logging a relay never leaks it.
    ``timeout`` (seconds) bounds each SMTP command and the connection attempt.
    """

    name: str
    host: str
    port: int
    tls: TlsMode
    username: str | None
    password: str | None = field(repr=False)
    verify_tls: bool = True
    timeout: float = 60.0


def parse_relay_url(url: str, *, name: str | None = None) -> RelayConfig:
    """Parse one relay URL into a `RelayConfig`.

    ``name`` defaults to ``host:port``. Defaults: port 25 and no TLS for
    ``smtp://``, port 465 and implicit TLS for ``smtps://``. Query keys: ``tls``
    (none|starttls|implicit), ``verify`` (true|false: check the relay's
    certificate) and ``timeout`` (seconds per command).

    Raises `ConfigError` naming the problem (the password is never echoed).
    """
    shown = _redact(url)
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ConfigError(f"relay {shown!r}: scheme must be smtp:// or smtps://")
    if parts.path not in ("", "/") or parts.fragment:
        raise ConfigError(f"relay {shown!r}: a relay URL has no path or fragment")
    host = parts.hostname
    if not host:
        raise ConfigError(f"relay {shown!r}: the host is missing")
    port = _port(parts.netloc, shown, default=_DEFAULT_PORTS[scheme])
    options = _options(parts.query, shown)
    tls = _tls_mode(options.get("tls"), shown, default=_DEFAULT_TLS[scheme])
    if scheme == "smtps" and tls != "implicit":
        raise ConfigError(f"relay {shown!r}: smtps:// always uses implicit TLS")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is not None and username is None:
        raise ConfigError(f"relay {shown!r}: a password needs a user name")
    return RelayConfig(
        name=name or f"{host}:{port}",
        host=host,
        port=port,
        tls=tls,
        username=username,
        password=password,
        verify_tls=_flag(options.get("verify", "true"), "verify", shown),
        timeout=_timeout(options.get("timeout"), shown),
    )


def parse_relay_list(value: str) -> list[RelayConfig]:
    """Parse the comma-separated ``HERALD_RELAYS`` value.

    The relays are named ``relay-1``, ``relay-2``, … in order; blank entries are
    skipped, and an empty value gives an empty list (the capture relay is then
    used). Raises `ConfigError` for any bad URL or a relay listed twice.
    """
    urls = [item.strip() for item in value.split(",") if item.strip()]
    relays = [parse_relay_url(url, name=f"relay-{i}") for i, url in enumerate(urls, start=1)]
    seen: set[tuple[str, int, str | None]] = set()
    for relay in relays:
        key = (relay.host.lower(), relay.port, relay.username)
        if key in seen:
            raise ConfigError(f"relay {relay.host}:{relay.port} is listed twice")
        seen.add(key)
    return relays


def _redact(url: str) -> str:
    """The URL with any password replaced by ``***``, for error messages."""
    scheme, sep, rest = url.strip().partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url.strip()
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{hostpart}"


def _port(netloc: str, shown: str, *, default: int) -> int:
    # urlsplit().port raises a bare ValueError for junk; read it ourselves.
    hostport = netloc.rpartition("@")[2]
    if hostport.startswith("["):
        raise ConfigError(f"relay {shown!r}: IPv6 relay addresses are not supported")
    _, colon, text = hostport.partition(":")
    if not colon:
        return default
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigError(f"relay {shown!r}: port must be a number from 1 to 65535")
    return int(text)


def _options(query: str, shown: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise ConfigError(f"relay {shown!r}: malformed query string") from exc
    options: dict[str, str] = {}
    for key, value in pairs:
        if key not in _QUERY_KEYS:
            known = ", ".join(sorted(_QUERY_KEYS))
            raise ConfigError(f"relay {shown!r}: unknown option {key!r} (known: {known})")
        if key in options:
            raise ConfigError(f"relay {shown!r}: option {key!r} is given twice")
        options[key] = value
    return options


def _tls_mode(value: str | None, shown: str, *, default: TlsMode) -> TlsMode:
    if value is None:
        return default
    if value.lower() not in _TLS_MODES:
        raise ConfigError(f"relay {shown!r}: tls must be none, starttls or implicit")
    return cast(TlsMode, value.lower())


def _flag(value: str, key: str, shown: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigError(f"relay {shown!r}: {key} must be true or false")


def _timeout(value: str | None, shown: str) -> float:
    if value is None:
        return 60.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 3600:
        raise ConfigError(f"relay {shown!r}: timeout must be seconds between 0 and 3600")
    return seconds
