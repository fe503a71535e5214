"""Relay use cases: the SMTP relays stored in the database, and checking one.

A stored relay is a `RelayConfig` (how to reach it) plus pool settings: a
weight, a connection limit and an optional rate limit (messages per second),
an operator switch (``enabled``) and the circuit breaker's ``state``. The
password is sealed (domain.sealing) with a key derived from the Herald secret
key: no function here returns it in clear except `load_stored_relays` and
`load_relay_configs`, which hand it to the sender.
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from herald.delivery.pool import PoolRelay, RelayReport
from herald.delivery.smtp import SmtpConnection
from herald.domain.addresses import normalise_email, parse_from
from herald.domain.clock import utcnow
from herald.domain.mime import MessageBuilder
from herald.domain.relays import RelayConfig, TlsMode, parse_relay_url
from herald.domain.replies import SendOutcome
from herald.domain.sealing import seal, unseal
from herald.errors import Conflict, InvalidInput, NotFound
from herald.store import relays as store

RELAY_STATES = ("healthy", "open", "half_open", "failed", "disabled")
MAX_WEIGHT = 1000
MAX_CONNECTIONS = 1000
# Cluster-wide: enough for several nodes at the default concurrency (8 each).
DEFAULT_CONNECTIONS = 50
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,254}")
_SETTABLE = frozenset({"url", "weight", "max_connections", "max_rate", "enabled"})


@dataclass(frozen=True)
class RelayProbe:
    """What `probe_relay` saw: the session check, and the test send if one was asked for."""

    name: str
    session: SendOutcome
    send: SendOutcome | None = None

    @property
    def ok(self) -> bool:
        return self.session.ok and (self.send is None or self.send.ok)


def add_relay(
    engine: Engine,
    secret: str,
    name: str,
    url: str,
    *,
    weight: int = 1,
    max_connections: int = DEFAULT_CONNECTIONS,
    max_rate: float | None = None,
) -> dict[str, Any]:
    """Store a new relay and return it as `list_relays` shows it.

    Raises `InvalidInput` for a bad name or limit, `ConfigError` for a bad URL
    and `Conflict` when a relay of that name exists.
    """
    values = {
        **_url_columns(secret, _check_name(name), url),
        "name": name,
        "weight": _check_weight(weight),
        "max_connections": _check_connections(max_connections),
        "max_rate": _check_rate(max_rate),
        "enabled": True,
        "state": "healthy",
    }
    with engine.begin() as conn:
        if not store.insert_relay(conn, values, now=utcnow()):
            raise Conflict(f"a relay named {name!r} already exists")
        return _public(_require(store.get_relay(conn, name), name))


def list_relays(engine: Engine) -> list[dict[str, Any]]:
    """Every stored relay, by name, with ``has_password`` instead of any password."""
    with engine.begin() as conn:
        return [_public(row) for row in store.list_relays(conn)]


def set_relay(engine: Engine, secret: str, name: str, **changes: Any) -> dict[str, Any]:
    """Change a relay; returns it as `list_relays` shows it.

    ``changes`` may hold ``url`` (replaces host, port, TLS, timeout *and*
    credentials: a URL without a password clears the stored one; the breaker
    state and last error are reset, since it is a different relay now),
    ``weight``, ``max_connections``, ``max_rate`` (None: unlimited) and
    ``enabled``. Raises `InvalidInput` for an unknown key or a bad value,
    `ConfigError` for a bad URL and `NotFound` for an unknown relay.
    """
    unknown = set(changes) - _SETTABLE
    if unknown:
        raise InvalidInput(f"cannot set {', '.join(sorted(unknown))} on a relay")
    values = _checked_changes(secret, changes)
    with engine.begin() as conn:
        if not store.update_relay(conn, name, values, now=utcnow()):
            raise NotFound(f"no relay named {name!r}")
        return _public(_require(store.get_relay(conn, name), name))


def remove_relay(engine: Engine, name: str) -> None:
    """Delete a relay. Raises `NotFound` when there is none of that name."""
    with engine.begin() as conn:
        if not store.delete_relay(conn, name):
            raise NotFound(f"no relay named {name!r}")


def load_stored_relays(
    engine: Engine, secret: str, *, names: set[str] | None = None
) -> list[PoolRelay]:
    """The enabled relays (only those in ``names`` if given) with their pool
    settings, passwords unsealed, by name.

    Raises `ConfigError` when a password cannot be unsealed (secret key changed).
    """
    with engine.begin() as conn:
        rows = store.list_relays(conn, enabled_only=True)
    return [
        PoolRelay(
            config=_config(secret, row),
            weight=row["weight"],
            max_connections=row["max_connections"],
            max_rate=row["max_rate"],
        )
        for row in rows
        if names is None or row["name"] in names
    ]


def pool_for_env(engine: Engine, relays: list[RelayConfig]) -> list[PoolRelay]:
    """The pool for a node started with ``HERALD_RELAYS``: each of ``relays``, with
    the settings (weight, limits) of the stored relay of the same name when that
    one points at the same place; left out when that stored relay is disabled.
    """
    with engine.begin() as conn:
        stored = {row["name"]: row for row in store.list_relays(conn)}
    pool = []
    for relay in relays:
        row = stored.get(relay.name)
        same = row is not None and (row["host"], row["port"], row["tls"]) == (
            relay.host,
            relay.port,
            relay.tls,
        )
        if row is None or not same:
            pool.append(PoolRelay(relay))
        elif row["enabled"]:
            pool.append(PoolRelay(relay, row["weight"], row["max_connections"], row["max_rate"]))
    return pool


def load_relay_configs(engine: Engine, secret: str) -> list[RelayConfig]:
    """The enabled relays as `RelayConfig` (passwords unsealed), by name."""
    return [stored.config for stored in load_stored_relays(engine, secret)]


def record_reports(engine: Engine, reports: list[RelayReport]) -> None:
    """Store what a node's relay pool saw: counts added, latency, and state changes."""
    active = [r for r in reports if r.sent or r.deferred or r.failed or r.state_changed]
    if not active:
        return
    now = utcnow()
    with engine.begin() as conn:
        for r in active:
            store.record_activity(
                conn,
                r.name,
                sent=r.sent,
                deferred=r.deferred,
                failed=r.failed,
                latency_ms=r.latency_ms,
                state=r.state if r.state_changed else None,
                last_error=r.last_error if r.state_changed or r.deferred else None,
                now=now,
            )


def seed_from_env(engine: Engine, secret: str, relays: list[RelayConfig]) -> int:
    """Store the env-configured ``relays`` whose names are not stored yet.

    Idempotent: a name already stored is left as it is (the database wins over
    the environment once a relay is there). Returns how many were inserted.
    """
    now = utcnow()
    inserted = 0
    with engine.begin() as conn:
        for relay in relays:
            values = {**_config_columns(secret, relay), "name": relay.name}
            inserted += store.insert_relay(conn, values, now=now)
    return inserted


async def probe_relay(
    engine: Engine,
    secret: str,
    name: str,
    *,
    to: str | None = None,
    from_addr: str = "Herald <herald@localhost>",
    base_url: str = "http://127.0.0.1:8025",
) -> RelayProbe:
    """Open a session to relay ``name`` (even if disabled) and NOOP; with ``to``, send a test.

    Writes nothing to the database. Raises `NotFound` for an unknown relay and
    `InvalidInput` for a bad ``to`` or ``from_addr``; relay failures are in the result.
    """
    with engine.begin() as conn:
        config = _config(secret, _require(store.get_relay(conn, name), name))
    message = None if to is None else _test_message(to, from_addr, base_url)
    connection = SmtpConnection(config)
    try:
        session = await connection.probe()
        if message is None or not session.ok:
            return RelayProbe(name, session)
        envelope_from, rcpt, data = message
        sent = await connection.send(envelope_from, rcpt, data, prepared=True)
        return RelayProbe(name, session, sent)
    finally:
        await connection.close()


def _test_message(to: str, from_addr: str, base_url: str) -> tuple[str, str, bytes]:
    """(envelope sender, recipient, message bytes) of a small test message."""
    rcpt = normalise_email(to, local_domain_ok=True)
    from_name, sender = parse_from(from_addr)
    domain = sender.rpartition("@")[2]
    builder = MessageBuilder(from_name or "Herald", sender, message_id_domain=domain)
    data = builder.build(
        to_addr=rcpt,
        to_name="",
        subject="Herald relay test",
        html="<p>This is a test message from Herald's <code>relays test</code>.</p>",
        text="This is a test message from Herald's `relays test`.",
        message_id=f"<relay-test.{secrets.token_hex(8)}@{domain}>",
        unsubscribe_url=base_url.rstrip("/") + "/",
    )
    return sender, rcpt, data


def _checked_changes(secret: str, changes: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if "url" in changes:
        values.update(_url_columns(secret, "relay", changes["url"]))
        values.update(state="healthy", last_error=None)
    if "weight" in changes:
        values["weight"] = _check_weight(changes["weight"])
    if "max_connections" in changes:
        values["max_connections"] = _check_connections(changes["max_connections"])
    if "max_rate" in changes:
        values["max_rate"] = _check_rate(changes["max_rate"])
    if "enabled" in changes:
        if not isinstance(changes["enabled"], bool):
            raise InvalidInput("enabled must be true or false")
        values["enabled"] = changes["enabled"]
    return values


def _url_columns(secret: str, name: str, url: str) -> dict[str, Any]:
    """The connection columns for ``url``; raises `ConfigError` for a bad URL."""
    return _config_columns(secret, parse_relay_url(url, name=name))


def _config_columns(secret: str, relay: RelayConfig) -> dict[str, Any]:
    sealed = None if relay.password is None else seal(secret, relay.password)
    return {
        "host": relay.host,
        "port": relay.port,
        "tls": relay.tls,
        "verify_tls": relay.verify_tls,
        "username": relay.username,
        "password_sealed": sealed,
        "timeout": relay.timeout,
    }


def _config(secret: str, row: dict[str, Any]) -> RelayConfig:
    sealed = row["password_sealed"]
    tls: TlsMode = row["tls"]
    return RelayConfig(
        name=row["name"],
        host=row["host"],
        port=row["port"],
        tls=tls,
        username=row["username"],
        password=None if sealed is None else unseal(secret, sealed),
        verify_tls=bool(row["verify_tls"]),
        timeout=float(row["timeout"]),
    )


def _public(row: dict[str, Any]) -> dict[str, Any]:
    shown = {k: v for k, v in row.items() if k != "password_sealed"}
    shown["has_password"] = row["password_sealed"] is not None
    if not row["enabled"]:
        shown["state"] = "disabled"
    return shown


def _require(row: dict[str, Any] | None, name: str) -> dict[str, Any]:
    if row is None:
        raise NotFound(f"no relay named {name!r}")
    return row


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid relay name {name!r}: use letters, digits and . _ : @ - "
            "(starting with a letter or digit, at most 255 characters)"
        )
    return name


def _check_int(value: Any, what: str, ceiling: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ceiling:
        raise InvalidInput(f"{what} must be a whole number from 1 to {ceiling}, not {value!r}")
    return value


def _check_weight(value: Any) -> int:
    return _check_int(value, "weight", MAX_WEIGHT)


def _check_connections(value: Any) -> int:
    return _check_int(value, "max connections", MAX_CONNECTIONS)


def _check_rate(value: Any) -> float | None:
    """None (unlimited) or a finite number of messages per second above zero."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"max rate must be a number of messages per second, not {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise InvalidInput(f"max rate must be above 0 messages per second, not {value!r}")
    return float(value)
