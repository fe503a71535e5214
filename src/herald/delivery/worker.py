"""The sending worker: claim → render → send → ack, with leases.

Tasks of one worker, all in one asyncio loop:

1. the claimer keeps a local queue fed with claimed deliveries (one short
   transaction per batch, run in a thread);
2. ``concurrency`` senders take rows from that queue; each message gets a
   relay and a pooled SMTP session from the relay pool (delivery.pool), and a
   temporary failure is tried at once on another relay. Before every send a
   sender checks the row's lease on this process's monotonic clock, so a node
   that was frozen past its lease sends nothing it may no longer own;
3. the acker writes results back in small groups (every few ms);
4. the keeper renews held leases, re-queues expired ones, materialises
   recipients of started campaigns, finishes completed campaigns, refreshes
   campaign states (pause/cancel take effect within a second), stores what
   the relay pool saw and reloads the stored relays;
5. the health checker probes relays whose breaker is open or failed once
   their cool-down is over, and idle ones now and then;
6. the unparker puts rows whose recipient domain was throttled back in line.

If any task dies, the worker stops: it never runs half-alive.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine

from herald.delivery.kits import SendKit, make_kit
from herald.delivery.loops import DB_ERRORS, describe, wait
from herald.delivery.metrics import SendMetrics
from herald.delivery.pool import PoolRelay, RelayPool
from herald.delivery.results import Results
from herald.delivery.upkeep import RelayUpkeep
from herald.domain.breaker import BreakerPolicy
from herald.domain.clock import utcnow
from herald.domain.relays import RelayConfig
from herald.domain.replies import SendOutcome
from herald.domain.retry import RetryPolicy, decide
from herald.domain.throttle import Limit, Throttle
from herald.errors import HeraldError, RenderError
from herald.services import outbox
from herald.store.claims import Ack, Claimed

log = logging.getLogger(__name__)

DB_RETRY_SECONDS = 1.0
UNPARK_SECONDS = 0.02


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
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    domain_limits: dict[str, Limit] = field(default_factory=dict)


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
    lease_skips: int = 0
    by_relay: dict[str, int] = field(default_factory=dict)


class Worker:
    """One sending node's engine. Build it, then ``await run(stop)``.

    ``relays`` are what the pool starts with; ``relay_source``, if given, is
    called every few seconds (in a thread) for the current stored relays, so
    ``herald relays add/set/rm`` take effect without a restart.
    """

    def __init__(
        self,
        engine: Engine,
        relays: list[PoolRelay] | list[RelayConfig],
        opts: WorkerOptions,
        *,
        relay_source: Callable[[], list[PoolRelay]] | None = None,
        metrics: SendMetrics | None = None,
    ) -> None:
        if not relays:
            raise HeraldError("a worker needs at least one relay")
        self.engine = engine
        self.opts = opts
        self.metrics = metrics or SendMetrics()
        self.pool = RelayPool(
            [r if isinstance(r, PoolRelay) else PoolRelay(r) for r in relays],
            policy=opts.breaker,
            domain_limits=opts.domain_limits,
            metrics=self.metrics,
        )
        self.upkeep = RelayUpkeep(
            engine,
            self.pool,
            source=relay_source,
            node_name=opts.node_name,
            stale_after=opts.lease_ttl,
        )
        self._retry = RetryPolicy(opts.max_attempts, opts.retry_base_seconds, opts.breaker.cooldown)
        self.stats = WorkerStats()
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._held: dict[int, Job] = {}
        self._parked: list[Job] = []
        self.results = Results(engine, opts.node_name)
        self._kits: dict[int, SendKit | HeraldError] = {}
        self._campaign_status: dict[int, str] = {}
        # This node's share of each rate-limited campaign's rate, enforced at send
        # time (the claim-time bucket alone lets a stalled node burst on waking).
        self._gates: dict[int, Throttle] = {}
        self._draining = False

    @property
    def lease_margin(self) -> float:
        """Stop sending a row this long before its lease runs out (clock skew, slow DATA)."""
        return max(0.5, self.opts.lease_ttl * 0.25)

    async def run(self, stop: asyncio.Event) -> None:
        """Send until ``stop`` is set, then release what is held and return."""
        loops = (self._claimer, self.results.run, self._keeper, self.upkeep.health, self._unparker)
        tasks = [asyncio.create_task(loop(stop)) for loop in loops]
        tasks += [asyncio.create_task(self._sender(stop)) for _ in range(self.opts.concurrency)]
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
        """Release unsent claims, flush every pending ack (drain), close sessions."""
        waiting = [self._queue.get_nowait() for _ in range(self._queue.qsize())] + self._parked
        self._parked = []
        for job in waiting:
            self._release(job)
        await self.results.flush()
        await self.upkeep.close()

    async def _claimer(self, stop: asyncio.Event) -> None:
        low_water = max(self.opts.concurrency * 2, self.opts.batch_size // 2)
        max_held = self.opts.batch_size * 4
        while not stop.is_set():
            if (
                self._draining
                or self._queue.qsize() >= low_water
                or len(self._held) >= max_held
                or not self.pool.any_up()  # every relay is down: leave the rows to wait
            ):
                await wait(stop, 0.01 if self.pool.any_up() else self.opts.idle_poll_seconds)
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
                log.warning("claim failed (%s); retrying", describe(exc))
                await wait(stop, DB_RETRY_SECONDS)
                continue
            deadline = started + self.opts.lease_ttl - self.lease_margin
            for row in rows:
                job = Job(row, deadline)
                self._held[row.delivery_id] = job
                self._queue.put_nowait(job)
            if not rows:
                await wait(stop, self.opts.idle_poll_seconds)

    async def _unparker(self, stop: asyncio.Event) -> None:
        """Put parked rows back in the queue as their recipient domains get room."""
        while not stop.is_set():
            await wait(stop, UNPARK_SECONDS)
            if not self._parked:
                continue
            now = time.monotonic()
            room: dict[str | int, int] = {}
            still: list[Job] = []
            for job in self._parked:
                domain, campaign = job.row.email.rpartition("@")[2].lower(), job.row.campaign_id
                if domain not in room:
                    room[domain] = self.pool.domain_room(domain)
                if campaign not in room:
                    gate = self._gates.get(campaign)
                    room[campaign] = 1_000_000 if gate is None else gate.room(now)
                if room[domain] > 0 and room[campaign] > 0:
                    room[domain] -= 1
                    room[campaign] -= 1
                    self._queue.put_nowait(job)
                else:
                    still.append(job)
            self._parked = still

    async def _sender(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                # Mostly there is a job waiting: take it without wait_for's
                # per-call task, which costs as much as a third of a render.
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                try:
                    job = await asyncio.wait_for(self._queue.get(), timeout=0.2)
                except TimeoutError:
                    continue
            await self._handle(job)

    async def _handle(self, job: Job) -> None:
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
        domain = row.email.rpartition("@")[2].lower()
        gate = self._gates.get(row.campaign_id)
        if not self.pool.domain_ready(domain) or not (gate is None or gate.take(time.monotonic())):
            self._parked.append(job)  # the unparker puts it back when there is room
            return
        try:
            mid, raw = kit.build(
                delivery_id=row.delivery_id,
                subscriber_id=row.subscriber_id,
                email=row.email,
                name=row.name,
                attribs=row.attribs,
                data=row.data,
            )
        except RenderError as exc:
            self._ack(job, "failed", None, f"render error: {exc.message}")
            return
        await self._send(job, kit.envelope_from, domain, mid, raw)

    async def _send(self, job: Job, sender: str, domain: str, mid: str, raw: bytes) -> None:
        """Send through the pool, trying each relay once until one takes or bounces it."""
        tried: set[str] = set()
        last: tuple[str, SendOutcome] | None = None
        while True:
            slot = await self.pool.acquire(domain, tried, until=job.deadline)
            if slot is None:
                break
            outcome = await slot.conn.send(
                sender, job.row.email, raw, deadline=job.deadline, prepared=True
            )
            await self.pool.release(slot, outcome)
            self.stats.ambiguous += outcome.ambiguous
            tried.add(slot.relay)
            last = (slot.relay, outcome)
            # Anything else is tried on the next relay at once, an ambiguous
            # loss too: the relay may have taken it, but a later retry would
            # risk the same duplicate, only later.
            if outcome.kind in ("sent", "bounce"):
                break
        if last is None:
            self._release(job)  # no relay took it in time; it waits for the next claim
        else:
            self._record(job, last[0], mid, last[1])

    async def _still_sendable(self, job: Job) -> bool:
        row = job.row
        if time.monotonic() > job.deadline:
            # Our lease may have run out (frozen process, slow relay): do not race
            # the node that may have re-claimed it. The keeper re-queues it.
            self.stats.lease_skips += 1
            self.metrics.lease_skips.inc()
            self._held.pop(row.delivery_id, None)
            return False
        if self._campaign_status.get(row.campaign_id, "running") != "running" or self._draining:
            self._release(job)
            return False
        if not row.eligible:
            self._ack(job, "failed", None, "not sent: unsubscribed or suppressed meanwhile")
            return False
        return True

    def _record(self, job: Job, relay: str, mid: str, outcome: SendOutcome) -> None:
        decision = decide(outcome, job.row.attempts, self._retry, random.uniform(0.8, 1.2))
        if decision.status == "sent":
            self.stats.sent += 1
            self.stats.by_relay[relay] = self.stats.by_relay.get(relay, 0) + 1
        elif decision.status == "bounced":
            self.stats.bounced += 1
        elif decision.status == "pending":
            self.stats.retried += 1
        due = utcnow() + timedelta(seconds=decision.delay) if decision.status == "pending" else None
        self._ack(
            job, decision.status, relay, outcome.reply, mid, due=due, count=decision.count_attempt
        )

    def _ack(
        self,
        job: Job,
        status: str,
        relay: str | None,
        reply: str,
        mid: str | None = None,
        *,
        due: datetime | None = None,
        count: bool = True,
    ) -> None:
        row = job.row
        if status == "failed":
            self.stats.failed += 1
        self.metrics.delivered(status, relay)
        self._held.pop(row.delivery_id, None)
        ack = Ack(row.delivery_id, row.epoch, status, relay, reply, mid, due, count_attempt=count)
        self.results.ack(ack, bounced=row.email if status == "bounced" else None)

    def _release(self, job: Job) -> None:
        self._held.pop(job.row.delivery_id, None)
        self.results.release(job.row.delivery_id, job.row.epoch)

    async def _keeper(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._renew()
                done = await asyncio.to_thread(
                    outbox.housekeeping, self.engine, max_attempts=self.opts.max_attempts
                )
                self.metrics.requeued.labels("pending").inc(done.requeued)
                self.metrics.requeued.labels("failed").inc(done.failed)
                if self._kits:
                    states = await asyncio.to_thread(
                        outbox.campaign_statuses, self.engine, list(self._kits)
                    )
                    self._campaign_status = {cid: status for cid, (status, _) in states.items()}
                    self._set_gates({cid: rate for cid, (_, rate) in states.items()})
                await self.upkeep.tick()
            except DB_ERRORS as exc:
                # Leases are not renewed meanwhile, so held rows run out on
                # this node's clock and are not sent: nothing races a takeover.
                log.warning("housekeeping failed (%s); retrying", describe(exc))
            await wait(stop, self.opts.keeper_interval)

    async def _renew(self) -> None:
        """Extend leases of held rows, and of sent rows whose ack is not committed
        yet; held rows not renewed get a deadline in the past."""
        held = dict(self._held)
        ids = set(held).union(self.results.unwritten())
        if not ids:
            return
        started = time.monotonic()
        renewed = await asyncio.to_thread(
            outbox.renew_leases,
            self.engine,
            list(ids),  # renew() locks them in id order (ORDER BY … FOR UPDATE)
            owner=self.opts.node_name,
            lease_ttl=self.opts.lease_ttl,
        )
        deadline = started + self.opts.lease_ttl - self.lease_margin
        for delivery_id in renewed:
            job = held.get(delivery_id)
            if job is not None:
                job.deadline = deadline

    def _set_gates(self, rates: dict[int, float | None]) -> None:
        """Keep one send-time throttle per rate-limited campaign, at this node's share."""
        now = time.monotonic()
        for campaign_id, rate in rates.items():
            gate = self._gates.get(campaign_id)
            if rate is None:
                self._gates.pop(campaign_id, None)
            elif gate is None or gate.limit.rate != rate:
                self._gates[campaign_id] = Throttle(Limit(rate), now, nodes=self.pool.nodes)
            else:
                gate.share(self.pool.nodes)

    async def _kit(self, campaign_id: int) -> SendKit | HeraldError | None:
        """The campaign's send kit, its permanent error, or None if the database failed."""
        kit = self._kits.get(campaign_id)
        if kit is None:
            try:
                campaign = await asyncio.to_thread(outbox.load_campaign, self.engine, campaign_id)
            except DB_ERRORS as exc:
                log.warning("cannot load campaign %s (%s)", campaign_id, describe(exc))
                return None
            self._campaign_status[campaign_id] = str(campaign["status"])
            self._set_gates({campaign_id: campaign.get("rate_limit")})  # type: ignore[dict-item]
            try:
                kit = make_kit(campaign, secret=self.opts.secret, base_url=self.opts.base_url)
            except HeraldError as exc:
                kit = exc
            self._kits[campaign_id] = kit
        return kit

    def drain(self) -> None:
        """Stop sending new messages; held rows are released at shutdown."""
        self._draining = True
