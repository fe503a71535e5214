"""Background care of a node's relay pool.

- `RelayUpkeep.health` probes (connect, EHLO, NOOP) relays whose breaker is
  open or failed once their cool-down is over, so a relay that comes back is
  used again by itself, and healthy relays that have been idle for a while,
  so a dead one is noticed before a message needs it.
- `RelayUpkeep.tick` (called by the worker's keeper) stores what the pool saw
  (counts, latency, state changes) and, every few seconds, reloads the stored
  relays and the number of live sending nodes, which sets this node's share
  of every cluster-wide relay and domain limit, and fences nodes silent past
  their leases (ends their database sessions, so a node frozen mid-statement
  cannot keep its rows locked).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from herald.delivery.pool import PoolRelay, RelayPool
from herald.delivery.smtp import SmtpConnection
from herald.errors import DatabaseUnavailable, HeraldError
from herald.services import nodes
from herald.services import relays as relay_store

log = logging.getLogger(__name__)

HEALTH_POLL_SECONDS = 0.25
RELOAD_SECONDS = 5.0


class RelayUpkeep:
    def __init__(
        self,
        engine: Engine,
        pool: RelayPool,
        *,
        source: Callable[[], list[PoolRelay]] | None = None,
        node_name: str = "",
        stale_after: float = 10.0,
    ) -> None:
        self.engine = engine
        self.node_name = node_name
        self.stale_after = stale_after
        self._fence_failed = False
        self.pool = pool
        self._source = source
        self._reloaded = 0.0
        self._probes: set[asyncio.Task[None]] = set()

    async def health(self, stop: asyncio.Event) -> None:
        """Probe relays as the pool asks, until ``stop``."""
        while not stop.is_set():
            for relay in self.pool.to_probe():
                task = asyncio.create_task(self._probe(relay))
                self._probes.add(task)
                task.add_done_callback(self._probes.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=HEALTH_POLL_SECONDS)

    async def _probe(self, relay: PoolRelay) -> None:
        conn = SmtpConnection(relay.config)
        try:
            outcome = await conn.probe()
        finally:
            await conn.close()
        if not outcome.ok:
            log.info("relay %s probe failed: %s", relay.name, outcome.reply)
        await self.pool.probed(relay, outcome)

    async def tick(self) -> None:
        """Store the pool's reports; reload relays and the node count when due.

        Raises the database's errors (the keeper logs them and goes on).
        """
        reports = self.pool.take_reports()
        for report in reports:
            if report.state_changed:
                log.warning(
                    "relay %s is now %s%s",
                    report.name,
                    report.state,
                    f" ({report.last_error})" if report.state != "healthy" else "",
                )
        await asyncio.to_thread(relay_store.record_reports, self.engine, reports)
        if time.monotonic() - self._reloaded >= RELOAD_SECONDS:
            self._reloaded = time.monotonic()
            await self._reload()

    async def _reload(self) -> None:
        live = await asyncio.to_thread(nodes.count_live, self.engine, role="worker")
        self.pool.share(live)
        await self._fence()
        if self._source is None:
            return
        try:
            relays = await asyncio.to_thread(self._source)
        except HeraldError as exc:  # e.g. a password that no longer unseals
            log.error("cannot load the stored relays (%s); keeping the current ones", exc)
            return
        await close_all(self.pool.update(relays))

    async def _fence(self) -> None:
        """End the database sessions of nodes silent past their leases (see nodes.fence_stale)."""
        if self._fence_failed:
            return
        try:
            fenced = await asyncio.to_thread(
                nodes.fence_stale, self.engine, me=self.node_name, stale_after=self.stale_after
            )
        except SQLAlchemyError as exc:  # e.g. not allowed to end other sessions
            self._fence_failed = True
            log.warning("cannot fence silent nodes (%s); continuing without", exc)
            return
        if fenced:
            log.warning("ended the database sessions of silent nodes: %s", ", ".join(fenced))

    async def close(self) -> None:
        """Stop probes, close idle sessions and store the last reports (best effort)."""
        for task in self._probes:
            task.cancel()
        await asyncio.gather(*self._probes, return_exceptions=True)
        await close_all(self.pool.take_idle())
        try:
            await asyncio.to_thread(
                relay_store.record_reports, self.engine, self.pool.take_reports()
            )
        except (DatabaseUnavailable, SQLAlchemyError) as exc:
            log.warning("could not store the last relay counts (%s)", exc)


async def close_all(conns: list[SmtpConnection]) -> None:
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
