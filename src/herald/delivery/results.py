"""Results on their way to the database: acks, bounced addresses, released claims.

Senders add results as they come; the acker loop writes them in small groups
(a few milliseconds of results share one commit), retrying for as long as the
database is unreachable, so nothing a relay accepted is forgotten.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sqlalchemy import Engine

from herald.delivery.loops import retrying
from herald.services import outbox
from herald.store.claims import Ack

GROUP_SECONDS = 0.005
GROUP_MAX = 500


@dataclass
class ResultCounts:
    refused_acks: int = 0  # acks the guard refused (the row was no longer ours)
    released: int = 0


class Results:
    def __init__(self, engine: Engine, owner: str) -> None:
        self.engine = engine
        self.owner = owner
        self.counts = ResultCounts()
        self._acks: list[Ack] = []
        self._bounced: list[str] = []
        self._releases: list[tuple[int, int]] = []
        # Rows whose ack is not committed yet: their leases must still be
        # renewed, or a slow commit lets another node re-queue and resend them.
        self._unwritten: set[int] = set()
        self._wakeup = asyncio.Event()

    def unwritten(self) -> list[int]:
        """Ids of the rows whose results are not in the database yet."""
        return list(self._unwritten)

    def ack(self, ack: Ack, *, bounced: str | None = None) -> None:
        """Record a send's result; ``bounced`` is the address to suppress with it."""
        self._acks.append(ack)
        self._unwritten.add(ack.delivery_id)
        if bounced is not None:
            self._bounced.append(bounced)
        if len(self._acks) >= GROUP_MAX or len(self._acks) == 1:
            self._wakeup.set()

    def release(self, delivery_id: int, epoch: int) -> None:
        """Give a claimed row back unsent (no attempt counted)."""
        self._releases.append((delivery_id, epoch))
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Write results in groups until ``stop``."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=0.2)
            except TimeoutError:
                continue
            await asyncio.sleep(GROUP_SECONDS)  # let a group form
            self._wakeup.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write everything added so far."""
        acks, self._acks = self._acks, []
        bounced, self._bounced = self._bounced, []
        releases, self._releases = self._releases, []
        if acks or bounced:
            self.counts.refused_acks += await retrying(
                lambda: asyncio.to_thread(
                    outbox.record_results, self.engine, acks, owner=self.owner, bounced=bounced
                )
            )
            self._unwritten.difference_update(a.delivery_id for a in acks)
        if releases:
            self.counts.released += await retrying(
                lambda: asyncio.to_thread(
                    outbox.release_claims, self.engine, releases, owner=self.owner
                )
            )
