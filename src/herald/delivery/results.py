"""Results on their way to the database: acks, bounced addresses, released claims.

Senders add results as they come; the acker loop writes them in small groups
(a few milliseconds of results share one commit), retrying for as long as the
database is unreachable, so nothing a relay accepted is forgotten. A group the
database refuses for its data (a value it cannot store) is written again one
result at a time, so one bad result cannot hold back the rest.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import DataError

from herald.delivery.loops import retrying
from herald.services import outbox
from herald.store.claims import Ack

log = logging.getLogger(__name__)

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
            try:
                self.counts.refused_acks += await self._write(acks, bounced)
            except DataError as exc:
                log.error("the database refused a group of results (%s)", _kind(exc))
                await self._write_one_by_one(acks, bounced)
            self._unwritten.difference_update(a.delivery_id for a in acks)
        if releases:
            self.counts.released += await retrying(
                lambda: asyncio.to_thread(
                    outbox.release_claims, self.engine, releases, owner=self.owner
                )
            )

    async def _write(self, acks: list[Ack], bounced: list[str]) -> int:
        """Write a group, retrying while the database is unreachable; return refused acks."""
        return await retrying(
            lambda: asyncio.to_thread(
                outbox.record_results, self.engine, acks, owner=self.owner, bounced=bounced
            )
        )

    async def _write_one_by_one(self, acks: list[Ack], bounced: list[str]) -> None:
        """Write what the database takes. A result it refuses is kept without the
        relay's words (reply, relay name, Message-ID); one still refused is only
        logged: its lease lapses and the row is sent again."""
        for ack in acks:
            try:
                self.counts.refused_acks += await self._write([ack], [])
                continue
            except DataError as exc:
                plain = dataclasses.replace(
                    ack,
                    relay=None,
                    message_id=None,
                    reply=f"reply, relay and Message-ID not kept: the database "
                    f"refused them ({_kind(exc)})",
                )
            try:
                self.counts.refused_acks += await self._write([plain], [])
            except DataError as exc:
                log.error("cannot record delivery %s (%s)", ack.delivery_id, _kind(exc))
        for address in bounced:
            try:
                await self._write([], [address])
            except DataError as exc:
                log.error("cannot suppress a bounced address (%s)", _kind(exc))


def _kind(exc: DataError) -> str:
    """The database's name for a data error (never the data itself)."""
    return type(exc.orig).__name__
