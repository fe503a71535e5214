"""Run one transaction, retrying it when the database connection was lost.

A PostgreSQL failover looks, from a client, like a burst of errors: the old
primary's connections drop (SQLSTATE class 08, or no SQLSTATE at all because
the socket closed), new connections are refused while no server accepts
writes (57P03, or libpq rejecting a standby for ``target_session_attrs``), a
server shutting down says 57P01/57P02, and a connection that landed on a
standby gets 25006 (read-only transaction). All of these say "try again on a
fresh connection"; :func:`run_in_transaction` does exactly that, with a short
backoff, until a deadline. Any other error propagates at once.

Ambiguity, and why a retry is safe here: when the connection drops after
COMMIT was sent, the client cannot know whether the transaction committed.
The retry runs ``fn`` again, so ``fn`` must be idempotent. Herald's
transactions are: acks and lease changes are guarded updates
(``WHERE id = … AND lease_owner = … AND lease_epoch = …``), so a replayed ack
matches no row and is merely counted as refused; claims are re-queued by
lease expiry; inserts use natural keys (``UNIQUE (campaign_id,
subscriber_id)``, ``ON CONFLICT DO NOTHING``). A caller whose ``fn`` is not
idempotent must not use this helper.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from herald.errors import DatabaseUnavailable

T = TypeVar("T")

DEFAULT_ATTEMPTS = 50
DEFAULT_DEADLINE_SECONDS = 30.0
FIRST_BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 1.0

# 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now,
# 25006 read_only_sql_transaction (we are talking to a standby).
RETRYABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "25006"})
# Errors that leave a healthy connection to the wrong server: the pool holds
# more of those, and pre-ping cannot tell, so the whole pool is dropped.
WRONG_SERVER_SQLSTATES = frozenset({"25006"})


def run_in_transaction(
    engine: Engine,
    fn: Callable[[Connection], T],
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
    on_retry: Callable[[DBAPIError, int], None] | None = None,
) -> T:
    """Run ``fn(conn)`` inside ``engine.begin()``; return its result.

    1. Open a transaction, call ``fn``, commit.
    2. On a lost connection or a server that cannot take writes (see
       :func:`is_retryable`), invalidate the connection (and drop the pool if
       it points at the wrong server), sleep a short jittered backoff and go
       to 1.
    3. Stop after ``attempts`` tries or once the next try would start after
       ``deadline_seconds``; then raise DatabaseUnavailable, chained to the
       last error.

    ``on_retry(error, attempt)`` is called before each retry (for metrics or
    logs); ``attempt`` is the number of the attempt that failed, from 1.

    Other exceptions (from ``fn`` or the database) propagate unchanged on the
    first occurrence. ``fn`` must be idempotent: see the module docstring.
    """
    deadline = time.monotonic() + deadline_seconds
    backoff = FIRST_BACKOFF_SECONDS
    for attempt in range(1, attempts + 1):
        try:
            return _run_once(engine, fn)
        except DBAPIError as exc:
            if not is_retryable(exc):
                raise
            if attempt == attempts or time.monotonic() + backoff > deadline:
                raise DatabaseUnavailable(
                    f"database unavailable after {attempt} attempts: {exc.orig or exc}"
                ) from exc
            if on_retry is not None:
                on_retry(exc, attempt)
        time.sleep(backoff * random.uniform(0.5, 1.0))
        backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
    raise DatabaseUnavailable(f"no attempt made (attempts={attempts})")


def _run_once(engine: Engine, fn: Callable[[Connection], T]) -> T:
    with engine.connect() as conn:
        try:
            with conn.begin():
                return fn(conn)
        except DBAPIError as exc:
            if is_retryable(exc):
                _forget_connection(engine, conn, exc)
            raise


def _forget_connection(engine: Engine, conn: Connection, exc: DBAPIError) -> None:
    """Make sure the next attempt gets a fresh connection (maybe to another host)."""
    if not conn.invalidated:
        conn.invalidate(exc)
    if sqlstate_of(exc) in WRONG_SERVER_SQLSTATES:
        # Checked-in connections are closed; checked-out ones finish undisturbed.
        engine.dispose()


def is_retryable(exc: DBAPIError) -> bool:
    """Whether ``exc`` means "lost connection or no writable server": retry elsewhere.

    True for an invalidated connection, SQLSTATE class 08, 57P01/57P02/57P03,
    25006, and a psycopg OperationalError without SQLSTATE (a connection that
    could not be made or was closed under us). False for everything else,
    including statement errors that would fail again the same way.
    """
    if exc.connection_invalidated:
        return True
    code = sqlstate_of(exc)
    if code is not None:
        return code.startswith("08") or code in RETRYABLE_SQLSTATES
    return isinstance(exc.orig, psycopg.OperationalError)


def sqlstate_of(exc: DBAPIError) -> str | None:
    """The SQLSTATE the server sent with ``exc``, if any (psycopg only)."""
    orig = exc.orig
    if isinstance(orig, psycopg.Error):
        return orig.sqlstate
    return None
