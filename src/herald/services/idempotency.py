"""Idempotency keys: a retried POST returns the first result and does nothing twice.

The first request with a key claims it (a unique row per caller and key, so
two nodes racing on the same key cannot both run it); its response is stored
when it completes with a status below 500. A retry with the same key and the
same request gets that response back; with a different request it is refused;
while the first is still running it is told to wait. A claim left by a node
that died mid-request is taken over after `STALE_SECONDS`. Keys are kept for
`KEEP` and then purged.

Known limit: a node that dies after its change committed but before the
response was stored leaves a stale claim, and the retry after `STALE_SECONDS`
runs the request again (a second create, for instance, usually meets the
first and answers 409).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine

from herald.domain.clock import as_utc, utcnow
from herald.errors import Conflict, InvalidInput
from herald.store import auth as store

STALE_SECONDS = 60.0
KEEP = timedelta(hours=24)
MAX_KEY = 255


@dataclass(frozen=True)
class Replay:
    status_code: int
    body: str


class InProgress(Conflict):
    """A request with this Idempotency-Key is still running; retry shortly."""


def begin(
    engine: Engine, principal: str, key: str, *, method: str, path: str, request_hash: str
) -> Replay | None:
    """Claim ``key`` for this request (None: go ahead) or return the stored result.

    Raises InvalidInput (a bad key, or the key used for another request) and
    `InProgress`.
    """
    if not 1 <= len(key) <= MAX_KEY or not key.isprintable():
        raise InvalidInput(f"an Idempotency-Key is 1 to {MAX_KEY} printable characters")
    values = {
        "principal": principal,
        "key": key,
        "method": method,
        "path": path,
        "request_hash": request_hash,
    }
    for _ in range(2):
        now = utcnow()
        with engine.begin() as conn:
            if store.claim_key(conn, values, now=now):
                return None
            first = store.get_key(conn, principal, key)
            if first is None:
                continue  # purged meanwhile: claim again
            if first["request_hash"] != request_hash:
                raise InvalidInput("this Idempotency-Key was used for a different request")
            if first["status_code"] is not None:
                return Replay(first["status_code"], first["response"] or "")
            if (now - as_utc(first["created_at"])).total_seconds() < STALE_SECONDS:
                raise InProgress()
            store.forget_key(conn, principal, key)  # its node died mid-request
    raise InProgress()


def finish(engine: Engine, principal: str, key: str, *, status_code: int, body: str) -> None:
    """Store the response to replay; a server error frees the key for a retry instead."""
    with engine.begin() as conn:
        if status_code >= 500:
            store.forget_key(conn, principal, key)
        else:
            store.finish_key(conn, principal, key, status_code=status_code, response=body)


def abandon(engine: Engine, principal: str, key: str) -> None:
    """The request failed without a response: free the key."""
    with engine.begin() as conn:
        store.forget_key(conn, principal, key)


def purge(engine: Engine) -> int:
    """Forget keys older than `KEEP`; returns how many."""
    with engine.begin() as conn:
        return store.purge_keys(conn, before=utcnow() - KEEP)
