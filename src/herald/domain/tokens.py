"""HMAC-signed tokens for links in emails (unsubscribe now; tracking later).

A token carries a purpose and a few integers, URL-safe, with a truncated
HMAC-SHA256. Anything altered, truncated or minted with another key or for
another purpose fails verification.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import struct

from herald.errors import InvalidInput

_MAC_BYTES = 12


@functools.lru_cache(maxsize=64)
def _keyed(secret: str, purpose: str) -> hmac.HMAC:
    key = hashlib.sha256(f"herald-token:{purpose}:{secret}".encode()).digest()
    return hmac.new(key, digestmod=hashlib.sha256)


def _mac(secret: str, purpose: str, body: bytes) -> bytes:
    # This runs several times per message sent. Copying a keyed HMAC skips
    # both the key schedule and OpenSSL 3's digest lookup by name, which is
    # slow and takes a lock that the worker's threads contend for.
    mac = _keyed(secret, purpose).copy()
    mac.update(body)
    return mac.digest()[:_MAC_BYTES]


def sign(secret: str, purpose: str, values: tuple[int, ...], *, bound: bytes = b"") -> str:
    """Return a URL-safe token for ``values`` (non-negative 64-bit integers).

    ``bound`` is covered by the signature but not carried in the token (a
    click link's target URL travels beside it): verify with the same bytes.
    """
    body = struct.pack(f">{len(values)}Q", *values)
    return _encode(body + _mac(secret, purpose, body + bound))


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def verify(
    secret: str, purpose: str, token: str, *, count: int, bound: bytes = b""
) -> tuple[int, ...]:
    """Return the integers inside a valid token. Raises InvalidInput otherwise."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, TypeError) as exc:
        raise InvalidInput("invalid token") from exc
    # Only the canonical spelling is accepted: base64 ignores unused low bits
    # of the last character, which would otherwise give several valid spellings.
    if len(raw) != 8 * count + _MAC_BYTES or _encode(raw) != token:
        raise InvalidInput("invalid token")
    body, mac = raw[: 8 * count], raw[8 * count :]
    if not hmac.compare_digest(mac, _mac(secret, purpose, body + bound)):
        raise InvalidInput("invalid token")
    return struct.unpack(f">{count}Q", body)


UNSUBSCRIBE = "unsubscribe"  # purpose of (subscriber id, campaign id) unsubscribe tokens
OPEN = "open"  # (delivery id, campaign id) of an open-tracking pixel
CLICK = "click"  # (delivery id, campaign id), bound to the link's target URL
CONFIRM = "confirm"  # (subscriber id, list id) of a double opt-in confirmation link
PREFERENCES = "preferences"  # (subscriber id,) of a subscriber's preferences page
