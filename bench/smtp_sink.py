"""Raw SMTP throughput: pre-built messages over C concurrent SmtpConnections.

    .venv/bin/python bench/smtp_sink.py [-n 20000] [-c 8] [--size 10240] [--runs 3]

Sends N ~10 KB messages (one recipient each) to a fast local sink and prints
messages/s (median of the runs) for herald's SmtpConnection and, for
comparison, for plain ``aiosmtplib.SMTP.sendmail`` on the same number of
connections. The sink is Postfix's ``smtp-sink`` when installed (a C server,
so the figure is the client's limit), else an aiosmtpd sink in a separate
process. Only 127.0.0.1 is used. Baseline: the worker needs >= 2,000 msg/s.
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
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiosmtplib

from herald.delivery.smtp import SmtpConnection
from herald.domain.relays import RelayConfig

HOST = "127.0.0.1"
TARGET = 2000.0
SENDER = "bench@herald.test"
Runner = Callable[[int, list[bytes], int], Awaitable[None]]


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
def running_sink(kind: str) -> Iterator[tuple[str, int]]:
    """Start the sink as a subprocess; yield (description, port); stop it."""
    port = free_port()
    postfix = shutil.which("smtp-sink") or shutil.which("smtp-sink", path="/usr/sbin")
    if kind in ("auto", "postfix") and postfix:
        user = ["-u", "root"] if os.geteuid() == 0 else []
        cmd = [postfix, *user, f"{HOST}:{port}", "256"]
        name = "postfix smtp-sink"
    elif kind == "postfix":
        raise SystemExit("smtp-sink is not installed (apt-get install postfix)")
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", str(port)]
        name = "aiosmtpd sink (separate process)"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        yield name, port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def serve_aiosmtpd(port: int) -> None:
    """The fallback sink: accept everything, count nothing, keep nothing."""
    from aiosmtpd.smtp import SMTP

    class Handler:
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


def measure(
    runner: Runner, port: int, messages: list[bytes], args: argparse.Namespace
) -> tuple[list[float], float]:
    """Messages/s of each run, and the client's median CPU time per message (µs)."""
    rates, cpu = [], []
    for _ in range(args.runs):
        started, cpu_started = time.perf_counter(), time.process_time()
        if args.uvloop:
            import uvloop

            uvloop.run(runner(port, messages, args.connections))
        else:
            asyncio.run(runner(port, messages, args.connections))
        rates.append(len(messages) / (time.perf_counter() - started))
        cpu.append((time.process_time() - cpu_started) / len(messages) * 1e6)
    return rates, statistics.median(cpu)


def report(label: str, measured: tuple[list[float], float]) -> None:
    rates, cpu_us = measured
    runs = ", ".join(f"{r:,.0f}" for r in rates)
    median = statistics.median(rates)
    verdict = "meets" if median >= TARGET else "BELOW"
    print(f"{label:<32} {median:>7,.0f} msg/s (runs: {runs}; {verdict} baseline {TARGET:,.0f})")
    print(f"{'':<32} client CPU {cpu_us:,.0f} µs/msg = {1e6 / cpu_us:,.0f} msg/s per core")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--messages", type=int, default=20_000)
    parser.add_argument("-c", "--connections", type=int, default=8)
    parser.add_argument("--size", type=int, default=10 * 1024, help="approximate message bytes")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sink", choices=["auto", "postfix", "aiosmtpd"], default="auto")
    parser.add_argument("--uvloop", action="store_true", help="run the client on uvloop")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_aiosmtpd(args.serve)
        return
    messages = build_messages(args.messages, args.size)
    with running_sink(args.sink) as (sink_name, port):
        loop_name = "uvloop" if args.uvloop else "asyncio"
        print(f"sink: {sink_name} on {HOST}:{port}; client loop: {loop_name}")
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(
            f"{args.messages:,} messages of {len(messages[0]):,} bytes, "
            f"{args.connections} connections, median of {args.runs} runs"
        )
        report("herald SmtpConnection.send", measure(herald_run, port, messages, args))
        report("aiosmtplib SMTP.sendmail (raw)", measure(raw_run, port, messages, args))


if __name__ == "__main__":
    main()
