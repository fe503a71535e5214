"""The capture relay: a local SMTP server that files every message it gets.

Used when no relay is configured, so that a fresh install can run a campaign
end to end and show what would have been sent. It is a real SMTP server
(aiosmtpd) on 127.0.0.1, run on the caller's event loop. Each message is
written as ``<directory>/<yyyy-mm-dd>/<yyyymmddTHHMMSS.ffffff>Z-<n>.eml`` (the
exact bytes received, UTC dates), through a temporary file that is fsync'd and
then linked into place, with the directory fsync'd, all before the relay answers 250: a
message the client saw accepted is on disk.

Nothing is ever deleted. Past ``warn_every`` stored files (default 100,000) a
warning is logged, and again at each further multiple, so that a forgotten
capture relay filling a disk gets noticed; cleaning up is the operator's call.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import weakref
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.smtp import SMTP

from herald.errors import HeraldError

log = logging.getLogger(__name__)

DEFAULT_WARN_EVERY = 100_000


class CaptureRelayError(HeraldError):
    """The capture relay could not start."""


class CaptureRelay:
    """An SMTP server on ``host:port`` (0 = any free port) storing mail under ``directory``.

    ``count`` is the number of messages stored since `start`.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        warn_every: int = DEFAULT_WARN_EVERY,
    ) -> None:
        self.directory = Path(directory)
        self.host = host
        self.port = port
        self.count = 0
        self._warn_every = warn_every
        self._sequence = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()

    async def start(self) -> tuple[str, int]:
        """Listen and return the ``(host, port)`` actually bound.

        Raises `CaptureRelayError` if the directory cannot be created or the
        port cannot be bound.
        """
        if self._server is not None:
            return self.host, self.port
        loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)
            self._server = await loop.create_server(
                lambda: self._new_session(loop), host=self.host, port=self.port
            )
        except OSError as exc:
            raise CaptureRelayError(f"capture relay cannot start: {exc}") from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info(
            "capture relay listening on %s:%d, storing in %s", self.host, self.port, self.directory
        )
        return self.host, self.port

    async def stop(self) -> None:
        """Stop listening and close open sessions. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()
        await server.wait_closed()

    async def __aenter__(self) -> CaptureRelay:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _new_session(self, loop: asyncio.AbstractEventLoop) -> SMTP:
        session = SMTP(self, hostname="herald-capture", loop=loop, enable_SMTPUTF8=True)
        self._sessions.add(session)
        return session

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """aiosmtpd hook: store the message durably, then accept it."""
        try:
            await asyncio.to_thread(self._store, bytes(envelope.original_content))
        except OSError:
            log.exception("capture relay could not store a message")
            return "451 4.3.0 Could not store the message, try again later"
        self.count += 1
        if self.count % self._warn_every == 0:
            log.warning(
                "capture relay has stored %d messages in %s; nothing is deleted automatically",
                self.count,
                self.directory,
            )
        return "250 2.0.0 OK: captured"

    def _store(self, data: bytes) -> Path:
        """Write ``data`` to a new .eml file: temp file, fsync, rename, fsync directory."""
        now = datetime.now(UTC)
        day = self.directory / now.strftime("%Y-%m-%d")
        day.mkdir(parents=True, exist_ok=True)
        stamp = now.strftime("%Y%m%dT%H%M%S.%f")
        temporary = day / f".{stamp}-{os.getpid()}-{next(self._sequence)}.tmp"
        with open(temporary, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # link() refuses to overwrite, so two relays sharing a directory never
        # clobber each other's files.
        while True:
            final = day / f"{stamp}Z-{next(self._sequence)}.eml"
            try:
                os.link(temporary, final)
                break
            except FileExistsError:
                continue
        os.unlink(temporary)
        _fsync_directory(day)
        return final


def _fsync_directory(path: Path) -> None:
    # The rename is durable only once the directory entry itself is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
