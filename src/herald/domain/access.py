"""Who may do what: roles, API token format, and session cookies.

Roles are ordered: a ``viewer`` reads; an ``editor`` also changes lists,
subscribers, templates and campaigns (and starts them); an ``admin`` also
manages relays, users, tokens and nodes.

API tokens look like ``hrld_<43 URL-safe characters>`` (256 random bits);
only their SHA-256 is stored, so a leaked database does not leak tokens, and
a plain hash suffices because the token is random (unlike a password).

Pure apart from the random source.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Literal

from herald.domain.tokens import sign, verify
from herald.errors import InvalidInput

Role = Literal["viewer", "editor", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "editor", "admin")
TOKEN_PREFIX = "hrld_"  # noqa: S105 (a prefix, not a secret)
SESSION = "session"  # token purpose of a session cookie: (user id, expiry, epoch)


def check_role(role: str) -> Role:
    """``role`` if it is one; raises InvalidInput naming the choices."""
    for known in ROLES:
        if role == known:
            return known
    raise InvalidInput(f"unknown role {role!r}: use {', '.join(ROLES)}")


def allows(role: str, needed: Role) -> bool:
    """Does ``role`` include the rights of ``needed``?"""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)  # type: ignore[arg-type,unused-ignore]


def new_api_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """The stored form of an API token."""
    return hashlib.sha256(token.encode()).hexdigest()


def looks_like_token(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX) and 20 <= len(token) <= 100


def session_cookie(secret: str, user_id: int, expires: int, epoch: int) -> str:
    """A signed session value for user ``user_id`` valid until ``expires`` (Unix seconds).

    ``epoch`` changes when the user's password or role changes, which ends
    every session issued before.
    """
    return sign(secret, SESSION, (user_id, expires, epoch))


def read_session(secret: str, value: str, now: int) -> tuple[int, int]:
    """(user id, epoch) of a valid, unexpired session; raises InvalidInput otherwise."""
    user_id, expires, epoch = verify(secret, SESSION, value, count=3)
    if expires < now:
        raise InvalidInput("session expired")
    return user_id, epoch
