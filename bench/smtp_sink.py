"""Raw SMTP throughput: pre-built messages over C concurrent SmtpConnections.

    .venv/bin/python bench/smtp_sink.py [-n 20000] [-c 8] [--size 10240] [--runs 3]

Sends N ~10 KB messages (one recipient each) to a fast local sink and prints
messages/s (median of the runs) and the client's CPU time per message for:
herald's SmtpConnection against a sink that offers PIPELINING (MAIL, RCPT and
DATA in one write: two writes, two round trips per message), the same against
a sink that does not (one command at a time: four round trips), and, for
comparison, plain ``aiosmtplib.SMTP.sendmail`` on the same number of
connections. The sink is Postfix's ``smtp-sink`` when installed (a C server,
so the figure is the client's limit; ``-p`` turns its PIPELINING off), else an
aiosmtpd sink in a separate process. Only 127.0.0.1 is used. Baseline: the
worker needs >= 2,000 msg/s, and the whole worker (render, MIME, acks) shares
the process, so CPU per message is the figure to watch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import aiosmtplib

from herald.delivery.smtp import SmtpConnection
from herald.domain.relays import RelayConfig

HOST = "127.0.0.1"
TARGET = 2000.0
SENDER = "bench@herald.test"
Runner = Callable[[int, list[bytes], int], Coroutine[Any, Any, None]]


def build_messages(count: int, size: int) -> list[bytes]:
    """``count`` distinct messages of about ``size`` bytes, CRLF, lines under 80 chars."""
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"
    body = line * max(1, size // len(line))
    return [
        b"From: Bench <bench@herald.test>\r\nTo: r%d@example.test\r\n"
        b"Subject: Bench %d\r\nMessage-ID: <%d.bench@herald.test>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        % (n, n, n)
        + body
        for n in range(count)
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.05)
    raise TimeoutError(f"no sink listening on {HOST}:{port}")


@contextlib.contextmanager
def running_sink(kind: str, *, pipelining: bool = True) -> Iterator[tuple[str, int]]:
    """Start the sink as a subprocess; yield (description, port); stop it."""
    port = free_port()
    postfix = shutil.which("smtp-sink") or shutil.which("smtp-sink", path="/usr/sbin")
    if kind in ("auto", "postfix") and postfix:
        user = ["-u", "root"] if os.geteuid() == 0 else []
        no_pipelining = [] if pipelining else ["-p"]
        cmd = [postfix, *user, *no_pipelining, f"{HOST}:{port}", "256"]
        name = "postfix smtp-sink"
    elif kind == "postfix":
        raise SystemExit("smtp-sink is not installed (apt-get install postfix)")
    else:
        serve = "--serve" if pipelining else "--serve-without-pipelining"
        cmd = [sys.executable, str(Path(__file__).resolve()), serve, str(port)]
        name = "aiosmtpd sink (separate process)"
    name += "" if pipelining else " without PIPELINING"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        yield name, port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def serve_aiosmtpd(port: int, *, pipelining: bool) -> None:
    """The fallback sink: accept everything, count nothing, keep nothing."""
    from aiosmtpd.smtp import SMTP

    class Handler:
        async def handle_EHLO(
            self, server: object, session: object, envelope: object, host: str, rs: list[str]
        ) -> list[str]:
            session.host_name = host  # type: ignore[attr-defined]
            # aiosmtpd reads pipelined commands in order but does not announce it.
            return [*rs[:-1], "250-PIPELINING", rs[-1]] if pipelining else rs

        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 OK"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: SMTP(Handler(), loop=loop), HOST, port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


async def herald_run(port: int, messages: list[bytes], conns: int) -> None:
    relay = RelayConfig("bench", HOST, port, "none", None, None, timeout=30.0)
    pool = [SmtpConnection(relay, local_hostname="bench.test") for _ in range(conns)]
    next_index = iter(range(len(messages)))

    async def pump(conn: SmtpConnection) -> None:
        for n in next_index:
            outcome = await conn.send(SENDER, f"r{n}@example.test", messages[n])
            if not outcome.ok:
                raise RuntimeError(f"message {n}: {outcome}")

    await asyncio.gather(*(pump(c) for c in pool))
    await asyncio.gather(*(c.close() for c in pool))


async def raw_run(port: int, messages: list[bytes], conns: int) -> None:
    clients = [
        aiosmtplib.SMTP(hostname=HOST, port=port, start_tls=False, local_hostname="bench.test")
        for _ in range(conns)
    ]
    next_index = iter(range(len(messages)))

    async def pump(client: aiosmtplib.SMTP) -> None:
        await client.connect()
        for n in next_index:
            await client.sendmail(SENDER, [f"r{n}@example.test"], messages[n])
        await client.quit()

    await asyncio.gather(*(pump(c) for c in clients))


class Measured(NamedTuple):
    """Messages/s of each run; median client CPU per message (µs): total, user, system."""

    rates: list[float]
    cpu_us: float
    user_us: float
    system_us: float


def measure(runner: Runner, port: int, messages: list[bytes], args: argparse.Namespace) -> Measured:
    """Run ``runner`` ``args.runs`` times, timing each run and its CPU use."""
    rates, cpu, user, system = [], [], [], []
    per_message = 1e6 / len(messages)
    for _ in range(args.runs):
        started, cpu_started, times_started = time.perf_counter(), time.process_time(), os.times()
        if args.uvloop:
            import uvloop

            uvloop.run(runner(port, messages, args.connections))
        else:
            asyncio.run(runner(port, messages, args.connections))
        rates.append(len(messages) / (time.perf_counter() - started))
        cpu.append((time.process_time() - cpu_started) * per_message)
        times = os.times()
        user.append((times.user - times_started.user) * per_message)
        system.append((times.system - times_started.system) * per_message)
    median = statistics.median
    return Measured(rates, median(cpu), median(user), median(system))


def report(label: str, measured: Measured) -> None:
    runs = ", ".join(f"{r:,.0f}" for r in measured.rates)
    median = statistics.median(measured.rates)
    verdict = "meets" if median >= TARGET else "BELOW"
    cpu_us = measured.cpu_us
    print(f"{label:<32} {median:>7,.0f} msg/s (runs: {runs}; {verdict} baseline {TARGET:,.0f})")
    print(
        f"{'':<32} client CPU {cpu_us:,.0f} µs/msg = {1e6 / cpu_us:,.0f} msg/s per core "
        f"(user {measured.user_us:,.0f} + system {measured.system_us:,.0f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--messages", type=int, default=20_000)
    parser.add_argument("-c", "--connections", type=int, default=8)
    parser.add_argument("--size", type=int, default=10 * 1024, help="approximate message bytes")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sink", choices=["auto", "postfix", "aiosmtpd"], default="auto")
    parser.add_argument("--uvloop", action="store_true", help="run the client on uvloop")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-without-pipelining", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve or args.serve_without_pipelining:
        serve_aiosmtpd(args.serve or args.serve_without_pipelining, pipelining=bool(args.serve))
        return
    messages = build_messages(args.messages, args.size)
    loop_name = "uvloop" if args.uvloop else "asyncio"
    print(f"client loop: {loop_name}; load average before: {load_average()}")
    print(
        f"{args.messages:,} messages of {len(messages[0]):,} bytes, "
        f"{args.connections} connections, median of {args.runs} runs"
    )
    cases: list[tuple[str, Runner, bool]] = [
        ("herald send, PIPELINING", herald_run, True),
        ("herald send, one at a time", herald_run, False),
        ("aiosmtplib SMTP.sendmail (raw)", raw_run, True),
    ]
    for label, runner, pipelining in cases:
        with running_sink(args.sink, pipelining=pipelining) as (sink_name, port):
            print(f"-- sink: {sink_name} on {HOST}:{port}")
            report(label, measure(runner, port, messages, args))
    print(f"load average after: {load_average()}")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
