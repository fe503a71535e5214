"""The sending worker: claim → render → send → ack, with leases.

Tasks of one worker, all in one asyncio loop:

1. the claimer keeps a local queue fed with claimed deliveries (one short
   transaction per batch, run in a thread);
2. ``concurrency`` senders each own one persistent SMTP connection; before
   every send a sender checks the row's lease on this process's monotonic
   clock, so a node that was frozen past its lease sends nothing it may no
   longer own;
3. the acker writes results back in small groups (every few ms);
4. the keeper renews held leases, re-queues expired ones, materialises
   recipients of started campaigns, finishes completed campaigns and
   refreshes campaign states (pause/cancel take effect within a second).

If any task dies, the worker stops: it never runs half-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from herald.delivery.kits import SendKit, make_kit
from herald.delivery.smtp import SmtpConnection
from herald.domain.clock import utcnow
from herald.domain.relays import RelayConfig
from herald.domain.replies import SendOutcome
from herald.errors import DatabaseUnavailable, HeraldError, RenderError
from herald.services import outbox
from herald.store.claims import Ack, Claimed

log = logging.getLogger(__name__)

ACK_GROUP_SECONDS = 0.005
ACK_GROUP_MAX = 500
RELAY_COOLDOWN_SECONDS = 30.0
DB_RETRY_SECONDS = 1.0
DB_ERRORS = (DatabaseUnavailable, SQLAlchemyError)


@dataclass
class WorkerOptions:
    """Tuning of one worker process (from Settings)."""

    node_name: str
    secret: str
    base_url: str
    lease_ttl: float = 10.0
    batch_size: int = 500
    concurrency: int = 8
    max_attempts: int = 6
    retry_base_seconds: float = 30.0
    idle_poll_seconds: float = 0.25
    keeper_interval: float = 0.5


@dataclass
class Job:
    row: Claimed
    deadline: float  # monotonic seconds; past it the lease may belong to someone else


@dataclass
class WorkerStats:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    bounced: int = 0
    ambiguous: int = 0
    refused_acks: int = 0
    lease_skips: int = 0
    released: int = 0
    by_relay: dict[str, int] = field(default_factory=dict)


class Worker:
    """One sending node's engine. Build it, then ``await run(stop)``."""

    def __init__(self, engine: Engine, relays: list[RelayConfig], opts: WorkerOptions) -> None:
        if not relays:
            raise HeraldError("a worker needs at least one relay")
        self.engine = engine
        self.relays = relays
        self.opts = opts
        self.stats = WorkerStats()
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._held: dict[int, Job] = {}
        self._acks: list[Ack] = []
        self._bounced: list[str] = []
        self._releases: list[tuple[int, int]] = []
        self._ack_wakeup = asyncio.Event()
        self._kits: dict[int, SendKit | HeraldError] = {}
        self._campaign_status: dict[int, str] = {}
        self._relay_down_until: dict[str, float] = {}
        self._draining = False

    @property
    def lease_margin(self) -> float:
        """Stop sending a row this long before its lease runs out (clock skew, slow DATA)."""
        return max(0.5, self.opts.lease_ttl * 0.25)

    async def run(self, stop: asyncio.Event) -> None:
        """Send until ``stop`` is set, then release what is held and return."""
        senders = [self._sender(i, stop) for i in range(self.opts.concurrency)]
        tasks = [
            asyncio.create_task(coro)
            for coro in (self._claimer(stop), self._acker(stop), self._keeper(stop), *senders)
        ]
        stopper = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            stopper.cancel()
            await self._shutdown()

    async def _shutdown(self) -> None:
        """Release unsent claims and flush every pending ack (drain)."""
        while not self._queue.empty():
            job = self._queue.get_nowait()
            self._releases.append((job.row.delivery_id, job.row.epoch))
            self._held.pop(job.row.delivery_id, None)
        await self._flush()

    async def _claimer(self, stop: asyncio.Event) -> None:
        low_water = max(self.opts.concurrency * 2, self.opts.batch_size // 2)
        while not stop.is_set():
            if self._draining or self._queue.qsize() >= low_water:
                await _wait(stop, 0.01)
                continue
            started = time.monotonic()
            try:
                rows = await asyncio.to_thread(
                    outbox.claim_batch,
                    self.engine,
                    owner=self.opts.node_name,
                    limit=self.opts.batch_size,
                    lease_ttl=self.opts.lease_ttl,
                )
            except DB_ERRORS as exc:
                log.warning("claim failed (%s); retrying", _describe(exc))
                await _wait(stop, DB_RETRY_SECONDS)
                continue
            deadline = started + self.opts.lease_ttl - self.lease_margin
            for row in rows:
                job = Job(row, deadline)
                self._held[row.delivery_id] = job
                self._queue.put_nowait(job)
            if not rows:
                await _wait(stop, self.opts.idle_poll_seconds)

    async def _sender(self, index: int, stop: asyncio.Event) -> None:
        conns: dict[str, SmtpConnection] = {}
        try:
            while not stop.is_set():
                try:
                    job = await asyncio.wait_for(self._queue.get(), timeout=0.2)
                except TimeoutError:
                    continue
                await self._handle(job, index, conns, stop)
        finally:
            for conn in conns.values():
                await conn.close()

    async def _handle(
        self, job: Job, index: int, conns: dict[str, SmtpConnection], stop: asyncio.Event
    ) -> None:
        row = job.row
        if not await self._still_sendable(job):
            return
        kit = await self._kit(row.campaign_id)
        if kit is None:
            self._release(job)
            return
        if isinstance(kit, HeraldError):
            self._ack(job, "failed", None, f"campaign cannot be rendered: {kit.message}")
            return
        try:
            mid, raw = kit.build(
                delivery_id=row.delivery_id,
                subscriber_id=row.subscriber_id,
                email=row.email,
                name=row.name,
                attribs=row.attribs,
            )
        except RenderError as exc:
            self._ack(job, "failed", None, f"render error: {exc.message}")
            return
        relay = await self._pick_relay(index, stop)
        if relay is None or time.monotonic() > job.deadline:
            self._release(job)
            return
        conn = conns.get(relay.name)
        if conn is None:
            conn = conns[relay.name] = SmtpConnection(relay)
        outcome = await conn.send(
            kit.envelope_from, row.email, raw, deadline=job.deadline, prepared=True
        )
        self._record(job, relay.name, mid, outcome)

    async def _still_sendable(self, job: Job) -> bool:
        row = job.row
        if time.monotonic() > job.deadline:
            # Our lease may have run out (frozen process, slow relay): do not race
            # the node that may have re-claimed it. The keeper re-queues it.
            self.stats.lease_skips += 1
            self._held.pop(row.delivery_id, None)
            return False
        if self._campaign_status.get(row.campaign_id, "running") != "running" or self._draining:
            self._release(job)
            return False
        if not row.eligible:
            self._ack(job, "failed", None, "not sent: unsubscribed or suppressed meanwhile")
            return False
        return True

    async def _pick_relay(self, index: int, stop: asyncio.Event) -> RelayConfig | None:
        """A relay that is not cooling down, waiting while every relay is down."""
        while not stop.is_set() and not self._draining:
            now = time.monotonic()
            usable = [r for r in self.relays if self._relay_down_until.get(r.name, 0) <= now]
            if usable:
                return usable[index % len(usable)]
            await _wait(stop, 0.5)
        return None

    def _record(self, job: Job, relay: str, mid: str, outcome: SendOutcome) -> None:
        row = job.row
        if outcome.ambiguous:
            self.stats.ambiguous += 1
        if outcome.kind == "sent":
            self.stats.sent += 1
            self.stats.by_relay[relay] = self.stats.by_relay.get(relay, 0) + 1
            self._ack(job, "sent", relay, outcome.reply, mid)
        elif outcome.kind == "bounce":
            self.stats.bounced += 1
            self._bounced.append(row.email)
            self._ack(job, "bounced", relay, outcome.reply, mid)
        elif outcome.kind == "relay_broken":
            log.warning("relay %s is refusing service: %s", relay, outcome.reply)
            self._relay_down_until[relay] = time.monotonic() + RELAY_COOLDOWN_SECONDS
            due = utcnow() + timedelta(seconds=RELAY_COOLDOWN_SECONDS)
            self._ack(job, "pending", relay, outcome.reply, mid, due=due, count=False)
        elif row.attempts + 1 >= self.opts.max_attempts:
            self._ack(job, "failed", relay, outcome.reply, mid)
        else:
            self.stats.retried += 1
            delay = self.opts.retry_base_seconds * (2**row.attempts) * random.uniform(0.8, 1.2)
            due = utcnow() + timedelta(seconds=min(delay, 3600.0))
            self._ack(job, "pending", relay, outcome.reply, mid, due=due)

    def _ack(
        self,
        job: Job,
        status: str,
        relay: str | None,
        reply: str,
        mid: str | None = None,
        *,
        due: Any = None,
        count: bool = True,
    ) -> None:
        row = job.row
        if status == "failed":
            self.stats.failed += 1
        self._held.pop(row.delivery_id, None)
        self._acks.append(
            Ack(
                row.delivery_id,
                row.epoch,
                status,
                relay,
                reply,
                mid,
                due_at=due,
                count_attempt=count,
            )
        )
        if len(self._acks) >= ACK_GROUP_MAX or len(self._acks) == 1:
            self._ack_wakeup.set()

    def _release(self, job: Job) -> None:
        self._held.pop(job.row.delivery_id, None)
        self._releases.append((job.row.delivery_id, job.row.epoch))
        self._ack_wakeup.set()

    async def _acker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(self._ack_wakeup.wait(), timeout=0.2)
            except TimeoutError:
                continue
            # Let a group form: a few ms of results share one commit.
            await asyncio.sleep(ACK_GROUP_SECONDS)
            self._ack_wakeup.clear()
            await self._flush()

    async def _flush(self) -> None:
        acks, self._acks = self._acks, []
        bounced, self._bounced = self._bounced, []
        releases, self._releases = self._releases, []
        if acks or bounced:
            refused = await _retrying(
                lambda: asyncio.to_thread(
                    outbox.record_results,
                    self.engine,
                    acks,
                    owner=self.opts.node_name,
                    bounced=bounced,
                )
            )
            self.stats.refused_acks += refused
        if releases:
            self.stats.released += await _retrying(
                lambda: asyncio.to_thread(
                    outbox.release_claims, self.engine, releases, owner=self.opts.node_name
                )
            )

    async def _keeper(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._renew()
                await asyncio.to_thread(
                    outbox.housekeeping, self.engine, max_attempts=self.opts.max_attempts
                )
                if self._kits:
                    self._campaign_status = await asyncio.to_thread(
                        outbox.campaign_statuses, self.engine, list(self._kits)
                    )
            except DB_ERRORS as exc:
                # Leases are not renewed meanwhile, so held rows run out on
                # this node's clock and are not sent: nothing races a takeover.
                log.warning("housekeeping failed (%s); retrying", _describe(exc))
            await _wait(stop, self.opts.keeper_interval)

    async def _renew(self) -> None:
        """Extend leases of held rows; rows not renewed get a deadline in the past."""
        held = dict(self._held)
        if not held:
            return
        started = time.monotonic()
        renewed = await asyncio.to_thread(
            outbox.renew_leases,
            self.engine,
            list(held),
            owner=self.opts.node_name,
            lease_ttl=self.opts.lease_ttl,
        )
        deadline = started + self.opts.lease_ttl - self.lease_margin
        for delivery_id in renewed:
            job = held.get(delivery_id)
            if job is not None:
                job.deadline = deadline

    async def _kit(self, campaign_id: int) -> SendKit | HeraldError | None:
        """The campaign's send kit, its permanent error, or None if the database failed."""
        kit = self._kits.get(campaign_id)
        if kit is None:
            try:
                campaign = await asyncio.to_thread(outbox.load_campaign, self.engine, campaign_id)
            except DB_ERRORS as exc:
                log.warning("cannot load campaign %s (%s)", campaign_id, _describe(exc))
                return None
            self._campaign_status[campaign_id] = str(campaign["status"])
            try:
                kit = make_kit(campaign, secret=self.opts.secret, base_url=self.opts.base_url)
            except HeraldError as exc:
                kit = exc
            self._kits[campaign_id] = kit
        return kit

    def drain(self) -> None:
        """Stop sending new messages; held rows are released at shutdown."""
        self._draining = True


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def _retrying(call: Callable[[], Awaitable[int]]) -> int:
    """Run a database write, retrying for as long as the database is unreachable.

    Acks must not be dropped: a worker that cannot record results keeps trying
    (with backoff) rather than losing what the relays already accepted. A drain
    therefore waits for the database rather than exiting with unrecorded acks.
    """
    delay = 0.1
    while True:
        try:
            return await call()
        except DB_ERRORS as exc:
            log.warning("database write failed (%s); retrying in %.1fs", _describe(exc), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _describe(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
