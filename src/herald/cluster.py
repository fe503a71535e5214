"""This node's membership in the cluster: register, heartbeat, drain on request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from herald.services import nodes

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
    ) -> None:
        self.engine = engine
        self.name = name
        self.roles = roles
        self.interval = interval
        self.on_drain = on_drain
        self.is_draining = is_draining

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
