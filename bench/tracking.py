"""Click redirects vs. /healthz on one node: requests/s, p50/p99, and no click lost.

    .venv/bin/python bench/tracking.py [--runs 3] [--backend sqlite|postgresql]
                                       [--duration 10] [--connections 32] [--threads 2]
                                       [--rate 1000] [--paced-duration 10]
                                       [--loader auto|wrk|asyncio]

Each run starts one ``herald up`` node on a free loopback port with a fresh
database: SQLite in a temporary data directory, or a scratch database on the
server at HERALD_BENCH_PG_URL (default postgresql://postgres@127.0.0.1:5432/postgres).
Click links are minted with ``herald.domain.tracking.click_url`` and the
node's secret, so no campaign is sent; a link's campaign id names the load
generator that used it, so each one's events can be counted.

1. Maximum throughput: ``--duration`` s of closed-loop load on ``--connections``
   keep-alive connections, on /healthz (the framework's own floor) and on one
   click link, by wrk (``apt-get install wrk``) when installed, else by the
   bench's asyncio client: requests/s, p50, p99 and the click/healthz ratio.
2. Paced: the asyncio client offers ``--rate`` requests/s open-loop for
   ``--paced-duration`` s to each endpoint (request i is due at i/rate; wrk
   cannot pace, wrk2 is not in Debian). A request whose connection was still
   busy at its due time is timed from that time (no coordinated omission);
   one sent on time is timed from its send (the client's timer jitter is not
   the node's).
3. Events: the spool backlog (events not yet in the database) after the max
   click load and after the run, the seconds until the drainer emptied it,
   and the check that tracking_events holds one event per 302 the asyncio
   client received. wrk abandons its requests in flight when time is up and
   the node may still answer them: its link may have up to ``--connections``
   more events than wrk counted 302s.

Targets: click rate >= 0.5 x healthz rate; click p99 < 10 ms at 1,000 req/s;
no event missing. The load generator shares the machine with the node. Medians
over the runs, then each run. Every wait has a deadline; the node is always
stopped. Exit status 1 when an event is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

# The harness (node process, secret, waits) lives in tests/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, func, select
from tests.factories import SECRET
from tests.processes import HeraldUp as Node
from tests.processes import wait_until

from failover import Figures, scratch_database
from herald.domain.tracking import click_url
from herald.store.engine import make_engine
from herald.store.tables import tracking_events
from send import run_loop

TARGET = "https://shop.example.com/spring-sale?utm_source=herald&utm_medium=email"
HEALTHZ = "/healthz"
WRK_CAMPAIGN, ASYNC_CAMPAIGN, DELIVERY_ID = 1, 2, 4242
WARMUP_SECONDS = 1.0
REQUEST_TIMEOUT = 5.0
PACED_GRACE = 30.0
DRAIN_TIMEOUT = 120.0
RATIO_TARGET = 0.5
P99_TARGET_MS = 10.0
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)
_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass
class Load:
    """What one load phase saw; latencies in milliseconds."""

    answered: int  # with the expected status
    errors: int  # another status, a timeout, a socket error, a request not sent
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.answered / self.seconds


class Connection:
    """One keep-alive HTTP/1.1 connection: GETs whose answers carry Content-Length."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def open(self) -> None:
        if self._streams is None:
            self._streams = await asyncio.open_connection("127.0.0.1", self.port)

    async def get(self, path: str) -> int:
        """Send one GET, read the whole answer; return its status code."""
        await self.open()
        assert self._streams is not None
        reader, writer = self._streams
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = _LENGTH.search(head)
        if length is None:
            raise ValueError("an answer without Content-Length")
        await reader.readexactly(int(length[1]))
        if _CLOSE.search(head):
            self.close()
        return int(head[9:12])

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def _timed(conn: Connection, path: str, expect: int) -> bool:
    """One request within REQUEST_TIMEOUT; whether it got ``expect``."""
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            return await conn.get(path) == expect
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
        conn.close()  # the next request starts on a new connection
        return False


def _load(latencies: list[float], errors: int, seconds: float) -> Load:
    if len(latencies) < 2:
        return Load(len(latencies), errors, seconds, float("nan"), float("nan"))
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return Load(len(latencies), errors, seconds, cuts[49] * 1e3, cuts[98] * 1e3)


async def closed_loop(
    port: int, path: str, expect: int, *, connections: int, seconds: float
) -> Load:
    """Each connection sends its next request when the last is answered, for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def user() -> None:
        nonlocal errors
        conn = Connection(port)
        try:
            while (sent := time.perf_counter()) < deadline:
                if await _timed(conn, path, expect):
                    latencies.append(time.perf_counter() - sent)
                else:
                    errors += 1
        finally:
            conn.close()

    await asyncio.gather(*(user() for _ in range(connections)))
    return _load(latencies, errors, time.perf_counter() - started)


async def paced(
    port: int, path: str, expect: int, *, connections: int, rate: float, seconds: float
) -> Load:
    """Offer ``rate`` requests/s open-loop for ``seconds``; see the module docstring."""
    total = int(rate * seconds)
    latencies: list[float] = []
    errors = 0
    conns = [Connection(port) for _ in range(connections)]
    await asyncio.gather(*(c.open() for c in conns))
    t0 = time.perf_counter()
    deadline = t0 + seconds + PACED_GRACE

    async def user(k: int, conn: Connection) -> None:
        nonlocal errors
        for i in range(k, total, connections):
            due = t0 + i / rate
            now = time.perf_counter()
            if now > deadline:
                errors += 1  # not sent: the node fell too far behind
                continue
            if now < due:
                await asyncio.sleep(due - now)
                start = time.perf_counter()  # on time: the timer's jitter is the client's
            else:
                start = due  # the connection was still busy: the wait counts
            if await _timed(conn, path, expect):
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1

    try:
        await asyncio.gather(*(user(k, c) for k, c in enumerate(conns)))
    finally:
        for conn in conns:
            conn.close()
    return _load(latencies, errors, time.perf_counter() - t0)


def _ms(value: str, unit: str) -> float:
    return float(value) * _MS[unit]


def parse_wrk(out: str) -> Load:
    """Read wrk's ``--latency`` report: answers, errors, duration, p50 and p99."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", out)
    p50 = re.search(r"^\s*50%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
    if done is None or p50 is None or p99 is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    rejected = int(bad[1]) if bad else 0
    errors = rejected + (sum(int(n) for n in sockets.groups()) if sockets else 0)
    seconds = _ms(done[2], done[3]) / 1e3
    return Load(int(done[1]) - rejected, errors, seconds, _ms(*p50.groups()), _ms(*p99.groups()))


def wrk(url: str, args: argparse.Namespace) -> Load:
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration:g}s"]
    cmd += ["--timeout", f"{REQUEST_TIMEOUT:g}s", "--latency", url]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=args.duration + 60, check=True
    )
    return parse_wrk(done.stdout)


def spool_backlog(spool: Path) -> int:
    """Events spooled but not yet in the database (lines in the spool's files)."""
    lines = 0
    for path in spool.glob("*.jsonl"):
        with contextlib.suppress(FileNotFoundError):  # drained while we looked
            lines += path.read_bytes().count(b"\n")
    return lines


def recorded(engine: Engine) -> dict[int, int]:
    """Click events in the database, per campaign id."""
    with engine.begin() as conn:
        rows = conn.execute(
            select(tracking_events.c.campaign_id, func.count())
            .where(tracking_events.c.kind == "click")
            .group_by(tracking_events.c.campaign_id)
        ).all()
    return {int(campaign): int(n) for campaign, n in rows}


def _put(figures: Figures, prefix: str, load: Load) -> None:
    figures[f"{prefix}_rps"] = load.rate
    figures[f"{prefix}_p50_ms"] = load.p50_ms
    figures[f"{prefix}_p99_ms"] = load.p99_ms
    figures["errors"] = figures.get("errors", 0.0) + load.errors


def measure(node: Node, engine: Engine, spool: Path, args: argparse.Namespace) -> Figures:
    """The three steps of the module docstring on one running node."""
    answered = {WRK_CAMPAIGN: 0, ASYNC_CAMPAIGN: 0}  # 302s seen, per link
    links = {c: click_url(SECRET, node.url, DELIVERY_ID, c, TARGET) for c in answered}
    paths = {c: f"{urlsplit(u).path}?{urlsplit(u).query}" for c, u in links.items()}
    f: Figures = {}
    conns = args.connections
    for path, expect in ((HEALTHZ, 200), (paths[ASYNC_CAMPAIGN], 302)):
        warm = run_loop(
            closed_loop(node.port, path, expect, connections=conns, seconds=WARMUP_SECONDS)
        )
        answered[ASYNC_CAMPAIGN] += warm.answered if expect == 302 else 0
    if args.loader == "wrk":
        _put(f, "healthz_max", wrk(node.url + HEALTHZ, args))
        click = wrk(links[WRK_CAMPAIGN], args)
        answered[WRK_CAMPAIGN] += click.answered
    else:
        load = functools.partial(closed_loop, node.port, seconds=args.duration, connections=conns)
        _put(f, "healthz_max", run_loop(load(HEALTHZ, 200)))
        click = run_loop(load(paths[ASYNC_CAMPAIGN], 302))
        answered[ASYNC_CAMPAIGN] += click.answered
    _put(f, "click_max", click)
    f["click_to_healthz"] = f["click_max_rps"] / f["healthz_max_rps"]
    f["backlog_after_max_click"] = spool_backlog(spool)
    pace = {"connections": conns, "rate": args.rate, "seconds": args.paced_duration}
    _put(f, "healthz_paced", run_loop(paced(node.port, HEALTHZ, 200, **pace)))
    click = run_loop(paced(node.port, paths[ASYNC_CAMPAIGN], 302, **pace))
    answered[ASYNC_CAMPAIGN] += click.answered
    _put(f, "click_paced", click)
    f.update(drained(engine, spool, answered))
    return f


def drained(engine: Engine, spool: Path, answered: dict[int, int]) -> Figures:
    """Wait for the drainer; compare the events in the database with the 302s seen."""
    ended = time.monotonic()
    backlog = spool_backlog(spool)

    def done() -> bool:
        events = recorded(engine)
        enough = all(events.get(c, 0) >= n for c, n in answered.items())
        return enough and spool_backlog(spool) == 0

    with contextlib.suppress(AssertionError):  # a shortfall is printed as events_missing
        wait_until(done, DRAIN_TIMEOUT, "the drainer to store every click")
    drain_s = time.monotonic() - ended
    events = recorded(engine)
    unseen = events.get(WRK_CAMPAIGN, 0) - answered[WRK_CAMPAIGN]
    return {
        "backlog_after_run": backlog,
        "drain_s": drain_s,
        "clicks_302_asyncio": answered[ASYNC_CAMPAIGN],
        "events_missing": answered[ASYNC_CAMPAIGN] - events.get(ASYNC_CAMPAIGN, 0),
        "wrk_unseen_302": unseen,
    }


def run_once(args: argparse.Namespace) -> Figures:
    """Start a node on a fresh database, measure, always stop the node."""
    with contextlib.ExitStack() as stack:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if args.backend == "sqlite":
            url = f"sqlite:///{data_dir / 'herald.db'}"
        else:
            url = stack.enter_context(scratch_database())
        node = Node(url, data_dir, relay_url="")  # no relay: the worker has nothing to send
        node.env["HERALD_CAPTURE_PORT"] = "0"
        stack.callback(node.stop)
        node.start()
        engine = make_engine(url)
        stack.callback(engine.dispose)
        spool = data_dir / "spool" / node.env["HERALD_NODE_NAME"]
        return measure(node, engine, spool, args)


@dataclass(frozen=True)
class Row:
    """One printed figure; ``meets`` judges the median, or every run when ``check``."""

    key: str
    label: str
    unit: str = ""
    target: str = ""
    meets: Callable[[float], bool] | None = None
    check: bool = False  # a correctness check: a miss makes the exit status 1


def rows(connections: int) -> list[Row]:
    """The printed figures, in order; wrk may leave up to one request per connection unseen."""

    def in_flight(value: float) -> bool:
        return 0 <= value <= connections

    return [
        Row("healthz_max_rps", "healthz rate at max load", "req/s"),
        Row("healthz_max_p50_ms", "healthz p50 at max load", "ms"),
        Row("healthz_max_p99_ms", "healthz p99 at max load", "ms"),
        Row("click_max_rps", "click rate at max load", "req/s"),
        Row("click_max_p50_ms", "click p50 at max load", "ms"),
        Row("click_max_p99_ms", "click p99 at max load", "ms"),
        Row("click_to_healthz", "click/healthz rate", "", ">= 0.5", lambda v: v >= RATIO_TARGET),
        Row("healthz_paced_rps", "healthz rate achieved, paced", "req/s"),
        Row("healthz_paced_p50_ms", "healthz p50, paced", "ms"),
        Row("healthz_paced_p99_ms", "healthz p99, paced", "ms"),
        Row("click_paced_rps", "click rate achieved, paced", "req/s"),
        Row("click_paced_p50_ms", "click p50, paced", "ms"),
        Row("click_paced_p99_ms", "click p99, paced", "ms", "< 10 ms", lambda v: v < P99_TARGET_MS),
        Row("backlog_after_max_click", "spool backlog after max click load", "events"),
        Row("backlog_after_run", "spool backlog after the run", "events"),
        Row("drain_s", "seconds until the spool was drained", "s"),
        Row("clicks_302_asyncio", "302s seen by the asyncio client"),
        Row("events_missing", "302s without an event (asyncio)", "", "0", lambda v: v == 0, True),
        Row("wrk_unseen_302", "events beyond wrk's 302s", "", f"0..{connections}", in_flight, True),
        Row("errors", "errors (status, timeout, socket)", "", "0", lambda v: v == 0),
    ]


def report(runs: list[Figures], connections: int) -> bool:
    """Print one line per figure: median, each run, target; whether every check held."""
    ok = True
    for row in rows(connections):
        values = [r[row.key] for r in runs]
        median = statistics.median(values)
        each = "  ".join(f"{v:.2f}" for v in values)
        verdict = ""
        if row.meets is not None:
            met = all(map(row.meets, values)) if row.check else row.meets(median)
            ok = ok and (met or not row.check)
            verdict = f"target {row.target}: {'met' if met else 'MISSED'}"
        print(f"  {row.label:<38} {median:>10.2f} {row.unit:<6} [{each}]  {verdict}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--duration", type=float, default=10.0, help="max-load seconds")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced requests/s")
    parser.add_argument("--paced-duration", type=float, default=10.0)
    parser.add_argument("--loader", default="auto", choices=["auto", "wrk", "asyncio"])
    args = parser.parse_args()
    if args.loader == "auto":
        args.loader = "wrk" if shutil.which("wrk") else "asyncio"
    if args.loader == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not installed (apt-get install wrk)")
    print(
        f"herald up on 127.0.0.1, {args.backend}; max load: {args.loader}, "
        f"{args.connections} connections, {args.duration:g} s; paced: asyncio client, "
        f"{args.rate:g} req/s, {args.paced_duration:g} s; median of {args.runs} runs; "
        f"cores: {os.cpu_count()}"
    )
    runs = [run_once(args) for _ in range(args.runs)]
    if not report(runs, args.connections):
        sys.exit(1)


if __name__ == "__main__":
    main()
