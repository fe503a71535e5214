"""The SMTP transport: one persistent session to one relay.

`SmtpConnection.send` runs one transaction (one sender, one recipient, one
message) over a connection that stays open between messages, and returns a
classified `SendOutcome` instead of raising. aiosmtplib does the wire work; the
DATA phase is driven here command by command because its ``data()`` cannot tell
"dropped before the final dot" (safe to retry) from "dropped after the final
dot, before the reply" (the relay may have accepted the message).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl

import aiosmtplib
from aiosmtplib import SMTPException, SMTPResponseException, SMTPServerDisconnected

from herald.domain.relays import RelayConfig
from herald.domain.replies import SendOutcome, Stage, classify, relay_fault

log = logging.getLogger(__name__)

_CRLF_RE = re.compile(rb"\r\n|\n|\r")
_LEADING_DOT_RE = re.compile(rb"(?m)^\.")
_END_OF_DATA = b".\r\n"
# Control characters would inject commands; spaces and angle brackets break the path.
_BAD_ADDRESS = re.compile(r"[\x00-\x20\x7f<>]")
_QUIT_TIMEOUT = 2.0


class _Refused(Exception):
    """The relay answered a command with a failure code; the session survives."""

    def __init__(self, stage: Stage, code: int, message: str) -> None:
        super().__init__(stage, code, message)
        self.stage, self.code, self.message = stage, code, message


class SmtpConnection:
    """A lazily opened, reused SMTP session to one relay.

    Calls are serialised by an internal lock, so one object carries one
    transaction at a time; use several objects for parallel sends. No method
    raises for an SMTP or network failure: each returns a `SendOutcome`.
    """

    def __init__(self, relay: RelayConfig, *, local_hostname: str | None = None) -> None:
        self._relay = relay
        self._local_hostname = local_hostname
        self._client: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()
        self.connects = 0
        """How many sessions this object has opened (for metrics and tests)."""

    @property
    def relay(self) -> RelayConfig:
        return self._relay

    @property
    def is_open(self) -> bool:
        """True while a session is established (it may still be dropped by the relay)."""
        return self._client is not None and self._client.is_connected

    async def send(self, mail_from: str, rcpt: str, data: bytes) -> SendOutcome:
        """Send ``data`` from ``mail_from`` to the single recipient ``rcpt``.

        Opens the session first if needed (connect, EHLO, STARTTLS or implicit
        TLS, AUTH). ``data`` is the whole message; line endings are normalised
        and leading dots escaped here. A session found dead at MAIL FROM (the
        relay closed it while idle) is reopened once, since nothing was sent.

        Side effect: after a refused transaction the session is RSET; after a
        network failure it is closed and the next call reconnects.
        """
        async with self._lock:
            try:
                return await self._send_once(mail_from, rcpt, data, may_retry=True)
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
            client = self._require_client()
            try:
                reply = await client.execute_command(b"NOOP")
            except (SMTPException, OSError) as exc:
                self._drop()
                return classify("ehlo", None, str(exc))
            if reply.code != 250:
                self._drop()
                return classify("ehlo", reply.code, reply.message)
            return SendOutcome("sent", reply.code, f"noop: {reply.code} {reply.message}")

    async def close(self) -> None:
        """Say QUIT (briefly, best effort) and close the session. Idempotent."""
        async with self._lock:
            client, self._client = self._client, None
            if client is None:
                return
            if client.is_connected:
                with contextlib.suppress(SMTPException, OSError):
                    await client.quit(timeout=min(self._relay.timeout, _QUIT_TIMEOUT))
            client.close()

    async def _send_once(
        self, mail_from: str, rcpt: str, data: bytes, *, may_retry: bool
    ) -> SendOutcome:
        reused = self.is_open
        if not reused:
            failure = await self._open()
            if failure is not None:
                return failure
        client = self._require_client()
        try:
            return await self._transact(client, mail_from, rcpt, data)
        except _Refused as refused:
            await self._reset_after(refused.stage, client)
            return classify(refused.stage, refused.code, refused.message)
        except _Stale as stale:
            if reused and may_retry:
                return await self._send_once(mail_from, rcpt, data, may_retry=False)
            return classify("mail", None, str(stale))

    async def _transact(
        self, client: aiosmtplib.SMTP, mail_from: str, rcpt: str, data: bytes
    ) -> SendOutcome:
        """MAIL, RCPT, DATA, body. Raises `_Refused` for a failure reply, `_Stale`
        when the session turns out to be closed before anything was sent."""
        if _BAD_ADDRESS.search(rcpt) or not rcpt:
            return SendOutcome("bounce", None, f"rcpt: invalid address {rcpt[:100]!r}")
        if _BAD_ADDRESS.search(mail_from):
            return relay_fault("mail", f"invalid sender address {mail_from[:100]!r}")
        try:
            mail_args = _mail_args(client, mail_from, rcpt, data)
        except UnicodeError:
            return relay_fault("mail", "an address needs SMTPUTF8, which the relay lacks")
        stage: Stage = "mail"
        try:
            await _expect(client, stage, (250,), b"MAIL", *mail_args)
            stage = "rcpt"
            await _expect(client, stage, (250, 251), b"RCPT", b"TO:<" + rcpt.encode() + b">")
            stage = "data"
            await _expect(client, stage, (354,), b"DATA")
            reply = await self._send_body(client, data)
        except (SMTPException, OSError) as exc:
            if isinstance(exc, SMTPResponseException) and exc.code > 0:
                raise _Refused(stage, exc.code, exc.message) from exc
            self._drop()
            if stage == "mail" and isinstance(exc, ConnectionError):
                raise _Stale(str(exc)) from exc
            after_dot = isinstance(exc, _AfterDot)
            message = str(exc) or type(exc).__name__
            return classify("dot" if after_dot else stage, None, message, after_dot=after_dot)
        if reply.code // 100 != 2:
            raise _Refused("dot", reply.code, reply.message)
        return classify("dot", reply.code, reply.message)

    async def _send_body(self, client: aiosmtplib.SMTP, data: bytes) -> aiosmtplib.SMTPResponse:
        protocol = client.protocol
        if protocol is None:
            raise SMTPServerDisconnected("connection lost before the message body")
        # The write below hands over the final dot: from here on, a lost reply
        # means the relay may have the message.
        protocol.write(_prepare_body(data))
        try:
            return await protocol.read_response(timeout=self._relay.timeout)
        except (SMTPException, OSError) as exc:
            raise _AfterDot(str(exc)) from exc

    async def _reset_after(self, stage: Stage, client: aiosmtplib.SMTP) -> None:
        """Clear the envelope after a refusal, or drop a session the relay is closing."""
        if not client.is_connected:
            self._drop()
            return
        if stage == "dot":
            return  # the transaction ended with the reply to the dot
        try:
            reply = await client.execute_command(b"RSET")
        except (SMTPException, OSError):
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
        self._client = client
        self.connects += 1
        log.debug("opened SMTP session to relay %s", relay.name)
        return None

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _require_client(self) -> aiosmtplib.SMTP:
        if self._client is None:
            raise SMTPServerDisconnected("not connected")
        return self._client


class _AfterDot(SMTPException):
    """No reply was read after the final dot had been written."""


class _Stale(SMTPException):
    """The session was found closed at MAIL FROM: nothing was sent, retrying is safe."""


async def _expect(
    client: aiosmtplib.SMTP, stage: Stage, codes: tuple[int, ...], *args: bytes
) -> None:
    reply = await client.execute_command(*args)
    if reply.code not in codes:
        raise _Refused(stage, reply.code, reply.message)


def _mail_args(client: aiosmtplib.SMTP, mail_from: str, rcpt: str, data: bytes) -> list[bytes]:
    """MAIL FROM arguments, with SMTPUTF8/8BITMIME only where they are needed."""
    args = [b"FROM:<" + mail_from.encode("utf-8") + b">"]
    if not (mail_from.isascii() and rcpt.isascii()):
        if not client.supports_extension("smtputf8"):
            raise UnicodeEncodeError("ascii", mail_from + rcpt, 0, 1, "needs SMTPUTF8")
        args.append(b"SMTPUTF8")
    if not data.isascii() and client.supports_extension("8bitmime"):
        args.append(b"BODY=8BITMIME")
    return args


def _prepare_body(data: bytes) -> bytes:
    """The DATA payload: CRLF line endings, leading dots doubled, final dot added."""
    crlf = data.count(b"\r\n")
    if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
        data = _CRLF_RE.sub(b"\r\n", data)
    if data.startswith(b".") or b"\n." in data:
        data = _LEADING_DOT_RE.sub(b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + _END_OF_DATA


def _open_failure(stage: Stage, exc: BaseException) -> SendOutcome:
    if isinstance(exc, SMTPResponseException) and exc.code > 0:
        return classify(stage, exc.code, exc.message)
    if isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError):
        return relay_fault("tls", str(exc))
    if isinstance(exc, TimeoutError | OSError):
        return classify(stage, None, str(exc) or type(exc).__name__)
    # Not supported by the relay (STARTTLS, AUTH) or refused by our own config.
    return relay_fault(stage, str(exc))
