"""This node's part in the cluster: membership (register, heartbeat, drain) and singletons."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from herald.domain.clock import utcnow
from herald.services import duties, nodes

log = logging.getLogger(__name__)


class Membership:
    """Keeps this node's row fresh; calls ``on_drain`` once when a drain is requested."""

    def __init__(
        self,
        engine: Engine,
        name: str,
        *,
        roles: str,
        interval: float = 1.0,
        on_drain: Callable[[], None],
        is_draining: Callable[[], bool],
        stats: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.engine = engine
        self.name = name
        self.roles = roles
        self.interval = interval
        self.on_drain = on_drain
        self.is_draining = is_draining
        # What this node reports with each heartbeat (HTTP counts, spool backlog).
        self.stats = stats

    async def run(self, stop: asyncio.Event) -> None:
        """Heartbeat until ``stop``; then mark the node gone.

        A database outage does not stop the node: heartbeats resume when the
        database answers again (the node meanwhile reports not-ready).
        """
        await self._safely(nodes.register_node, self.engine, self.name, roles=self.roles)
        while not stop.is_set():
            requested = await self._safely(
                nodes.heartbeat,
                self.engine,
                self.name,
                draining=self.is_draining(),
                roles=self.roles,
                stats=None if self.stats is None else self.stats(),
            )
            if requested and not self.is_draining():
                log.warning("drain requested for node %s", self.name)
                self.on_drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)

    async def leave(self) -> None:
        await self._safely(nodes.leave, self.engine, self.name)

    async def _safely(self, fn: Callable[..., object], *args: object, **kwargs: object) -> object:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except SQLAlchemyError as exc:
            log.warning("heartbeat failed (%s); will retry", type(exc.__cause__ or exc).__name__)
            return None


@dataclass(frozen=True)
class Duty:
    """A job that must run once per cluster: on whichever node holds its lease.

    ``run`` returns a one-line summary (stored in ``job_runs`` when ``record``).
    When it is due: ``next_due(last_start)`` if given (a cron schedule), else
    ``interval`` seconds after the last start. A duty that raises is logged
    and recorded as failed; it does not stop the node.
    """

    name: str
    run: Callable[[], Awaitable[str]]
    interval: float = 60.0
    next_due: Callable[[datetime | None], datetime] | None = None
    record: bool = True
    # Keep running on the node that last held the lease while the database is
    # unreachable (alert evaluation must be able to report that very outage).
    # Two nodes may then both run it; they cannot both have held it last
    # unless the lease expired in between.
    through_outage: bool = False

    def is_due(self, last_start: datetime | None, now: datetime) -> bool:
        if self.next_due is not None:
            return now >= self.next_due(last_start)
        return last_start is None or now >= last_start + timedelta(seconds=self.interval)


class Singletons:
    """Runs each duty under its own lease, so different nodes may hold different duties.

    The lease is renewed every ``ttl / 3`` seconds, also while the duty runs.
    A node that stops (or drains) gives its leases up; one that dies loses
    them after ``ttl`` and another node takes over. A new holder reads the
    last recorded start, so a schedule survives the change of holder. While
    the database is unreachable nobody holds a lease, except that the last
    holder of a ``through_outage`` duty goes on running it.
    """

    def __init__(
        self,
        engine: Engine,
        node: str,
        jobs: list[Duty],
        *,
        ttl: float = 15.0,
        is_draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self.engine = engine
        self.node = node
        self.jobs = jobs
        self.ttl = ttl
        self.is_draining = is_draining
        self.held: set[str] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: the node supervises this task, so it must not end early."""
        await asyncio.gather(stop.wait(), *(self._keep(duty, stop) for duty in self.jobs))

    async def _keep(self, duty: Duty, stop: asyncio.Event) -> None:
        tick = min(1.0, self.ttl / 3)
        last_start: datetime | None = None
        known = False  # whether last_start was read since we took the lease
        try:
            while not stop.is_set():
                if await self._hold(duty.name, through_outage=duty.through_outage):
                    if not known:
                        last_start = await self._last_start(duty)
                        known = True
                    now = utcnow()
                    if duty.is_due(last_start, now):
                        last_start = now
                        await self._run(duty, stop)
                else:
                    known = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=tick)
        finally:
            if duty.name in self.held:
                with contextlib.suppress(SQLAlchemyError):
                    await asyncio.to_thread(
                        duties.drop_lease, self.engine, duty.name, holder=self.node
                    )
                self.held.discard(duty.name)

    async def _hold(self, name: str, *, through_outage: bool = False) -> bool:
        if self.is_draining():
            held = False
        else:
            try:
                held = await asyncio.to_thread(
                    duties.take_lease, self.engine, name, holder=self.node, ttl=self.ttl
                )
            except SQLAlchemyError:
                # The database is away: nobody can prove they hold the lease.
                held = through_outage and name in self.held
        if held and name not in self.held:
            log.info("node %s now runs %s for the cluster", self.node, name)
        (self.held.add if held else self.held.discard)(name)
        return held

    async def _last_start(self, duty: Duty) -> datetime | None:
        if not duty.record:
            return None
        try:
            run = await asyncio.to_thread(duties.last_run, self.engine, duty.name)
        except SQLAlchemyError:
            return None
        return run.started_at if run else None

    async def _run(self, duty: Duty, stop: asyncio.Event) -> None:
        run_id = None
        if duty.record:
            with contextlib.suppress(SQLAlchemyError):
                run_id = await asyncio.to_thread(
                    duties.start_run, self.engine, duty.name, node=self.node
                )
        renewing = asyncio.create_task(self._renew_while_running(duty.name, stop))
        ok, detail = True, ""
        try:
            detail = await duty.run()
        except Exception as exc:  # a failing duty is reported, not fatal to the node
            ok, detail = False, f"{type(exc).__name__}: {exc}"
            log.exception("cluster duty %s failed", duty.name)
        finally:
            renewing.cancel()
        if run_id is not None:
            with contextlib.suppress(SQLAlchemyError):
                await asyncio.to_thread(
                    duties.finish_run, self.engine, run_id, ok=ok, detail=detail
                )

    async def _renew_while_running(self, name: str, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.ttl / 3)
            await self._hold(name, through_outage=True)
