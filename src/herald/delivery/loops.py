"""Small helpers shared by the worker's background loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.exc import DataError, SQLAlchemyError

from herald.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

DB_ERRORS = (DatabaseUnavailable, SQLAlchemyError)


async def wait(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def retrying(call: Callable[[], Awaitable[int]]) -> int:
    """Run a database write, retrying for as long as the database is unreachable.

    Acks must not be dropped: a worker that cannot record results keeps trying
    (with backoff) rather than losing what the relays already accepted. A drain
    therefore waits for the database rather than exiting with unrecorded acks.
    A ``DataError`` (the database refuses a value) is raised at once: the same
    write would fail forever.
    """
    delay = 0.1
    while True:
        try:
            return await call()
        except DataError:
            raise
        except DB_ERRORS as exc:
            log.warning("database write failed (%s); retrying in %.1fs", describe(exc), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def describe(exc: BaseException) -> str:
    """The first line of an exception's message (or its type), for a log line."""
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
