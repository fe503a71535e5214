"""SmtpConnection against real SMTP servers (aiosmtpd sinks on 127.0.0.1)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from herald.delivery.smtp import SmtpConnection
from herald.domain.relays import parse_relay_url
from tests.sinks import (
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


def message(n: int = 1, *, body: bytes = b"Hello.\r\n") -> bytes:
    return (
        b"From: News <news@herald.test>\r\nTo: reader@example.test\r\n"
        b"Subject: Test\r\nMessage-ID: <%d@herald.test>\r\n\r\n" % n + body
    )


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Make SmtpConnections to a sink (``?query`` appended to its URL); all closed after."""
    made: list[SmtpConnection] = []

    async def make(sink: Sink, query: str = "timeout=5", *, login: str = "") -> SmtpConnection:
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
