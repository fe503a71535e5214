"""Weighted relays and relay failover: the split, seconds to shift, rates, duplicates.

    .venv/bin/python bench/relays.py [-n 20000] [--runs 3] [--backend sqlite|postgresql]
                                     [--workers 1] [--concurrency 8] [--timeout 300]

One run (RELIABILITY row 3): a fresh database (a SQLite file in a temporary
directory, or a scratch database on the server at HERALD_BENCH_PG_URL, made
as bench/send.py makes them), N subscribers and send.py's ~10 KB personalised
campaign. Two relays are stored through the CLI, as a user would store them:
``herald relays add heavy smtp://127.0.0.1:P1 --weight 3`` and ``herald relays
add light smtp://127.0.0.1:P2 --weight 1``, each pointing at its own sink.
``--workers`` ``herald worker`` processes start with an empty HERALD_RELAYS, so
they send through the stored relays. At 40 % of the campaign the heavy sink's
process is terminated: its open sessions are cut, new connections refused.

The sinks are aiosmtpd servers, each in its own process, that append the
Message-ID of every message they accept to a file before answering 250, so
what a sink took survives its death and copies can be found. (Postfix's
smtp-sink, send.py's fast sink, keeps no record of which messages it got.)

Figures, one line each (median over ``--runs``, then each run):

- heavy_before, light_before: messages each sink received up to the kill;
  heavy_share_before = heavy / (heavy + light). Weights 3:1 mean 0.75.
- rate_before_msg_s: both sinks, from the first message to the kill.
- failover_s: seconds from the kill to the start of the first 0.5 s window in
  which the light sink alone received at least 80 % of rate_before (sinks are
  sampled every 20 ms; nan if no such window began before the last message).
- rate_after_msg_s: messages received after the kill over the seconds from
  the kill to the last message (deferred messages included);
  longest_gap_after_s: the longest time after the kill in which no message
  arrived (a wait for messages deferred when the heavy relay refused them).
- delivered_unique: distinct Message-IDs over both sinks; duplicates: copies
  beyond the first; failed: deliveries the campaign marked failed; lost:
  N - delivered_unique - failed; finished: 1 if ``herald campaigns show ID
  --json`` says "finished".

Baseline: share 0.75; failover within seconds (a breaker opens on the first
refused connections); 0 failed, 0 lost; duplicates only from messages the
dying sink took without its 250 reaching the worker. Every wait has a
deadline: a run gives up after ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO, cast

from sqlalchemy import Engine

# The harness (node processes, factories, Message-ID parsing) lives in tests/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.factories import SECRET, finished
from tests.processes import Nodes, wait_until
from tests.sinks import Sink, message_id_of

from failover import Figures, Timeline, report
from herald.services import campaigns, nodes
from send import database, run_loop, seed
from smtp_sink import HOST, free_port, wait_listening

WEIGHTS = {"heavy": 3, "light": 1}
KILL_AT = 0.4
WINDOW = 0.5
SHARE = 0.8


class RecordingSink:
    """An aiosmtpd sink in its own process, recording each Message-ID in a file.

    The file outlives the process, so what a killed sink accepted can still be
    counted. ``count`` reads only what was appended since its last call.
    """

    def __init__(self, record: Path) -> None:
        self.record = record
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._offset = 0
        self._count = 0

    @property
    def url(self) -> str:
        return f"smtp://{HOST}:{self.port}"

    def __enter__(self) -> RecordingSink:
        self.record.touch()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", str(self.port)]
        self._proc = subprocess.Popen(
            [*cmd, "--record", str(self.record)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_listening(self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def kill(self) -> None:
        """Terminate the sink process: open sessions are cut, connections refused."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
        if self._proc is not None:
            self._proc.wait(timeout=10)

    def count(self) -> int:
        """Messages accepted so far (complete lines of the record)."""
        with self._lock, self.record.open("rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
            complete = chunk.rfind(b"\n") + 1
            self._count += chunk.count(b"\n", 0, complete)
            self._offset += complete
            return self._count

    def message_ids(self) -> Counter[str]:
        return Counter(self.record.read_text().split())


def serve(port: int, record: Path) -> None:
    """The sink process: accept every message; append its Message-ID to ``record``."""
    from aiosmtpd.smtp import SMTP

    class Handler:
        def __init__(self, out: TextIO) -> None:
            self.out = out

        async def handle_EHLO(
            self, server: object, session: Any, envelope: object, host: str, rs: list[str]
        ) -> list[str]:
            session.host_name = host  # a handle_EHLO hook must record it (else: 503 to MAIL)
            # aiosmtpd reads pipelined commands in order but does not announce it.
            return [*rs[:-1], "250-PIPELINING", rs[-1]]

        async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
            # Line-buffered: the ID is in the file before the 250, so a kill loses none.
            self.out.write(f"{message_id_of(bytes(envelope.original_content)) or '-'}\n")
            return "250 OK"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with record.open("a", buffering=1) as out:
            handler = Handler(out)
            server = await loop.create_server(lambda: SMTP(handler, loop=loop), HOST, port)
            async with server:
                await server.serve_forever()

    run_loop(main())


class Watch:
    """The run's deadline, and the worker processes that must stay up until then."""

    def __init__(self, workers: Nodes, timeout: float) -> None:
        self.workers = workers
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout

    def until(self, condition: Callable[[], bool], what: str) -> float:
        """Wait for ``condition``; return the monotonic time it was seen true.

        Raises SystemExit if a worker exits meanwhile or the deadline passes.
        """

        def check() -> bool:
            for proc in self.workers.procs:
                if proc.poll() is not None:
                    raise SystemExit(
                        f"a herald worker exited ({proc.returncode}) while waiting for "
                        f"{what}; its log ends:\n{self.log_tail()}"
                    )
            return condition()

        try:
            wait_until(check, max(self.deadline - time.monotonic(), 0.0), what)
        except AssertionError:
            raise SystemExit(
                f"gave up waiting for {what}: the run's --timeout of {self.timeout:g}s "
                f"passed; the workers' logs end:\n{self.log_tail()}"
            ) from None
        return time.monotonic()

    def log_tail(self, lines: int = 20) -> str:
        logs = sorted(self.workers.data_dir.glob("*.log"))
        return "\n".join("\n".join(p.read_text().splitlines()[-lines:]) for p in logs)


def herald(workers: Nodes, *argv: str) -> str:
    """Run ``herald ARGV`` on the bench database as a user would; return its stdout."""
    env = {
        **os.environ,
        "HERALD_DATABASE_URL": workers.database_url,
        "HERALD_SECRET_KEY": SECRET,  # the key tests.processes.Nodes gives its workers
        "HERALD_DATA_DIR": str(workers.data_dir),
    }
    env.pop("HERALD_RELAYS", None)
    done = subprocess.run(
        [sys.executable, "-m", "herald", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"herald {' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def start_workers(
    workers: Nodes, sinks: dict[str, RecordingSink], args: argparse.Namespace
) -> None:
    """Store one relay per sink through the CLI, then start the worker processes."""
    workers.data_dir.mkdir(parents=True, exist_ok=True)
    for name, sink in sinks.items():
        # Connections enough for every worker's senders: the weights, not a
        # connection cap, decide the split.
        conns = str(args.workers * args.concurrency)
        herald(
            workers,
            "relays",
            "add",
            name,
            sink.url,
            "--weight",
            str(WEIGHTS[name]),
            "--max-connections",
            conns,
        )
    for i in range(args.workers):
        # An empty HERALD_RELAYS: the node sends through the stored relays.
        workers.start(f"bench-{i}", "", concurrency=str(args.concurrency), batch_size="1000")


def timeline(sink: RecordingSink) -> Timeline:
    """failover.Timeline of one sink (it only ever calls the sink's ``count``)."""
    return Timeline(cast("list[Sink]", [sink]))


def run(args: argparse.Namespace) -> Figures:
    """One run; see the module docstring."""
    with ExitStack() as stack:
        engine = stack.enter_context(database(args.backend))
        campaign_id = seed(engine, args.n)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        sinks = {name: stack.enter_context(RecordingSink(tmp / f"{name}.ids")) for name in WEIGHTS}
        workers = Nodes(engine.url.render_as_string(hide_password=False), tmp / "data")
        stack.callback(workers.stop_all)
        watch = Watch(workers, args.timeout)
        start_workers(workers, sinks, args)
        watch.until(
            lambda: sum(n["alive"] for n in nodes.list_nodes(engine)) == args.workers,
            "the workers to register",
        )
        figures = send_and_kill(engine, campaign_id, sinks, watch, args.n)
        shown = json.loads(herald(workers, "campaigns", "show", str(campaign_id), "--json"))
        received = sinks["heavy"].message_ids() + sinks["light"].message_ids()
    failed = shown["counts"]["failed"]
    return {
        **figures,
        "delivered_unique": len(received),
        "duplicates": sum(n - 1 for n in received.values()),
        "failed": failed,
        "lost": args.n - len(received) - failed,
        "finished": float(shown["status"] == "finished"),
    }


def send_and_kill(
    engine: Engine, campaign_id: int, sinks: dict[str, RecordingSink], watch: Watch, n: int
) -> Figures:
    """Start the campaign, kill the heavy sink at KILL_AT, wait for the end; the figures."""
    heavy, light = sinks["heavy"], sinks["light"]
    with timeline(heavy) as heavy_tl, timeline(light) as light_tl:
        campaigns.change_status(engine, campaign_id, "start")
        watch.until(lambda: heavy.count() + light.count() >= n * KILL_AT, "40 % sent")
        before = heavy.count(), light.count()
        killed = time.monotonic()
        heavy.kill()
        watch.until(finished(engine, campaign_id), "the campaign to finish")
        final = heavy.count(), light.count()
        watch.until(
            lambda: heavy_tl.counts[-1] >= final[0] and light_tl.counts[-1] >= final[1],
            "the last samples",
        )
    return split_and_rates(heavy_tl, light_tl, before, killed)


def split_and_rates(
    heavy: Timeline, light: Timeline, before: tuple[int, int], killed: float
) -> Figures:
    """The figures read off the two sinks' timelines: split, rates, failover seconds."""
    first = min(heavy.when(1), light.when(1))
    last = max(heavy.when(heavy.counts[-1]), light.when(light.counts[-1]))
    rate_before = sum(before) / (killed - first)
    after = heavy.counts[-1] + light.counts[-1] - sum(before)
    return {
        "heavy_before": before[0],
        "light_before": before[1],
        "heavy_share_before": before[0] / max(sum(before), 1),
        "rate_before_msg_s": rate_before,
        "failover_s": failover_seconds(light, killed, rate_before),
        "rate_after_msg_s": after / (last - killed) if last > killed else math.nan,
        "longest_gap_after_s": light.longest_gap(killed, last),
    }


def failover_seconds(light: Timeline, killed: float, rate_before: float) -> float:
    """Seconds from the kill to the first WINDOW in which light took SHARE of rate_before.

    Windows start at each sample from the kill on; one that would end after
    the last sample is not judged. NaN when no window qualifies.
    """
    times = light.times
    end = times[-1]
    for start in times[bisect.bisect_left(times, killed) :]:
        if start + WINDOW > end:
            break
        if light.rate(start, start + WINDOW) >= SHARE * rate_before:
            return start - killed
    return math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000, help="subscribers per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--workers", type=int, default=1, help="herald worker processes")
    parser.add_argument("--concurrency", type=int, default=8, help="connections per worker")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up on a run after (s)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--record", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.record)
        return
    print(
        f"sinks: aiosmtpd, one process each, recording Message-IDs; {args.n} messages; "
        f"{args.workers} worker(s) x {args.concurrency} connections; {args.backend}; "
        f"cores: {os.cpu_count()}"
    )
    print(
        f"heavy (weight 3) killed at {KILL_AT:.0%}; failover_s = kill -> start of the first "
        f"{WINDOW}s window in which light alone took >= {SHARE:.0%} of rate_before"
    )
    runs = [run(args) for _ in range(args.runs)]
    report(
        f"relays heavy:light = 3:1, heavy killed at {KILL_AT:.0%}, n={args.n} "
        f"(baseline: heavy share 0.75, failover within seconds, 0 failed, 0 lost)",
        runs,
    )


if __name__ == "__main__":
    main()
