"""The ``probes`` duty: probe the public endpoints and every enabled relay, store the results.

One node of the cluster runs it (under the ``probes`` lease), every
``HERALD_PROBE_INTERVAL`` seconds. Every target is probed at the same time,
each bounded by ``HERALD_PROBE_TIMEOUT``, so one slow target delays nothing
else. About once an hour the duty also compacts the probe history.

- An endpoint is up when a GET answers 2xx or 3xx within the timeout.
- A relay is up when a session opens (connect, EHLO, STARTTLS and AUTH as
  configured) and NOOP answers 250 within the timeout; the session then
  ends with QUIT. It is the relay pool's own health probe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta

import httpx
from sqlalchemy import Engine

from herald.cluster import Duty
from herald.delivery.smtp import SmtpConnection
from herald.domain import slo
from herald.domain.clock import utcnow
from herald.domain.relays import RelayConfig
from herald.errors import HeraldError
from herald.runtime import Runtime
from herald.services import probes
from herald.services import relays as relay_service

log = logging.getLogger(__name__)

DUTY = "probes"
COMPACT_EVERY = 3600.0  # seconds between compactions on the node running the duty


def probe_duty(runtime: Runtime) -> Duty:
    """The duty, configured from ``runtime.settings`` (whose validation has
    already refused a bad ``HERALD_PROBE_URLS`` entry)."""
    settings = runtime.settings
    prober = Prober(
        runtime.engine,
        runtime.secret,
        targets=slo.endpoint_targets(settings.base_url, settings.probe_urls),
        timeout=settings.probe_timeout,
    )
    started, interval = utcnow(), timedelta(seconds=settings.probe_interval)

    def next_due(last_start: datetime | None) -> datetime:
        # The first round waits one interval: this node's own HTTP listener
        # may not answer yet, and a restart must not count as downtime.
        return (last_start or started) + interval

    # Not recorded in job_runs: it runs every few seconds and its results are
    # its record.
    return Duty(DUTY, prober.run, next_due=next_due, record=False)


class Prober:
    """Probes every target once per `run`; compacts the history now and then."""

    def __init__(
        self, engine: Engine, secret: str, *, targets: list[slo.ProbeTarget], timeout: float
    ) -> None:
        self.engine = engine
        self.secret = secret
        self.targets = targets
        self.timeout = timeout
        self._compacted: float | None = None  # monotonic time of the last compaction

    async def run(self) -> str:
        """Probe, store, maybe compact; a one-line summary."""
        relays = await self._relays()
        async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as client:
            results = await asyncio.gather(
                *(self._endpoint(client, target) for target in self.targets),
                *(self._relay(relay) for relay in relays),
            )
        await asyncio.to_thread(probes.record_results, self.engine, results)
        down = sorted(f"{r.kind} {r.target}" for r in results if not r.ok)
        summary = f"{len(results) - len(down)}/{len(results)} probes ok"
        if down:
            log.info("probes failed: %s", ", ".join(down))
            summary += f" (down: {', '.join(down)})"
        if self._compacted is None or time.monotonic() - self._compacted >= COMPACT_EVERY:
            summary += "; " + await asyncio.to_thread(probes.compact_history, self.engine)
            self._compacted = time.monotonic()
        return summary

    async def _relays(self) -> list[RelayConfig]:
        try:
            return await asyncio.to_thread(
                relay_service.load_relay_configs, self.engine, self.secret
            )
        except HeraldError as exc:  # a password that no longer unseals: probe endpoints only
            log.error("probes: cannot load the stored relays (%s)", exc)
            return []

    async def _endpoint(
        self, client: httpx.AsyncClient, target: slo.ProbeTarget
    ) -> probes.ProbeResult:
        at, started = utcnow(), time.perf_counter()
        try:
            answer = await asyncio.wait_for(
                client.get(target.url, timeout=self.timeout), timeout=self.timeout
            )
        except (TimeoutError, httpx.TimeoutException):
            return _failed(slo.ENDPOINT, target.name, at, f"no answer within {self.timeout:g} s")
        except httpx.HTTPError as exc:
            return _failed(slo.ENDPOINT, target.name, at, f"{type(exc).__name__}: {exc}")
        latency = (time.perf_counter() - started) * 1000
        ok = 200 <= answer.status_code < 400
        return probes.ProbeResult(
            slo.ENDPOINT,
            target.name,
            at,
            ok,
            latency_ms=latency,
            error=None if ok else f"HTTP {answer.status_code}",
            http_status=answer.status_code,
        )

    async def _relay(self, relay: RelayConfig) -> probes.ProbeResult:
        at, started = utcnow(), time.perf_counter()
        connection = SmtpConnection(relay)
        try:
            outcome = await asyncio.wait_for(connection.probe(), timeout=self.timeout)
        except TimeoutError:
            return _failed(slo.RELAY, relay.name, at, f"no answer within {self.timeout:g} s")
        finally:
            await connection.close()
        latency = (time.perf_counter() - started) * 1000
        return probes.ProbeResult(
            slo.RELAY,
            relay.name,
            at,
            outcome.ok,
            # A relay that never answered has no response time to count.
            latency_ms=latency if outcome.code is not None else None,
            error=None if outcome.ok else outcome.reply,
        )


def _failed(kind: str, target: str, at: datetime, error: str) -> probes.ProbeResult:
    return probes.ProbeResult(kind, target, at, False, error=error)
