"""Sealing small secrets (relay passwords) for storage in the database.

A sealed value is a Fernet token (AES-128-CBC with an HMAC-SHA256 tag, from
the ``cryptography`` package) under a key derived from the Herald secret key
with HKDF-SHA256 and a purpose label, so the same secret key signing tracking
tokens never doubles as this encryption key. Changing the secret key makes
every sealed value unreadable: `unseal` then says so instead of returning junk.
Pure: no I/O.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from herald.errors import ConfigError

# Bump the version in the label to rotate the derivation; old tokens then fail to unseal.
_PURPOSE = b"herald/sealed-secret/v1"


def _fernet(secret: str) -> Fernet:
    if not secret:
        raise ConfigError("cannot seal or unseal: the Herald secret key is empty")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PURPOSE).derive(
        secret.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


def seal(secret: str, plaintext: str) -> str:
    """Encrypt ``plaintext`` under a key derived from ``secret``; returns an ASCII token.

    Two seals of the same text differ (random IV). Raises `ConfigError` for an
    empty ``secret``.
    """
    return _fernet(secret).encrypt(plaintext.encode()).decode("ascii")


def unseal(secret: str, token: str) -> str:
    """Decrypt a token made by `seal` with the same ``secret``.

    Raises `ConfigError` when the token does not verify: the secret key changed
    since it was sealed, or the stored value is corrupt.
    """
    try:
        return _fernet(secret).decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeError) as exc:
        raise ConfigError(
            "cannot unseal a stored secret: the Herald secret key differs from the one "
            "it was sealed with, or the stored value is corrupt"
        ) from exc
