"""Whole-pipeline send rate vs. the bare SMTP loop to the same sink.

    .venv/bin/python bench/send.py [-n 20000] [--runs 3] [--backends sqlite,postgresql]
                                   [--concurrency 8] [--profile] [--workers 1,2,4]

For each backend and run: a fresh database, N subscribers, one personalised
~10 KB newsletter campaign, sent by one in-process worker (claim → render →
MIME → SMTP → durable ack) to a fast loopback sink (Postfix's smtp-sink when
installed). And the bare loop: the same N messages, pre-built, sent over the
same number of SmtpConnections to the same sink — the limit for this design.
The bare loop and the backends take turns, run after run, so each ratio
compares neighbouring runs; prints medians, each run, and the median ratio,
and the ceiling of that ratio for one process: the bare loop's CPU per
message over itself plus rendering and MIME.
``--profile`` prints where one SQLite run spends its time. ``--workers 1,2,4``
instead runs that many ``herald worker`` processes on one PostgreSQL
database, so scaling can be read off.
PostgreSQL is the server at HERALD_BENCH_PG_URL (default
postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from sqlalchemy import Engine, insert, select

from herald.delivery.kits import make_kit
from herald.delivery.worker import Worker, WorkerOptions
from herald.domain.clock import utcnow
from herald.domain.relays import RelayConfig
from herald.services import campaigns, lists, nodes, outbox
from herald.services.demo import DEMO_HTML
from herald.store.engine import make_engine, migrate
from herald.store.tables import subscribers, subscriptions
from smtp_sink import HOST, herald_run, running_sink

PG_ADMIN = os.environ.get("HERALD_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
T = TypeVar("T")
TARGET = 2000.0
# A ~10 KB newsletter: the demo template plus a long article.
ARTICLE = "<p>" + "Herald keeps sending when a node, a relay or the primary dies. " * 12 + "</p>\n"
HTML = DEMO_HTML.replace("</body>", ARTICLE * 6 + "</body>")


@contextmanager
def database(backend: str) -> Iterator[Engine]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
            migrate(engine)
            yield engine
            engine.dispose()
        return
    name = f"herald_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(PG_ADMIN.rpartition("/")[0] + "/" + name, pool_size=10)
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def seed(engine: Engine, count: int) -> int:
    now = utcnow()
    list_id = lists.create_list(engine, "Bench")
    with engine.begin() as conn:
        conn.execute(
            insert(subscribers),
            [
                {
                    "email": f"reader{n}@example.com",
                    "name": f"Reader {n}",
                    "attribs": {"city": "Lisbon", "plan": "pro"},
                    "status": "enabled",
                    "created_at": now,
                    "updated_at": now,
                }
                for n in range(count)
            ],
        )
        ids = conn.scalars(select(subscribers.c.id)).all()
        conn.execute(
            insert(subscriptions),
            [
                {
                    "list_id": list_id,
                    "subscriber_id": i,
                    "status": "confirmed",
                    "created_at": now,
                    "updated_at": now,
                }
                for i in ids
            ],
        )
    draft = campaigns.CampaignDraft(
        name="Bench",
        subject="{{ subscriber.name }}, this week at Herald",
        html=HTML,
        text=None,
        from_addr="Herald Bench <bench@example.com>",
        list_names=("Bench",),
    )
    return campaigns.create_campaign(engine, draft)


async def send_campaign(
    engine: Engine, campaign_id: int, port: int, concurrency: int
) -> tuple[float, float]:
    """Send the campaign with one worker; return (msg/s, µs of process CPU per message)."""
    relay = RelayConfig("sink", HOST, port, "none", None, None, timeout=30.0)
    opts = WorkerOptions(
        node_name="bench",
        secret="bench",
        base_url="https://news.example.com",
        concurrency=concurrency,
        batch_size=1000,
        idle_poll_seconds=0.01,
    )
    worker = Worker(engine, [relay], opts)
    stop = asyncio.Event()
    started = time.perf_counter()
    cpu_started = time.process_time()
    campaigns.change_status(engine, campaign_id, "start")
    task = asyncio.create_task(worker.run(stop))
    # Poll the status alone: the full report costs enough to show in the figures.
    while await asyncio.to_thread(campaign_status, engine, campaign_id) != "finished":
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    stop.set()
    await task
    report = campaigns.campaign_report(engine, campaign_id)
    assert report["counts"]["sent"] == report["total"], report
    return report["total"] / elapsed, cpu / report["total"] * 1e6


def campaign_status(engine: Engine, campaign_id: int) -> str:
    return outbox.campaign_statuses(engine, [campaign_id])[campaign_id][0]


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run on the event loop Herald's nodes use (uvloop where installed)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def prebuilt(count: int) -> list[bytes]:
    return list(messages(count))


def messages(count: int) -> Iterator[bytes]:
    """Render and encode ``count`` messages of the bench campaign, one at a time."""
    kit = make_kit(
        {
            "id": 1,
            "name": "Bench",
            "subject": "{{ subscriber.name }}, this week at Herald",
            "html": HTML,
            "text": None,
            "from_addr": "Herald Bench <bench@example.com>",
        },
        secret="bench",
        base_url="https://news.example.com",
    )
    for n in range(count):
        yield kit.build(
            delivery_id=n,
            subscriber_id=n,
            email=f"reader{n}@example.com",
            name=f"Reader {n}",
            attribs={"city": "Lisbon"},
        )[1]


def pipeline_run(backend: str, args: argparse.Namespace, port: int) -> tuple[float, float]:
    """One send of the campaign on a fresh database: (msg/s, µs of process CPU per message)."""
    with database(backend) as engine:
        campaign_id = seed(engine, args.n)
        return run_loop(send_campaign(engine, campaign_id, port, args.concurrency))


def bare_run(args: argparse.Namespace, port: int, messages: list[bytes]) -> tuple[float, float]:
    """Send the pre-built messages once: (msg/s, µs of process CPU per message)."""
    started = time.perf_counter()
    cpu_started = time.process_time()
    run_loop(herald_run(port, messages, args.concurrency))
    cpu = time.process_time() - cpu_started
    return args.n / (time.perf_counter() - started), cpu / args.n * 1e6


def cpu_per_message(batches: int = 5, count: int = 2000) -> float:
    """Return µs of CPU to render and encode one message (no database, no SMTP):
    the median of ``batches`` batches, each with its own compiled campaign."""
    figures = []
    for _ in range(batches):
        started = time.process_time()
        # Not kept: holding them would add the kernel's page faults to the figure.
        for _message in messages(count):
            pass
        figures.append((time.process_time() - started) / count * 1e6)
    return statistics.median(figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sink", default="auto", choices=["auto", "postfix", "aiosmtpd"])
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--workers", default="", help="e.g. 1,2,4: also run that many worker processes"
    )
    args = parser.parse_args()
    size = len(prebuilt(1)[0])
    with running_sink(args.sink) as (sink_name, port):
        print(
            f"sink: {sink_name}; {args.n} messages of {size} bytes; "
            f"{args.concurrency} connections; median of {args.runs} runs; cores: {os.cpu_count()}"
        )
        if args.profile:
            profile(args, port)
            return
        if args.workers:
            scaling(args, port)
            return
        build_cpu = cpu_per_message()
        print(f"{'render + MIME only (no database, no SMTP)':42} {build_cpu:8.0f} µs CPU/msg")
        backends = args.backends.split(",")
        messages = prebuilt(args.n)
        # Round after round, the bare loop then each backend: this machine's
        # speed drifts over minutes, so each ratio compares neighbouring runs.
        bare_runs: list[tuple[float, float]] = []
        runs: dict[str, list[tuple[float, float]]] = {b: [] for b in backends}
        ratios: dict[str, list[float]] = {b: [] for b in backends}
        for _ in range(args.runs):
            bare_runs.append(bare_run(args, port, messages))
            for backend in backends:
                runs[backend].append(pipeline_run(backend, args, port))
                ratios[backend].append(runs[backend][-1][0] / bare_runs[-1][0])
        print(_line("bare SMTP loop (pre-built messages)", bare_runs))
        # The worker's event loop does all of the bare loop's work and renders
        # too, on one core (the GIL): even with a free database and no
        # bookkeeping its rate cannot pass this share of the bare loop's.
        bare_cpu = statistics.median(c for _, c in bare_runs)
        print(
            f"{'ceiling: bare CPU / (bare + render + MIME)':42} "
            f"{bare_cpu / (bare_cpu + build_cpu):8.2f} of bare"
        )
        for backend in backends:
            print(
                f"{_line('pipeline on ' + backend, runs[backend])}  ratio "
                f"{statistics.median(ratios[backend]):.2f} of bare "
                f"({' / '.join(f'{r:.2f}' for r in ratios[backend])}), "
                f"target {TARGET:.0f} msg/s"
            )


def _line(label: str, results: list[tuple[float, float]]) -> str:
    """Median msg/s and CPU per message of ``results``, then each run's msg/s."""
    rate = statistics.median(r for r, _ in results)
    cpu = statistics.median(c for _, c in results)
    each = " / ".join(f"{r:.0f}" for r, _ in results)
    return f"{label:42} {rate:8.0f} msg/s  {cpu:5.0f} µs CPU/msg  ({each})"


def run_processes(args: argparse.Namespace, port: int, count: int) -> float:
    """Messages/s of ``count`` ``herald worker`` processes sharing one PostgreSQL database."""
    with database("postgresql") as engine, tempfile.TemporaryDirectory() as tmp:
        campaign_id = seed(engine, args.n)
        env = {
            **os.environ,
            "HERALD_DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "HERALD_RELAYS": f"smtp://{HOST}:{port}",
            "HERALD_SECRET_KEY": "bench",
            "HERALD_DATA_DIR": tmp,
            "HERALD_CONCURRENCY": str(args.concurrency),
            "HERALD_BATCH_SIZE": "1000",
        }
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "herald", "worker"],
                env={**env, "HERALD_NODE_NAME": f"bench-{i}"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for i in range(count)
        ]
        try:
            _until(lambda: sum(n["alive"] for n in nodes.list_nodes(engine)) == count, 60)
            started = time.perf_counter()
            campaigns.change_status(engine, campaign_id, "start")
            _until(lambda: campaign_status(engine, campaign_id) == "finished", 600)
            elapsed = time.perf_counter() - started
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)
        return args.n / elapsed


def _until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up after {timeout}s")
        time.sleep(0.1)


def scaling(args: argparse.Namespace, port: int) -> None:
    base = None
    for count in [int(c) for c in args.workers.split(",")]:
        rate = statistics.median(run_processes(args, port, count) for _ in range(args.runs))
        base = base or rate
        print(f"{count} worker process(es) on postgresql {rate:8.0f} msg/s  ×{rate / base:.2f}")


def profile(args: argparse.Namespace, port: int) -> None:
    with database("sqlite") as engine:
        campaign_id = seed(engine, args.n)
        prof = cProfile.Profile()
        prof.enable()
        rate, _ = run_loop(send_campaign(engine, campaign_id, port, args.concurrency))
        prof.disable()
    print(f"pipeline on sqlite under the profiler: {rate:.0f} msg/s")
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
