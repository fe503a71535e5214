"""Running a node: HTTP server and/or sending worker, until SIGTERM/SIGINT drains it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from prometheus_client import Counter

from herald.cluster import Membership, Singletons
from herald.delivery.capture import CaptureRelay
from herald.delivery.metrics import SendMetrics
from herald.delivery.pool import PoolRelay
from herald.delivery.worker import Worker, WorkerOptions
from herald.domain.breaker import BreakerPolicy
from herald.domain.relays import RelayConfig
from herald.domain.throttle import parse_domain_limits
from herald.errors import ConfigError
from herald.ops.registry import cluster_duties
from herald.runtime import Runtime
from herald.services import relays
from herald.services.tracking import Spool, drain_spool
from herald.web.app import create_app
from herald.web.nodestats import node_stats

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """Uvicorn without its own signal handling: the node owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class NodeState:
    """What the HTTP side reads about its node (``/readyz``, ``/metrics``)."""

    draining: bool = False
    capture: tuple[str, int] | None = None
    worker: Worker | None = None
    relays: list[RelayConfig] = field(default_factory=list)
    send_metrics: SendMetrics = field(default_factory=SendMetrics)
    spool: Spool | None = None  # tracking events on their way to the database
    http_requests: Counter | None = None  # herald_http_requests, set by web.metrics


def worker_options(runtime: Runtime) -> WorkerOptions:
    s = runtime.settings
    return WorkerOptions(
        node_name=runtime.node_name,
        secret=runtime.secret,
        base_url=s.base_url,
        lease_ttl=s.lease_ttl,
        batch_size=s.batch_size,
        concurrency=s.concurrency,
        max_attempts=s.max_attempts,
        retry_base_seconds=s.retry_base_seconds,
        breaker=BreakerPolicy(
            threshold=s.relay_failure_threshold,
            cooldown=s.relay_cooldown,
            failed_cooldown=s.relay_failed_cooldown,
            max_cooldown=max(300.0, s.relay_failed_cooldown),
        ),
        domain_limits=parse_domain_limits(s.domain_limits),
    )


async def run_node(
    runtime: Runtime,
    *,
    http: bool,
    worker: bool,
    on_ready: Callable[[NodeState], Coroutine[Any, Any, None]] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until ``stop`` is set or a SIGTERM/SIGINT arrives, then drain and return.

    With no relay configured, a worker node starts the embedded capture relay.
    """
    stop = stop or asyncio.Event()
    state = NodeState(relays=runtime.relays)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, _drain, state, stop)
    membership = Membership(
        runtime.engine,
        runtime.node_name,
        roles=",".join(r for r, on in (("api", http), ("worker", worker)) if on),
        interval=runtime.settings.heartbeat_interval,
        on_drain=lambda: _drain(state, stop),
        is_draining=lambda: state.draining,
        stats=lambda: node_stats(state),
    )
    async with contextlib.AsyncExitStack() as stack:
        tasks = [asyncio.create_task(membership.run(stop))]
        stack.push_async_callback(membership.leave)
        singletons = Singletons(
            runtime.engine,
            runtime.node_name,
            cluster_duties(runtime),
            ttl=runtime.settings.duty_lease_ttl,
            is_draining=lambda: state.draining,
        )
        tasks.append(asyncio.create_task(singletons.run(stop)))
        if worker:
            state.worker = await _start_worker(runtime, state, stack)
            tasks.append(asyncio.create_task(state.worker.run(stop)))
        server = _http_server(runtime, state) if http else None
        if server is not None:
            tasks.append(asyncio.create_task(server.serve()))
            assert state.spool is not None  # create_app made it
            tasks.append(asyncio.create_task(drain_spool(runtime.engine, state.spool, stop)))
        hook = None
        if on_ready is not None:
            if server is not None:
                await _wait_started(server)
            hook = asyncio.create_task(on_ready(state))
        await _supervise(tasks, stop, server, hook)


async def _start_worker(
    runtime: Runtime, state: NodeState, stack: contextlib.AsyncExitStack
) -> Worker:
    """Build the worker and choose its relays.

    ``HERALD_RELAYS``, when set, is what this node sends through (relays it
    names that are not stored yet are added to the database, and a stored
    relay of the same name and address lends its weight and limits, or
    leaves the pool when disabled). Otherwise the node uses every stored,
    enabled relay. Either way the store is re-read every few seconds. With no
    relay at all, it starts the embedded capture relay.
    """
    env = list(state.relays)
    if env:
        await asyncio.to_thread(relays.seed_from_env, runtime.engine, runtime.secret, env)

    def stored() -> list[PoolRelay]:
        if env:
            return relays.pool_for_env(runtime.engine, env)
        return relays.load_stored_relays(runtime.engine, runtime.secret)

    pool = await asyncio.to_thread(stored)
    if pool:
        state.relays = [r.config for r in pool]
        opts = worker_options(runtime)
        return Worker(runtime.engine, pool, opts, relay_source=stored, metrics=state.send_metrics)
    if env:  # named by HERALD_RELAYS but disabled in the store
        raise ConfigError("every relay named in HERALD_RELAYS is disabled in the store")
    capture = CaptureRelay(runtime.settings.capture_dir, port=runtime.settings.capture_port)
    host, port = await capture.start()
    stack.push_async_callback(capture.stop)
    state.capture = (host, port)
    state.relays = [
        RelayConfig(name="capture", host=host, port=port, tls="none", username=None, password=None)
    ]
    return Worker(runtime.engine, state.relays, worker_options(runtime), metrics=state.send_metrics)


def _http_server(runtime: Runtime, state: NodeState) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(runtime, state),
        host=runtime.settings.http_host,
        port=runtime.settings.http_port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    return _Server(config)


def _drain(state: NodeState, stop: asyncio.Event) -> None:
    log.warning("draining: no new claims; releasing held work")
    state.draining = True
    if state.worker is not None:
        state.worker.drain()
    stop.set()


async def _wait_started(server: uvicorn.Server) -> None:
    for _ in range(500):
        if server.started:
            return
        await asyncio.sleep(0.01)


async def _supervise(
    tasks: list[asyncio.Task[None]],
    stop: asyncio.Event,
    server: uvicorn.Server | None,
    extra: asyncio.Task[None] | None = None,
) -> None:
    """Wait for stop or for any essential task to end; a crashed task stops the node.

    ``extra`` (the on-ready hook) may finish without stopping the node; if it
    raises, the node stops and the error propagates.
    """
    stopper = asyncio.create_task(stop.wait())
    watched = {*tasks, stopper, *([extra] if extra else [])}
    while True:
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if extra in done and extra is not None and extra.exception() is None:
            watched.discard(extra)
            extra = None
            continue
        break
    stop.set()
    if server is not None:
        server.should_exit = True
    results = await asyncio.gather(*tasks, *([extra] if extra else []), return_exceptions=True)
    stopper.cancel()
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result
