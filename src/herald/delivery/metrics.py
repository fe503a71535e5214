"""What the sending side tells Prometheus: delivery outcomes, send latency, relay circuits.

A `SendMetrics` is a small object the node builds once and hands to its
worker, which hands it to its relay pool; nothing here is module-level, so a
process may hold several (tests build many workers). Its metric objects are
bound to no registry: `SendMetrics` is itself a collector, and the HTTP app
registers it in the app's own registry, next to the HTTP and database
metrics, so one ``/metrics`` shows them all. A worker built without one gets
a private instance nobody scrapes.

Relay circuit states are read from the pool when scraped, not pushed on each
change, so a breaker that opened or half-opened between sends is shown as it
is now.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from herald.domain.replies import SendOutcome

# How `herald_relay_state` encodes a breaker state; stored relays add
# ``disabled`` (see web.metrics). Higher is worse.
RELAY_STATE_CODES = {"healthy": 0, "half_open": 1, "open": 2, "failed": 3, "disabled": 4}

# A send takes milliseconds on a LAN relay and seconds on a slow provider.
SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Delivery statuses as acked, and the outcome label each is counted under.
_OUTCOMES = {"sent": "sent", "bounced": "bounced", "failed": "failed", "pending": "retried"}
NO_RELAY = "none"


class RelayStates(Protocol):
    """What the collector needs of a relay pool: its relays and their breaker states."""

    @property
    def names(self) -> list[str]: ...

    def state(self, name: str) -> str: ...


class SendMetrics(Collector):
    """Counters fed by one worker and its relay pool; register it in a registry to export."""

    def __init__(self) -> None:
        self.deliveries = Counter(
            "herald_deliveries",
            "Delivery results acknowledged by this node, by outcome "
            "(sent, bounced, failed, retried) and relay.",
            ["outcome", "relay"],
            registry=None,
        )
        self.ambiguous = Counter(
            "herald_ambiguous_sends",
            "Sends whose final dot went out with no reply: the relay may have taken the "
            "message, so a resend may be a duplicate (same Message-ID).",
            ["relay"],
            registry=None,
        )
        self.lease_skips = Counter(
            "herald_lease_skips",
            "Claimed messages not sent because this node's lease on them had run out.",
            registry=None,
        )
        self.requeued = Counter(
            "herald_lease_requeues",
            "Rows whose lease expired (a node died or froze) that this node put back in "
            "the queue, by what became of them (pending again, or failed: too many attempts).",
            ["result"],
            registry=None,
        )
        self.send_seconds = Histogram(
            "herald_send_duration_seconds",
            "Time from taking a relay slot to the relay's answer, per relay.",
            ["relay"],
            buckets=SEND_BUCKETS,
            registry=None,
        )
        self._pool: RelayStates | None = None
        self._delivered: dict[tuple[str, str], Counter] = {}
        self._timed: dict[str, Histogram] = {}

    def watch(self, pool: RelayStates) -> None:
        """Export ``pool``'s breaker states from now on (the latest pool wins)."""
        self._pool = pool

    def delivered(self, status: str, relay: str | None) -> None:
        """Count one acked result; ``status`` is the delivery status written (pending = retry)."""
        outcome = _OUTCOMES.get(status)
        if outcome is not None:
            key = (outcome, relay or NO_RELAY)
            counter = self._delivered.get(key)
            if counter is None:  # labels() costs more than the count; keep the child
                counter = self._delivered[key] = self.deliveries.labels(*key)
            counter.inc()

    def sent(self, relay: str, outcome: SendOutcome, seconds: float) -> None:
        """Account for one SMTP transaction at ``relay``, whatever its outcome."""
        histogram = self._timed.get(relay)
        if histogram is None:
            histogram = self._timed[relay] = self.send_seconds.labels(relay)
        histogram.observe(max(seconds, 0.0))
        if outcome.ambiguous:
            self.ambiguous.labels(relay).inc()

    def collect(self) -> Iterator[Metric]:
        metrics = (self.deliveries, self.ambiguous, self.lease_skips, self.requeued)
        for metric in (*metrics, self.send_seconds):
            yield from metric.collect()
        yield relay_state_family(
            "herald_relay_state",
            "This node's circuit breaker per relay: 0 healthy, 1 half_open, 2 open, 3 failed.",
            self._states(),
        )

    def _states(self) -> list[tuple[str, str]]:
        pool = self._pool
        if pool is None:
            return []
        return [(name, pool.state(name)) for name in pool.names]


def relay_state_family(
    name: str, documentation: str, states: Sequence[tuple[str, str]]
) -> GaugeMetricFamily:
    """A gauge family of relay states, encoded with `RELAY_STATE_CODES`."""
    family = GaugeMetricFamily(name, documentation, labels=["relay"])
    for relay, state in states:
        family.add_metric([relay], RELAY_STATE_CODES.get(state, RELAY_STATE_CODES["failed"]))
    return family
