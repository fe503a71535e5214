"""Authentication: users with passwords, API tokens, sessions, and a brake on guessing.

Passwords are hashed with argon2id (argon2-cffi's defaults); API tokens are
random and stored as SHA-256 (domain.access). Every failed password or token
check counts against the client's address (`auth_failures`, shared by all
nodes): after `FREE_FAILURES` within `FAILURE_WINDOW`, the address is
blocked for a time that doubles with each further failure, up to `MAX_BLOCK`,
and every check from it answers `TooManyAttempts` meanwhile.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, Engine

from herald.domain import access
from herald.domain.addresses import normalise_email
from herald.domain.clock import as_utc, utcnow
from herald.errors import Conflict, InvalidInput, NotFound, TooManyAttempts, Unauthorized
from herald.store import auth as store

FREE_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)
MAX_BLOCK = 300.0
SESSION_SECONDS = 12 * 3600
MIN_PASSWORD = 10

_hasher = PasswordHasher()
# Checked against when the email is unknown, so both paths cost one argon2 verify.
_DUMMY_HASH = _hasher.hash("herald-no-such-user")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (by session) or an API token."""

    kind: str  # user | token
    id: int
    name: str
    role: access.Role

    @property
    def key(self) -> str:
        """A stable identity for idempotency keys and logs (never a secret)."""
        return f"{self.kind}:{self.id}"


def create_user(engine: Engine, email: str, password: str, role: str) -> dict[str, Any]:
    """Store a user. Raises InvalidInput (address, role, short password) or Conflict."""
    address = normalise_email(email)
    checked = access.check_role(role)
    _check_password(password)
    values = {
        "email": address,
        "password_hash": _hasher.hash(password),
        "role": checked,
        "disabled": False,
    }
    with engine.begin() as conn:
        if store.insert_user(conn, values, now=utcnow()) is None:
            raise Conflict(f"a user {address} already exists")
        return _public_user(store.get_user(conn, email=address))


def list_users(engine: Engine) -> list[dict[str, Any]]:
    with engine.begin() as conn:
        return [_public_user(u) for u in store.list_users(conn)]


def set_user(
    engine: Engine,
    email: str,
    *,
    role: str | None = None,
    password: str | None = None,
    disabled: bool | None = None,
) -> dict[str, Any]:
    """Change a user's role, password or disabled flag (ends their sessions)."""
    values: dict[str, Any] = {}
    if role is not None:
        values["role"] = access.check_role(role)
    if password is not None:
        _check_password(password)
        values["password_hash"] = _hasher.hash(password)
    if disabled is not None:
        values["disabled"] = disabled
    address = normalise_email(email)
    with engine.begin() as conn:
        if not store.update_user(conn, address, values, now=utcnow()):
            raise NotFound(f"no user {address}")
        return _public_user(store.get_user(conn, email=address))


def login(engine: Engine, secret: str, email: str, password: str, *, address: str) -> str:
    """Check a password; return a session cookie value. Raises Unauthorized, TooManyAttempts."""
    _check_not_blocked(engine, address)
    try:
        user_email = normalise_email(email)
    except InvalidInput:
        user_email = ""
    with engine.begin() as conn:
        user = store.get_user(conn, email=user_email) if user_email else None
    ok = _password_ok(user, password)  # costs one argon2 check whether or not the user exists
    if user is None or not ok:
        _failed(engine, address)
        raise Unauthorized("wrong email or password")
    with engine.begin() as conn:
        store.mark_login(conn, user["id"], now=utcnow())
        store.clear_failures(conn, address)
    expires = int(time.time()) + SESSION_SECONDS
    return access.session_cookie(secret, user["id"], expires, _epoch(user))


def session_principal(engine: Engine, secret: str, cookie: str, *, address: str) -> Principal:
    """The user behind a session cookie. Raises Unauthorized, TooManyAttempts."""
    _check_not_blocked(engine, address)
    try:
        user_id, epoch = access.read_session(secret, cookie, int(time.time()))
    except InvalidInput:
        _failed(engine, address)
        raise Unauthorized("invalid or expired session") from None
    with engine.begin() as conn:
        user = store.get_user(conn, user_id=user_id)
    if user is None or user["disabled"] or _epoch(user) != epoch:
        raise Unauthorized("invalid or expired session")
    return Principal("user", user["id"], user["email"], access.check_role(user["role"]))


def create_token(engine: Engine, name: str, role: str) -> tuple[str, dict[str, Any]]:
    """Make an API token; returns (the token, shown only now; its stored record)."""
    if not 1 <= len(name) <= 255 or not name.isprintable():
        raise InvalidInput("a token name is 1 to 255 printable characters")
    token = access.new_api_token()
    values = {
        "name": name,
        "role": access.check_role(role),
        "token_hash": access.token_digest(token),
        "prefix": token[:12],
    }
    with engine.begin() as conn:
        if store.insert_token(conn, values, now=utcnow()) is None:
            raise Conflict(f"a token named {name!r} already exists")
        row = store.token_by_hash(conn, values["token_hash"])
    return token, _public_token(row)


def list_tokens(engine: Engine) -> list[dict[str, Any]]:
    with engine.begin() as conn:
        return [_public_token(t) for t in store.list_tokens(conn)]


def revoke_token(engine: Engine, name: str) -> None:
    with engine.begin() as conn:
        if not store.revoke_token(conn, name, now=utcnow()):
            raise NotFound(f"no live token named {name!r}")


def token_principal(engine: Engine, token: str, *, address: str) -> Principal:
    """The holder of an API token. Raises Unauthorized, TooManyAttempts."""
    _check_not_blocked(engine, address)
    row = None
    if access.looks_like_token(token):
        with engine.begin() as conn:
            row = store.token_by_hash(conn, access.token_digest(token))
    if row is None or row["revoked_at"] is not None:
        _failed(engine, address)
        raise Unauthorized("invalid or revoked API token")
    now = utcnow()
    last = row["last_used_at"]
    if last is None or now - as_utc(last) > timedelta(minutes=1):
        with engine.begin() as conn:  # at most one write a minute per token
            store.touch_token(conn, row["id"], now=now)
    return Principal("token", row["id"], row["name"], access.check_role(row["role"]))


def _check_not_blocked(engine: Engine, address: str) -> None:
    with engine.begin() as conn:
        record = store.failures(conn, address)
    blocked = record and record["blocked_until"]
    if blocked:
        left = (as_utc(blocked) - utcnow()).total_seconds()
        if left > 0:
            raise TooManyAttempts(left)


def _failed(engine: Engine, address: str) -> None:
    now = utcnow()
    with engine.begin() as conn:
        _count_failure(conn, address, now)


def _count_failure(conn: Connection, address: str, now: Any) -> None:
    record = store.failures(conn, address)
    if record is None or now - as_utc(record["first_at"]) > FAILURE_WINDOW:
        record = {"address": address, "failures": 0, "first_at": now, "blocked_until": None}
    record["failures"] += 1
    over = record["failures"] - FREE_FAILURES  # the FREE_FAILURES-th failure blocks for 1 s
    if over >= 0:
        record["blocked_until"] = now + timedelta(seconds=min(2.0**over, MAX_BLOCK))
    store.save_failures(conn, record)


def _password_ok(user: dict[str, Any] | None, password: str) -> bool:
    try:
        _hasher.verify(user["password_hash"] if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return False
    return user is not None and not user["disabled"]


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise InvalidInput("a password has at most 1024 characters")


def _epoch(user: dict[str, Any]) -> int:
    """When the user last changed, in microseconds: a session must be younger."""
    return int(as_utc(user["updated_at"]).timestamp() * 1_000_000)


def _public_user(user: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in user.items() if k != "password_hash"}


def _public_token(row: dict[str, Any] | None) -> dict[str, Any]:
    assert row is not None
    return {k: v for k, v in row.items() if k != "token_hash"}
