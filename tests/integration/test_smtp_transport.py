"""SmtpConnection against real SMTP servers on 127.0.0.1.

Every aiosmtpd sink test runs twice, against a relay that offers PIPELINING
(one write for MAIL, RCPT and DATA) and one that does not (one command at a
time). `Scripted` servers play the exchanges aiosmtpd never produces.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP as AiosmtpdServer

from herald.delivery.smtp import SmtpConnection
from herald.delivery.smtpwire import SmtpWire, WireClosed
from herald.domain.relays import parse_relay_url
from tests.ci import unavailable
from tests.sinks import (
    Behaviour,
    Sink,
    drop_after_data,
    drop_before_dot,
    fail_rcpt,
    needs_auth,
    ok,
    refuse,
    reply_to_all,
    slow,
    temp_fail_then_ok,
)

SinkFactory = Callable[..., Sink]
Connect = Callable[..., Awaitable[SmtpConnection]]
SENDER = "news@herald.test"
PIPELINING_EHLO = b"250-scripted.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
ENVELOPE_OK = b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
# (what the server waits to have read, what it then answers) for each step of a session
Steps = Sequence[tuple[bytes, bytes]]
ONE_MESSAGE: Steps = ((b"DATA\r\n", ENVELOPE_OK), (b"\r\n.\r\n", b"250 2.0.0 queued\r\n"))


class Scripted:
    """A hand-written SMTP server: the Nth connection plays ``sessions[N]`` step by step.

    Each step waits until the client has sent its marker, then answers with its
    bytes (several replies at once, as a pipelining server does). After the last
    step the server reads until the client hangs up; an empty answer hangs up.
    """

    host = "127.0.0.1"

    def __init__(self, sessions: Sequence[Steps], *, ehlo: bytes = PIPELINING_EHLO) -> None:
        self.sessions, self.ehlo = sessions, ehlo
        self.received: list[bytes] = []  # everything each connection sent, in order
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Scripted:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(self.received)
        self.received.append(b"")
        steps = [(b"\r\n", self.ehlo), *self.sessions[index]]
        writer.write(b"220 scripted.test ESMTP\r\n")
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            for marker, answer in steps:
                self.received[index] += await reader.readuntil(marker)
                if not answer:
                    break
                writer.write(answer)
            else:
                self.received[index] += await reader.read()
        writer.close()


def message(n: int = 1, *, body: bytes = b"Hello.\r\n") -> bytes:
    return (
        b"From: News <news@herald.test>\r\nTo: reader@example.test\r\n"
        b"Subject: Test\r\nMessage-ID: <%d@herald.test>\r\n\r\n" % n + body
    )


@pytest.fixture(params=[True, False], ids=["pipelining", "one-at-a-time"])
def pipelined(request: pytest.FixtureRequest) -> bool:
    """Whether the sinks of this test run offer PIPELINING."""
    return bool(request.param)


@pytest.fixture
def sink_factory(sink_factory: SinkFactory, pipelined: bool) -> SinkFactory:
    """tests.sinks' factory, with PIPELINING on or off as ``pipelined`` says."""

    def make(behaviour: Behaviour | None = None, **changes: Any) -> Sink:
        return sink_factory(behaviour, pipelining=pipelined, **changes)

    return make


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Make SmtpConnections to a sink (``?query`` appended to its URL); all closed after."""
    made: list[SmtpConnection] = []

    async def make(
        sink: Sink | Scripted, query: str = "timeout=5", *, login: str = ""
    ) -> SmtpConnection:
        url = f"smtp://{login}{sink.host}:{sink.port}?{query}"
        conn = SmtpConnection(parse_relay_url(url), local_hostname="client.test")
        made.append(conn)
        return conn

    yield make
    for conn in made:
        await conn.close()


async def test_it_sends_a_message_and_the_sink_records_it(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    sink = sink_factory(ok())
    conn = await connect(sink)
    outcome = await conn.send(SENDER, "reader@example.test", message(7))
    assert (outcome.kind, outcome.code, outcome.ambiguous) == ("sent", 250, False)
    [received] = sink.messages
    assert (received.mail_from, received.rcpts) == (SENDER, ("reader@example.test",))
    assert received.message_id == "<7@herald.test>"


async def test_it_sends_no_body_once_the_deadline_has_passed(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    sink = sink_factory(ok())
    conn = await connect(sink)
    late = await conn.send(SENDER, "reader@example.test", message(1), deadline=0.0)
    assert (late.kind, late.ambiguous) == ("temporary", False)
    assert "lease ran out" in late.reply
    in_time = await conn.send(
        SENDER, "reader@example.test", message(2), deadline=time.monotonic() + 60
    )
    assert in_time.ok
    assert [m.message_id for m in sink.messages] == ["<2@herald.test>"]


async def test_it_normalises_line_endings_and_escapes_leading_dots(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    sink = sink_factory(ok())
    conn = await connect(sink)
    body = b".starts with a dot\nbare LF\r\n.\r\nlast line without newline"
    assert (await conn.send(SENDER, "r@example.test", message(body=body))).ok
    expected = message(body=b".starts with a dot\r\nbare LF\r\n.\r\nlast line without newline\r\n")
    assert sink.messages[0].data == expected


async def test_it_reuses_one_connection_for_many_messages(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    sink = sink_factory(ok())
    conn = await connect(sink)
    outcomes = [await conn.send(SENDER, f"r{n}@example.test", message(n)) for n in range(200)]
    assert all(o.ok for o in outcomes)
    assert sink.count() == 200
    assert sink.connections == 1
    assert conn.connects == 1
    assert max(sink.message_ids().values()) == 1


async def test_it_bounces_a_refused_recipient_and_keeps_the_session(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    sink = sink_factory(fail_rcpt(lambda addr: 550 if "bounce" in addr else None))
    conn = await connect(sink)
    bounced = await conn.send(SENDER, "bounce-me@example.test", message(1))
    delivered = await conn.send(SENDER, "fine@example.test", message(2))
    assert (bounced.kind, bounced.code) == ("bounce", 550)
    assert bounced.reply == "rcpt: 550 5.1.1 No such user here"
    assert delivered.ok
    assert [m.rcpts for m in sink.messages] == [("fine@example.test",)]
    assert sink.connections == 1


async def test_it_defers_a_greylisted_recipient_then_sends(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    sink = sink_factory(temp_fail_then_ok(attempts=1))
    conn = await connect(sink)
    first = await conn.send(SENDER, "grey@example.test", message(1))
    second = await conn.send(SENDER, "grey@example.test", message(1))
    assert (first.kind, first.code) == ("temporary", 451)
    assert second.ok
    assert sink.message_ids() == {"<1@herald.test>": 1}


async def test_it_reports_a_relay_refusing_our_sender_as_broken(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    sink = sink_factory(reply_to_all(530, stage="mail"))
    outcome = await (await connect(sink)).send(SENDER, "r@example.test", message())
    assert (outcome.kind, outcome.code) == ("relay_broken", 530)
    assert sink.count() == 0


async def test_it_reports_relay_access_denied_as_broken_not_a_bounce(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    sink = sink_factory(
        reply_to_all(554, "5.7.1 <r@example.test>: Relay access denied", stage="rcpt")
    )
    outcome = await (await connect(sink)).send(SENDER, "r@example.test", message())
    assert (outcome.kind, outcome.code) == ("relay_broken", 554)


async def test_it_treats_a_refused_connection_as_temporary(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    sink = sink_factory(refuse())
    outcome = await (await connect(sink)).send(SENDER, "r@example.test", message())
    assert (outcome.kind, outcome.code, outcome.ambiguous) == ("temporary", None, False)
    assert outcome.reply.startswith("connect: ")


async def test_it_treats_a_421_greeting_as_temporary(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    sink = sink_factory(reply_to_all(421, stage="connect"))
    outcome = await (await connect(sink)).send(SENDER, "r@example.test", message())
    assert (outcome.kind, outcome.code) == ("temporary", 421)
    assert outcome.reply.startswith("connect: 421")


async def test_it_flags_a_drop_after_the_dot_as_ambiguous_and_reconnects(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    sink = sink_factory(drop_after_data(times=1))
    conn = await connect(sink)
    dropped = await conn.send(SENDER, "r@example.test", message(5))
    retried = await conn.send(SENDER, "r@example.test", message(5))
    assert (dropped.kind, dropped.ambiguous) == ("temporary", True)
    assert dropped.reply.startswith("dot: ")
    assert retried.ok
    assert sink.drops == 1
    assert sink.connections == 2
    # The sink kept the dropped copy, as a relay may: the retry is the one duplicate.
    assert sink.message_ids() == {"<5@herald.test>": 2}


async def test_it_knows_a_drop_before_the_dot_delivered_nothing(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    sink = sink_factory(drop_before_dot(times=1))
    conn = await connect(sink)
    dropped = await conn.send(SENDER, "r@example.test", message(6))
    retried = await conn.send(SENDER, "r@example.test", message(6))
    assert (dropped.kind, dropped.ambiguous) == ("temporary", False)
    assert dropped.reply.startswith("data: ")
    assert retried.ok
    assert sink.message_ids() == {"<6@herald.test>": 1}


async def test_it_waits_for_a_slow_relay_within_the_timeout(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    sink = sink_factory(slow(0.05))
    outcome = await (await connect(sink, "timeout=5")).send(SENDER, "r@example.test", message())
    assert outcome.ok


async def test_it_gives_up_on_a_relay_slower_than_the_timeout(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    sink = sink_factory(slow(2.0))
    conn = await connect(sink, "timeout=0.2")
    outcome = await conn.send(SENDER, "r@example.test", message())
    assert (outcome.kind, outcome.code) == ("temporary", None)
    assert not conn.is_open


async def test_it_resends_on_a_fresh_session_when_the_relay_closed_the_idle_one(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    sink = sink_factory(ok())
    conn = await connect(sink)
    assert (await conn.send(SENDER, "r@example.test", message(1))).ok
    sink.kick()
    assert (await conn.send(SENDER, "r@example.test", message(2))).ok
    assert sink.connections == 2
    assert sink.message_ids() == {"<1@herald.test>": 1, "<2@herald.test>": 1}


async def test_it_logs_in_when_the_relay_requires_it(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    sink = sink_factory(needs_auth("herald", "s3cret"))
    conn = await connect(sink, login="herald:s3cret@")
    assert (await conn.send(SENDER, "r@example.test", message())).ok


async def test_it_reports_rejected_credentials_as_a_broken_relay(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    sink = sink_factory(needs_auth("herald", "s3cret"))
    conn = await connect(sink, login="herald:wrong@")
    outcome = await conn.send(SENDER, "r@example.test", message())
    assert (outcome.kind, outcome.code) == ("relay_broken", 535)
    assert outcome.reply.startswith("auth: 535")


async def test_it_reports_a_failed_tls_handshake_as_a_broken_relay(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    sink = sink_factory(ok())  # speaks plain SMTP, so the TLS handshake fails
    outcome = await (await connect(sink, "tls=implicit&timeout=5")).send(
        SENDER, "r@example.test", message()
    )
    assert (outcome.kind, outcome.code) == ("relay_broken", None)
    assert outcome.reply.startswith("tls: ")


async def test_it_reports_missing_starttls_as_a_broken_relay(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    sink = sink_factory(ok())
    outcome = await (await connect(sink, "tls=starttls")).send(SENDER, "r@example.test", message())
    assert outcome.kind == "relay_broken"
    assert outcome.reply.startswith("tls: ")
    assert sink.count() == 0


async def test_it_bounces_an_address_that_would_inject_commands(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    sink = sink_factory(ok())
    conn = await connect(sink)
    outcome = await conn.send(SENDER, "r@example.test>\r\nRCPT TO:<x@evil.test", message())
    assert outcome.kind == "bounce"
    assert (await conn.send(SENDER, "r@example.test", message())).ok
    assert [m.rcpts for m in sink.messages] == [("r@example.test",)]


async def test_it_drops_the_session_when_a_send_is_cancelled(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    sink = sink_factory(slow(0.2))
    conn = await connect(sink)
    task = asyncio.create_task(conn.send(SENDER, "r@example.test", message()))
    await asyncio.sleep(0)  # let the send start before cancelling it
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not conn.is_open
    assert (await conn.send(SENDER, "r@example.test", message())).ok


async def test_it_probes_a_healthy_relay_and_keeps_the_session(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    sink = sink_factory(ok())
    conn = await connect(sink)
    assert (await conn.probe()).ok
    assert (await conn.send(SENDER, "r@example.test", message())).ok
    assert sink.connections == 1


async def test_it_probes_an_unreachable_relay_as_temporary(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    outcome = await (await connect(sink_factory(refuse()))).probe()
    assert outcome.kind == "temporary"


async def test_it_sends_in_parallel_over_several_connections(
    sink_factory: SinkFactory, connect: Connect
) -> None:
    sink = sink_factory(ok())
    conns = [await connect(sink) for _ in range(8)]

    async def pump(conn: SmtpConnection, start: int) -> list[bool]:
        return [
            (await conn.send(SENDER, f"r{n}@example.test", message(n))).ok
            for n in range(start, start + 50)
        ]

    results = await asyncio.gather(*(pump(c, i * 50) for i, c in enumerate(conns)))
    assert all(all(r) for r in results)
    assert sink.count() == 400
    assert sink.connections == 8
    assert len(sink.message_ids()) == 400


async def test_it_reconnects_after_close(sink_factory: SinkFactory, connect: Connect) -> None:
    sink = sink_factory(ok())
    conn = await connect(sink)
    assert (await conn.send(SENDER, "r@example.test", message(1))).ok
    await conn.close()
    assert not conn.is_open
    assert (await conn.send(SENDER, "r@example.test", message(2))).ok
    assert sink.connections == 2


async def test_it_pipelines_only_when_the_relay_offers_it(
    sink_factory: SinkFactory, connect: Connect, pipelined: bool
) -> None:
    conn = await connect(sink_factory(ok()))
    assert (await conn.send(SENDER, "r@example.test", message())).ok
    assert conn.pipelining is pipelined


async def test_it_sends_mail_rcpt_and_data_before_reading_a_reply(connect: Connect) -> None:
    # This server answers nothing until DATA has arrived: only a pipelining client gets through.
    async with Scripted([ONE_MESSAGE]) as server:
        conn = await connect(server)
        outcome = await conn.send(SENDER, "r@example.test", message(3, body=b".dot\r\n"))
    assert (outcome.kind, outcome.code) == ("sent", 250)
    assert server.received[0].endswith(
        b"MAIL FROM:<news@herald.test>\r\nRCPT TO:<r@example.test>\r\nDATA\r\n"
        + message(3, body=b"..dot\r\n")
        + b".\r\n"
    )


async def test_it_reads_every_pipelined_reply_after_a_refused_sender(connect: Connect) -> None:
    refused = b"451 4.3.0 Try later\r\n503 5.5.1 Need MAIL\r\n503 5.5.1 Need RCPT\r\n"
    session = ((b"DATA\r\n", refused), (b"RSET\r\n", b"250 Ok\r\n"), *ONE_MESSAGE)
    async with Scripted([session]) as server:
        conn = await connect(server)
        first = await conn.send(SENDER, "r@example.test", message(1))
        second = await conn.send(SENDER, "r@example.test", message(2))
    assert (first.kind, first.reply) == ("temporary", "mail: 451 4.3.0 Try later")
    assert second.ok
    assert conn.connects == 1


async def test_it_sends_no_body_when_data_is_accepted_after_a_refused_recipient(
    connect: Connect,
) -> None:
    # RFC 2920 says DATA must fail after every RCPT failed; a relay that says 354
    # anyway gets no body (the session is dropped), so nothing can be delivered.
    confused = b"250 Ok\r\n550-5.1.1 No such user\r\n550 5.1.1 here\r\n354 Go ahead\r\n"
    async with Scripted([((b"DATA\r\n", confused),), ONE_MESSAGE]) as server:
        conn = await connect(server)
        bounced = await conn.send(SENDER, "gone@example.test", message(1))
        assert not conn.is_open
        delivered = await conn.send(SENDER, "r@example.test", message(2))
    assert (bounced.kind, bounced.code) == ("bounce", 550)
    assert bounced.reply == "rcpt: 550 5.1.1 No such user 5.1.1 here"
    assert server.received[0].endswith(b"DATA\r\n")
    assert delivered.ok


async def test_it_ignores_a_parting_reply_and_resends_on_a_fresh_session(
    connect: Connect,
) -> None:
    # Relays often say "421 idle timeout" before hanging up; that reply answers nothing.
    parting = (ONE_MESSAGE[0], (b"\r\n.\r\n", b"250 queued\r\n421 4.4.2 Idle timeout\r\n"))
    async with Scripted([(*parting, (b"\r\n", b"")), ONE_MESSAGE]) as server:
        conn = await connect(server)
        first = await conn.send(SENDER, "r@example.test", message(1))
        second = await conn.send(SENDER, "r@example.test", message(2))
    assert first.ok and second.ok
    assert conn.connects == 2
    assert [data.count(b"Message-ID") for data in server.received] == [1, 1]


@pytest.fixture
def server_tls(tmp_path: Path) -> ssl.SSLContext:
    """A server-side TLS context with a fresh self-signed certificate (needs openssl)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        unavailable("openssl is not installed", in_ci="openssl is required in CI for the TLS tests")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    subject = ["-days", "1", "-subj", "/CN=sink.test", "-keyout", str(key), "-out", str(cert)]
    subprocess.run([openssl, "req", "-x509", *new_key, *subject], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


class _Recorder:
    """aiosmtpd handler: offer PIPELINING, keep each message's bytes."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_EHLO(self, server: Any, session: Any, env: Any, host: str, rs: Any) -> Any:
        session.host_name = host
        return [*rs[:-1], "250-PIPELINING", rs[-1]]

    async def handle_DATA(self, server: Any, session: Any, env: Any) -> str:
        self.messages.append(bytes(env.original_content))
        return "250 OK"


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_it_sends_over_tls_after_handing_the_session_to_its_own_reader(
    server_tls: ssl.SSLContext, tls: str
) -> None:
    recorder = _Recorder()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: AiosmtpdServer(recorder, hostname="sink.test", tls_context=server_tls),
        "127.0.0.1",
        0,
        ssl=server_tls if tls == "implicit" else None,
    )
    port = server.sockets[0].getsockname()[1]
    url = f"smtp://127.0.0.1:{port}?tls={tls}&verify=false&timeout=5"
    conn = SmtpConnection(parse_relay_url(url), local_hostname="client.test")
    try:
        outcomes = [await conn.send(SENDER, "r@example.test", message(n)) for n in (1, 2)]
        assert conn.pipelining
    finally:
        await conn.close()
        server.close()
    assert [o.ok for o in outcomes] == [True, True]
    assert recorder.messages == [message(1), message(2)]


async def test_it_gives_up_on_a_silent_envelope_knowing_nothing_was_sent(
    connect: Connect,
) -> None:
    async with Scripted([()]) as server:  # answers EHLO, then nothing
        conn = await connect(server, "timeout=0.2")
        outcome = await conn.send(SENDER, "r@example.test", message())
    assert (outcome.kind, outcome.code, outcome.ambiguous) == ("temporary", None, False)
    assert outcome.reply.startswith("mail: ")
    assert not conn.is_open


async def test_it_flags_a_relay_silent_after_the_dot_as_ambiguous(connect: Connect) -> None:
    async with Scripted([ONE_MESSAGE[:1]]) as server:  # takes the body, never answers it
        conn = await connect(server, "timeout=0.2")
        outcome = await conn.send(SENDER, "r@example.test", message())
    assert (outcome.kind, outcome.code, outcome.ambiguous) == ("temporary", None, True)
    assert outcome.reply.startswith("dot: ")
    assert not conn.is_open


class _Transport(asyncio.Transport):
    """Just enough transport for feeding an SmtpWire by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        pass

    def abort(self) -> None:
        self.closed = True


async def test_it_reads_replies_split_across_reads_in_order() -> None:
    wire = SmtpWire.take_over(_Transport())
    wire.write(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n", replies=3)
    for chunk in (b"25", b"0 Ok\r\n250-first\r", b"\n250 second\r\n354 ", b"Go\r\n"):
        wire.data_received(chunk)
    replies = [await wire.read(1.0) for _ in range(3)]
    assert replies == [(250, "Ok"), (250, "first\nsecond"), (354, "Go")]


async def test_it_treats_a_reply_that_is_not_smtp_as_a_lost_connection() -> None:
    transport = _Transport()
    wire = SmtpWire.take_over(transport)
    wire.write(b"NOOP\r\n", replies=1)
    wire.data_received(b"HTTP/1.1 400 Bad Request\r\n")
    with pytest.raises(WireClosed):
        await wire.read(1.0)
    assert transport.closed
