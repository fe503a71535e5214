"""The relay pool of one node: which relay takes the next message, over which connection.

Choice: among relays whose circuit breaker lets traffic through, that this
message has not failed on yet, and whose throttle (this node's share of the
relay's connection and rate limits) has room, a smooth weighted round robin
picks one, so over a campaign the split follows the weights exactly while no
relay is saturated, and a busy relay's turns go to the others (outstanding
work counts through the connection cap). A recipient domain may have its own
throttle (``gmail.com=50/s:10``), taken together with the relay's.

Connections are pooled per relay: a new SMTP session is opened only when every
open one is busy, so the open sessions to a relay never exceed its connection
share. Outcomes feed the relay's breaker (domain.breaker) and its tallies,
which `take_reports` hands to whoever stores them.

One asyncio loop uses a pool; nothing here does database I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from herald.delivery.metrics import SendMetrics
from herald.delivery.smtp import SmtpConnection
from herald.domain.breaker import Breaker, BreakerPolicy
from herald.domain.relays import RelayConfig
from herald.domain.replies import SendOutcome
from herald.domain.throttle import Limit, Throttle

IDLE_CHECK_SECONDS = 30.0


@dataclass(frozen=True)
class PoolRelay:
    """A relay as the pool uses it: how to reach it and its cluster-wide limits."""

    config: RelayConfig
    weight: int = 1
    max_connections: int | None = None
    max_rate: float | None = None

    @property
    def name(self) -> str:
        return self.config.name


@dataclass
class RelayReport:
    """What happened at one relay since the last report (for `herald relays ls`)."""

    name: str
    state: str
    state_changed: bool
    last_error: str | None
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    latency_ms: float | None = None


@dataclass
class Slot:
    """A relay chosen for one message, with the session to send it over."""

    relay: str
    conn: SmtpConnection
    domain: str | None
    started: float = field(default_factory=time.monotonic)


@dataclass
class _Tally:
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    seconds: float = 0.0
    timed: int = 0


class _Member:
    def __init__(self, relay: PoolRelay, policy: BreakerPolicy, now: float, nodes: int) -> None:
        self.relay = relay
        self.breaker = Breaker(policy)
        self.throttle = Throttle(Limit(relay.max_rate, relay.max_connections), now, nodes=nodes)
        self.current = 0  # smooth weighted round robin credit
        self.idle: list[SmtpConnection] = []
        self.tally = _Tally()
        self.active_at = now
        self.probing = False


class RelayPool:
    """Pick relays for messages, pool their connections, and track their health."""

    def __init__(
        self,
        relays: Iterable[PoolRelay],
        *,
        policy: BreakerPolicy | None = None,
        domain_limits: dict[str, Limit] | None = None,
        clock: Callable[[], float] = time.monotonic,
        metrics: SendMetrics | None = None,
    ) -> None:
        self.policy = policy or BreakerPolicy()
        self.metrics = metrics or SendMetrics()
        self.metrics.watch(self)
        self._clock = clock
        self._nodes = 1
        self._members: dict[str, _Member] = {}
        now = clock()
        self._domains = {d: Throttle(lim, now) for d, lim in (domain_limits or {}).items()}
        self._changed = asyncio.Condition()
        self._waiting = 0  # senders waiting in acquire()
        self.update(relays)

    @property
    def names(self) -> list[str]:
        return list(self._members)

    def state(self, name: str) -> str:
        return self._members[name].breaker.state

    def update(self, relays: Iterable[PoolRelay]) -> list[SmtpConnection]:
        """Use ``relays`` from now on; a relay whose settings are unchanged keeps its state.

        Returns the idle connections of relays dropped or changed, for the caller to close.
        """
        now = self._clock()
        members: dict[str, _Member] = {}
        stale: list[SmtpConnection] = []
        for relay in relays:
            old = self._members.pop(relay.name, None)
            if old is not None and old.relay == relay:
                members[relay.name] = old
            else:
                members[relay.name] = _Member(relay, self.policy, now, self._nodes)
                if old is not None:
                    stale.extend(old.idle)
        for gone in self._members.values():
            stale.extend(gone.idle)
        self._members = members
        return stale

    def share(self, nodes: int) -> None:
        """Enforce 1/``nodes`` of every cluster-wide limit on this node."""
        self._nodes = max(1, nodes)
        for member in self._members.values():
            member.throttle.share(self._nodes)
        for throttle in self._domains.values():
            throttle.share(self._nodes)

    @property
    def nodes(self) -> int:
        """Live sending nodes sharing the cluster-wide limits (this one included)."""
        return self._nodes

    def any_up(self) -> bool:
        """Is some relay's breaker letting messages through (or about to, half-open)?"""
        return any(m.breaker.state in ("healthy", "half_open") for m in self._members.values())

    def domain_ready(self, domain: str) -> bool:
        """Does the recipient domain's throttle (if any) have room for one more now?"""
        throttle = self._domains.get(domain)
        return throttle is None or throttle.ready(self._clock())

    def domain_room(self, domain: str) -> int:
        """How many more messages to ``domain`` its throttle would let start now."""
        throttle = self._domains.get(domain)
        return 1_000_000 if throttle is None else throttle.room(self._clock())

    def choose(self, domain: str, exclude: set[str]) -> Slot | None:
        """Take a relay slot for a message to ``domain`` now, or None if none is free."""
        now = self._clock()
        candidates = [
            m
            for name, m in self._members.items()
            if name not in exclude and m.breaker.allows() and m.throttle.ready(now)
        ]
        throttle = self._domains.get(domain)
        if not candidates or (throttle is not None and not throttle.take(now)):
            return None
        total = sum(m.relay.weight for m in candidates)
        for m in candidates:
            m.current += m.relay.weight
        best = max(candidates, key=lambda m: m.current)
        best.current -= total
        best.throttle.take(now)
        best.breaker.started()
        best.active_at = now
        conn = best.idle.pop() if best.idle else SmtpConnection(best.relay.config)
        return Slot(best.relay.name, conn, domain if throttle is not None else None, now)

    async def acquire(self, domain: str, exclude: set[str], *, until: float) -> Slot | None:
        """Wait for a relay slot until ``until`` (monotonic); None when the time is up
        or every relay has been excluded."""
        while self._clock() < until:
            if not set(self._members) - exclude:
                return None
            slot = self.choose(domain, exclude)
            if slot is not None:
                return slot
            wait = min(until - self._clock(), 0.05)
            self._waiting += 1
            try:
                async with self._changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), timeout=max(wait, 0.0))
            finally:
                self._waiting -= 1
        return None

    async def release(self, slot: Slot, outcome: SendOutcome) -> None:
        """Account for the send ``slot`` was taken for, and return its session to the pool."""
        now = self._clock()
        if slot.domain is not None:
            self._domains[slot.domain].give()
        member = self._members.get(slot.relay)
        if member is None or member.relay.config is not slot.conn.relay:
            await slot.conn.close()  # the relay was removed or changed meanwhile
        else:
            member.throttle.give()
            member.idle.append(slot.conn)
            self._record(member, outcome, now, now - slot.started)
        self.metrics.sent(slot.relay, outcome, now - slot.started)
        await self._wake()

    async def _wake(self) -> None:
        """Wake the senders waiting in ``acquire`` (mostly there are none)."""
        if self._waiting:
            async with self._changed:
                self._changed.notify_all()

    def _record(self, member: _Member, outcome: SendOutcome, now: float, seconds: float) -> None:
        tally, breaker = member.tally, member.breaker
        tally.seconds += seconds
        tally.timed += 1
        if outcome.kind == "sent":
            tally.sent += 1
            breaker.succeeded()
        elif outcome.kind == "bounce":
            tally.failed += 1
            breaker.succeeded()  # the relay works; the recipient does not
        elif outcome.kind == "relay_broken":
            tally.deferred += 1
            breaker.broken(now, outcome.reply)
        else:
            tally.deferred += 1
            breaker.failed(now, outcome.reply)

    def to_probe(self) -> list[PoolRelay]:
        """Relays the health checker should probe now: open or failed ones whose
        cool-down is over, and healthy ones idle for `IDLE_CHECK_SECONDS`."""
        now = self._clock()
        due = []
        for m in self._members.values():
            idle = m.breaker.state == "healthy" and now - m.active_at >= IDLE_CHECK_SECONDS
            if not m.probing and (m.breaker.probe_due(now) or idle):
                m.probing = True
                due.append(m.relay)
        return due

    async def probed(self, relay: PoolRelay, outcome: SendOutcome) -> None:
        """Record an active probe's result (connect, EHLO, NOOP)."""
        member = self._members.get(relay.name)
        if member is None or member.relay != relay:
            return
        now = self._clock()
        member.probing = False
        member.active_at = now
        member.breaker.probed(now, outcome.ok, None if outcome.ok else outcome.reply)
        await self._wake()

    def take_reports(self) -> list[RelayReport]:
        """Tallies since the last call and the current state, per relay; resets the tallies."""
        reports = []
        for name, m in self._members.items():
            tally, m.tally = m.tally, _Tally()
            latency = tally.seconds / tally.timed * 1000 if tally.timed else None
            changed, m.breaker.changed = m.breaker.changed, False
            reports.append(
                RelayReport(
                    name,
                    m.breaker.state,
                    changed,
                    m.breaker.last_error,
                    tally.sent,
                    tally.deferred,
                    tally.failed,
                    latency,
                )
            )
        return reports

    def take_idle(self) -> list[SmtpConnection]:
        """Every idle session (to close at shutdown)."""
        conns = []
        for m in self._members.values():
            conns.extend(m.idle)
            m.idle = []
        return conns
