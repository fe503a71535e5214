"""The SMTP transport: one persistent session to one relay.

`SmtpConnection.send` runs one transaction (one sender, one recipient, one
message) over a connection that stays open between messages, and returns a
classified `SendOutcome` instead of raising. aiosmtplib opens the session
(connect, EHLO, STARTTLS or implicit TLS, AUTH); then an `SmtpWire` takes the
transport over and each message costs two writes and two round trips when the
relay offers PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write, then the
body with its final dot. Without PIPELINING the commands go one at a time. The
body is written here, not by aiosmtplib's ``data()``, to tell "dropped before
the final dot" (safe to retry) from "dropped after the final dot, before the
reply" (the relay may have accepted the message).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
from typing import cast

import aiosmtplib
from aiosmtplib import SMTPException, SMTPResponseException

from herald.delivery.smtpwire import END_OF_DATA, Reply, SmtpWire, WireClosed, prepare_body
from herald.domain.relays import RelayConfig
from herald.domain.replies import SendOutcome, Stage, classify, relay_fault

log = logging.getLogger(__name__)

# Control characters would inject commands; spaces and angle brackets break the path.
_BAD_ADDRESS = re.compile(r"[\x00-\x20\x7f<>]")
_QUIT_TIMEOUT = 2.0
# The envelope's stages, in order, and the replies that let the transaction go on.
_STEPS: tuple[tuple[Stage, frozenset[int]], ...] = (
    ("mail", frozenset({250})),
    ("rcpt", frozenset({250, 251})),
    ("data", frozenset({354})),
)


class _Refused(Exception):
    """The relay answered with a failure code; the session survives unless ``abandon``."""

    def __init__(self, stage: Stage, reply: Reply, *, abandon: bool = False) -> None:
        super().__init__(stage, reply)
        self.stage, self.reply, self.abandon = stage, reply, abandon


class _Lost(Exception):
    """No reply came at ``stage`` (dropped connection or timeout); the session is dead.

    ``stale``: nothing was sent on a session the relay had already closed, so a
    fresh session may retry. ``after_dot``: the final dot was written.
    """

    def __init__(
        self, stage: Stage, exc: OSError, *, stale: bool = False, after_dot: bool = False
    ) -> None:
        super().__init__(stage, exc)
        self.stage, self.stale, self.after_dot = stage, stale, after_dot
        self.message = str(exc) or type(exc).__name__


class SmtpConnection:
    """A lazily opened, reused SMTP session to one relay.

    Calls are serialised by an internal lock, so one object carries one
    transaction at a time; use several objects for parallel sends. No method
    raises for an SMTP or network failure: each returns a `SendOutcome`.
    """

    def __init__(self, relay: RelayConfig, *, local_hostname: str | None = None) -> None:
        self._relay = relay
        self._local_hostname = local_hostname
        self._wire: SmtpWire | None = None
        self._extensions: frozenset[str] = frozenset()
        self._lock = asyncio.Lock()
        self.connects = 0
        """How many sessions this object has opened (for metrics and tests)."""

    @property
    def relay(self) -> RelayConfig:
        return self._relay

    @property
    def is_open(self) -> bool:
        """True while a session is established (it may still be dropped by the relay)."""
        return self._wire is not None and self._wire.is_open

    @property
    def pipelining(self) -> bool:
        """True when the open session's relay offered PIPELINING (False when closed)."""
        return self.is_open and "pipelining" in self._extensions

    async def send(
        self,
        mail_from: str,
        rcpt: str,
        data: bytes,
        *,
        deadline: float | None = None,
        prepared: bool = False,
    ) -> SendOutcome:
        """Send ``data`` from ``mail_from`` to the single recipient ``rcpt``.

        ``deadline`` (``time.monotonic()`` seconds) is checked once more after
        the relay said 354, just before the body goes out: past it, the session
        is dropped without a final dot, so the relay delivers nothing. A sender
        whose lease ran out meanwhile (a frozen process, a slow relay) thus
        never completes a message another node may now own. ``prepared`` says
        ``data`` already has CRLF line endings, no line starting with ".", and a
        final CRLF (as MessageBuilder's output has), so the scan is skipped.

        Opens the session first if needed (connect, EHLO, STARTTLS or implicit
        TLS, AUTH). ``data`` is the whole message; line endings are normalised
        and leading dots escaped here. A session found dead at MAIL FROM (the
        relay closed it while idle) is reopened once, since nothing was sent.

        Side effect: after a refused transaction the session is RSET; after a
        network failure it is closed and the next call reconnects.
        """
        async with self._lock:
            try:
                body = data + END_OF_DATA if prepared else prepare_body(data)
                return await self._send_once(
                    mail_from, rcpt, body, may_retry=True, deadline=deadline
                )
            except BaseException:
                # Cancelled mid-transaction: the session state is unknown.
                self._drop()
                raise

    async def probe(self) -> SendOutcome:
        """Check the relay: open the session if needed, then NOOP.

        Returns kind ``sent`` (``ok``) when the relay answered 250, else the
        classified failure. The session is kept open for the next send.
        """
        async with self._lock:
            failure = None if self.is_open else await self._open()
            if failure is not None:
                return failure
            try:
                reply = await self._command(b"NOOP\r\n", self._relay.timeout)
            except OSError as exc:
                self._drop()
                return classify("ehlo", None, str(exc) or type(exc).__name__)
            if reply.code != 250:
                self._drop()
                return classify("ehlo", reply.code, reply.text)
            return SendOutcome("sent", reply.code, f"noop: {reply.code} {reply.text}", stage="ehlo")

    async def close(self) -> None:
        """Say QUIT (briefly, best effort) and close the session. Idempotent."""
        async with self._lock:
            if self.is_open:
                with contextlib.suppress(OSError):
                    await self._command(b"QUIT\r\n", min(self._relay.timeout, _QUIT_TIMEOUT))
            self._drop()

    async def _send_once(
        self, mail_from: str, rcpt: str, data: bytes, *, may_retry: bool, deadline: float | None
    ) -> SendOutcome:
        reused = self.is_open
        if not reused:
            failure = await self._open()
            if failure is not None:
                return failure
        wire = self._wire
        assert wire is not None  # set by _open
        try:
            return await self._transact(wire, mail_from, rcpt, data, deadline)
        except _Refused as refused:
            await self._reset_after(refused)
            return classify(refused.stage, refused.reply.code, refused.reply.text)
        except _Lost as lost:
            self._drop()
            if lost.stale and reused and may_retry:
                return await self._send_once(
                    mail_from, rcpt, data, may_retry=False, deadline=deadline
                )
            return classify(lost.stage, None, lost.message, after_dot=lost.after_dot)

    async def _transact(
        self, wire: SmtpWire, mail_from: str, rcpt: str, data: bytes, deadline: float | None
    ) -> SendOutcome:
        """MAIL, RCPT, DATA, body. Raises `_Refused` for a failure reply, `_Lost`
        when a reply does not come."""
        if _BAD_ADDRESS.search(rcpt) or not rcpt:
            return SendOutcome(
                "bounce", None, f"rcpt: invalid address {rcpt[:100]!r}", stage="rcpt"
            )
        if _BAD_ADDRESS.search(mail_from):
            return relay_fault("mail", f"invalid sender address {mail_from[:100]!r}")
        try:
            mail = _mail_command(self._extensions, mail_from, rcpt, data)
        except UnicodeError:
            return relay_fault("mail", "an address needs SMTPUTF8, which the relay lacks")
        commands = (mail, b"RCPT TO:<" + rcpt.encode() + b">\r\n", b"DATA\r\n")
        await self._envelope(wire, commands, pipelined="pipelining" in self._extensions)
        if deadline is not None and time.monotonic() > deadline:
            self._drop()  # no final dot: the relay discards the transaction
            return SendOutcome(
                "temporary", None, "data: lease ran out before the body; not sent", stage="data"
            )
        try:
            wire.write(data, replies=1)
        except OSError as exc:
            raise _Lost("data", exc) from exc
        # The write above handed over the final dot: from here on, a lost reply
        # means the relay may have the message.
        try:
            reply = await wire.read(self._relay.timeout)
        except OSError as exc:
            raise _Lost("dot", exc, after_dot=True) from exc
        if reply.code // 100 != 2:
            raise _Refused("dot", reply)
        return classify("dot", reply.code, reply.text)

    async def _envelope(
        self, wire: SmtpWire, commands: tuple[bytes, ...], *, pipelined: bool
    ) -> None:
        """Send MAIL, RCPT and DATA; return when the relay waits for the body.

        Pipelined: one write, then every reply is read even after a refusal
        (RFC 2920), and the first refusal is raised as `_Refused`. Otherwise one
        command at a time, stopping at the first refusal. Raises `_Lost` when a
        reply does not come before any refusal; `stale` if it was the first one.
        """
        timeout = self._relay.timeout
        refused: _Refused | None = None
        if pipelined:
            self._write(wire, "mail", b"".join(commands))
        for (stage, accepted), command in zip(_STEPS, commands, strict=True):
            if not pipelined:
                self._write(wire, stage, command)
            try:
                reply = await wire.read(timeout)
            except OSError as exc:
                if refused is not None:
                    refused.abandon = True  # a reply is still due: the session is unusable
                    raise refused from exc
                stale = stage == "mail" and isinstance(exc, ConnectionError)
                raise _Lost(stage, exc, stale=stale) from exc
            if refused is None and reply.code not in accepted:
                refused = _Refused(stage, reply)
                if not pipelined:
                    raise refused
            elif refused is not None and stage == "data" and reply.code == 354:
                refused.abandon = True  # it waits for a body we will not send
        if refused is not None:
            raise refused

    def _write(self, wire: SmtpWire, stage: Stage, commands: bytes) -> None:
        """Write whole commands (one reply each); `_Lost` if the session is already closed."""
        try:
            wire.write(commands, replies=commands.count(b"\r\n"))
        except WireClosed as exc:
            raise _Lost(stage, exc, stale=stage == "mail") from exc

    async def _command(self, command: bytes, timeout: float) -> Reply:
        """Write one command and read its reply; raises `OSError` on a network failure."""
        wire = self._wire
        if wire is None:
            raise WireClosed("not connected")
        wire.write(command, replies=1)
        return await wire.read(timeout)

    async def _reset_after(self, refused: _Refused) -> None:
        """Clear the envelope after a refusal, or drop a session that cannot go on."""
        if refused.abandon or not self.is_open:
            self._drop()
            return
        if refused.stage == "dot":
            return  # the transaction ended with the reply to the dot
        try:
            reply = await self._command(b"RSET\r\n", self._relay.timeout)
        except OSError:
            self._drop()
            return
        if reply.code != 250:
            self._drop()

    async def _open(self) -> SendOutcome | None:
        """Connect and get ready to send; None on success, else the failure."""
        self._drop()
        relay = self._relay
        client = aiosmtplib.SMTP(
            hostname=relay.host,
            port=relay.port,
            use_tls=relay.tls == "implicit",
            start_tls=False,
            validate_certs=relay.verify_tls,
            timeout=relay.timeout,
            local_hostname=self._local_hostname,
        )
        stage: Stage = "connect"
        try:
            await client.connect()
            stage = "ehlo"
            await client.ehlo()
            if relay.tls == "starttls":
                stage = "tls"
                await client.starttls()
                stage = "ehlo"
                await client.ehlo()
            if relay.username is not None:
                stage = "auth"
                await client.login(relay.username, relay.password or "")
        except (SMTPException, OSError, ValueError) as exc:
            client.close()
            return _open_failure(stage, exc)
        # The session is idle (every reply read): our wire takes the transport over.
        self._wire = SmtpWire.take_over(cast(asyncio.Transport, client.transport))
        self._extensions = frozenset(client.esmtp_extensions)
        self.connects += 1
        log.debug("opened SMTP session to relay %s", relay.name)
        return None

    def _drop(self) -> None:
        wire, self._wire = self._wire, None
        if wire is not None:
            wire.close()


def _mail_command(extensions: frozenset[str], mail_from: str, rcpt: str, data: bytes) -> bytes:
    """The MAIL FROM command, with SMTPUTF8/8BITMIME only where they are needed."""
    command = b"MAIL FROM:<" + mail_from.encode("utf-8") + b">"
    if not (mail_from.isascii() and rcpt.isascii()):
        if "smtputf8" not in extensions:
            raise UnicodeEncodeError("ascii", mail_from + rcpt, 0, 1, "needs SMTPUTF8")
        command += b" SMTPUTF8"
    if not data.isascii() and "8bitmime" in extensions:
        command += b" BODY=8BITMIME"
    return command + b"\r\n"


def _open_failure(stage: Stage, exc: BaseException) -> SendOutcome:
    if isinstance(exc, SMTPResponseException) and exc.code > 0:
        return classify(stage, exc.code, exc.message)
    if isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError):
        return relay_fault("tls", str(exc))
    if isinstance(exc, TimeoutError | OSError):
        return classify(stage, None, str(exc) or type(exc).__name__)
    # Not supported by the relay (STARTTLS, AUTH) or refused by our own config.
    return relay_fault(stage, str(exc))
