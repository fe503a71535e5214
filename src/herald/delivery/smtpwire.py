"""The SMTP wire once a session is set up: write commands, read replies in order.

`SmtpWire` takes over an open transport (plain or TLS) from whatever opened
the session and parses the relay's replies itself, queueing them in order.
That lets a caller write several commands at once and then read their replies
one by one (RFC 2920 PIPELINING), which aiosmtplib's reader, built for one
command at a time, cannot do. Errors are `OSError`s: `WireClosed` (a
`ConnectionError`) and `WireTimeout` (a `TimeoutError`), so callers can treat
them like any other network failure.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from typing import NamedTuple, cast

# One reply, continuation lines included, may not exceed this: bounds memory
# against a peer that streams bytes with no line ending.
MAX_REPLY_BYTES = 64 * 1024

_SEPARATORS = frozenset({b"-", b" ", b"\r", b""})  # what may follow a reply code
_CRLF_RE = re.compile(rb"\r\n|\n|\r")
_LEADING_DOT_RE = re.compile(rb"(?m)^\.")
_LINE_START_DOT_RE = re.compile(rb"\n\.")
_LONE_CR_RE = re.compile(rb"\r(?!\n)")
END_OF_DATA = b".\r\n"


class Reply(NamedTuple):
    """One SMTP reply: its code and its text (continuation lines joined by newlines)."""

    code: int
    text: str


class WireClosed(ConnectionError):
    """The connection closed (or sent something that is not SMTP) before a reply came."""


class WireTimeout(TimeoutError):
    """No reply came within the timeout."""


class SmtpWire(asyncio.Protocol):
    """Ordered replies over one transport; see `take_over`.

    Each `write` says how many replies it should bring; `read` returns them in
    order. A reply that arrives when none is awaited (e.g. a relay's "421 idle
    timeout" just before it hangs up) is discarded, so it cannot be mistaken
    for the answer to the next command.
    """

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._partial = b""  # the start of a line whose end has not arrived
        self._lines: list[bytes] = []  # the lines so far of a multi-line reply
        self._held = 0  # their total length
        self._replies: deque[Reply] = deque()
        self._awaited = 0
        self._waiter: asyncio.Future[None] | None = None
        self._lost: BaseException | None = None

    @classmethod
    def take_over(cls, transport: asyncio.Transport) -> SmtpWire:
        """Make a new wire the protocol of ``transport``, which must be idle (no reply due)."""
        wire = cls()
        transport.set_protocol(wire)
        wire.connection_made(transport)
        return wire

    @property
    def is_open(self) -> bool:
        """True until the connection is closed or closing (by either side)."""
        return self._transport is not None and not self._transport.is_closing()

    def write(self, data: bytes, *, replies: int) -> None:
        """Hand ``data`` (whole commands) to the transport; expect ``replies`` replies.

        Raises `WireClosed` if the connection is already closed or closing; then
        nothing was sent.
        """
        transport = self._transport
        if transport is None or transport.is_closing():
            raise WireClosed("connection closed before the command was sent")
        self._awaited += replies
        transport.write(data)

    async def read(self, timeout: float) -> Reply:
        """The next awaited reply, waiting at most ``timeout`` seconds for it.

        Raises `WireClosed` if the connection ends first, `WireTimeout` at the deadline.
        """
        if not self._replies:
            if self._lost is not None:
                raise WireClosed(str(self._lost) or "connection lost") from self._lost
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, _expire, waiter, timeout)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        return self._replies.popleft()

    def close(self) -> None:
        """Close the connection (pending writes are flushed first). Idempotent."""
        if self._transport is not None:
            self._transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport but have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._lost = self._lost or exc or WireClosed("connection closed by the relay")
        self._wake(WireClosed(str(self._lost) or "connection lost"))

    def eof_received(self) -> bool:
        return False  # the relay hung up: close our side too (connection_lost follows)

    def data_received(self, data: bytes) -> None:
        if self._partial:
            data, self._partial = self._partial + data, b""
        *lines, partial = data.split(b"\n")
        for line in lines:
            if not self._take_line(line):
                return
        self._partial = partial
        if len(partial) + self._held > MAX_REPLY_BYTES:
            self._garbled("reply too long")

    def _take_line(self, line: bytes) -> bool:
        """Add one reply line; False (and the connection closed) if it is not SMTP."""
        code, separator = line[:3], line[3:4]
        if not (code.isdigit() and separator in _SEPARATORS):
            self._garbled(f"not an SMTP reply: {line[:80]!r}")
            return False
        if separator == b"-":
            self._lines.append(line)
            self._held += len(line)
            return True
        if self._lines:
            lines, self._lines, self._held = [*self._lines, line], [], 0
            text = b"\n".join(part[4:].strip() for part in lines)
        else:
            text = line[4:].strip()
        if self._awaited == 0:
            return True  # unsolicited; see the class docstring
        self._awaited -= 1
        self._replies.append(Reply(int(code), text.decode("utf-8", "replace")))
        self._wake(None)
        return True

    def _garbled(self, why: str) -> None:
        self._partial, self._lines, self._held = b"", [], 0
        if self._transport is not None:
            self._transport.abort()
        self._lost = WireClosed(why)
        self._wake(WireClosed(why))

    def _wake(self, error: BaseException | None) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)


def _expire(waiter: asyncio.Future[None], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(WireTimeout(f"no reply within {timeout:g} s"))


def prepare_body(data: bytes) -> bytes:
    """The DATA payload: CRLF line endings, leading dots doubled, final dot added."""
    # With no CR lacking its LF, every CR starts a CRLF, so equal counts mean no
    # lone LF either. The regex searches have literal prefixes, which re scans
    # for several times faster than ``bytes.count(b"\r\n")`` or ``b"\n." in``.
    if _LONE_CR_RE.search(data) or data.count(b"\n") != data.count(b"\r"):
        data = _CRLF_RE.sub(b"\r\n", data)
    if data.startswith(b".") or _LINE_START_DOT_RE.search(data):
        data = _LEADING_DOT_RE.sub(b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + END_OF_DATA
