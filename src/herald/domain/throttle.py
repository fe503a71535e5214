"""Send limits: token buckets, connection caps, and the per-domain limit syntax.

A `Throttle` caps how many messages may be in flight at once (connections)
and how many may start per second (a token bucket). Relays have one each, and
so may recipient domains (``gmail.com=50/s:10``). Limits are cluster-wide
figures; a node enforces its *share* of them (`Throttle.share`), the figure
divided by the number of live sending nodes, so the cluster as a whole stays
within the limit without a lock per message.

Pure: the caller passes the time (monotonic seconds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from herald.errors import InvalidInput

_RATE_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_rate(text: str) -> float:
    """Parse a send rate: ``50``, ``50/s``, ``3000/min``, ``100000/h`` → messages per second.

    Raises InvalidInput.
    """
    number, _, unit = text.strip().partition("/")
    per = _RATE_UNITS.get(unit.strip())
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if per is None or not 0 < value < 1e9:
        raise InvalidInput(f"invalid rate {text!r}: use N/s, N/min or N/h with N > 0")
    return value / per


@dataclass(frozen=True)
class Limit:
    """A cluster-wide limit: messages per second (None: any) and concurrent sends (None: any)."""

    rate: float | None = None
    connections: int | None = None


def parse_domain_limits(text: str) -> dict[str, Limit]:
    """Parse ``"gmail.com=50/s:10, outlook.com=20/s"`` into limits by domain.

    Each entry is ``domain=RATE[:CONNECTIONS]`` (or ``domain=:CONNECTIONS``).
    Domains are lower-cased. Raises InvalidInput naming the bad entry.
    """
    limits: dict[str, Limit] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        domain, sep, spec = entry.partition("=")
        domain = domain.strip().lower().rstrip(".")
        rate_text, _, conns_text = spec.partition(":")
        if not sep or not domain or "@" in domain or not (rate_text.strip() or conns_text):
            raise InvalidInput(
                f"invalid domain limit {entry!r}: write domain=RATE[:CONNECTIONS], "
                "e.g. gmail.com=50/s:10"
            )
        rate = parse_rate(rate_text) if rate_text.strip() else None
        limits[domain] = Limit(rate, _parse_connections(conns_text, entry) if conns_text else None)
    return limits


def _parse_connections(text: str, entry: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise InvalidInput(f"invalid domain limit {entry!r}: connections must be 1 or more")
    return value


class Throttle:
    """This node's share of a `Limit`: in-flight count and a token bucket.

    `take` claims one slot (a connection and a token) if both are free; `give`
    returns the connection slot when the send ends. `wait_hint` says how long
    until a token is due, so a caller can sleep rather than spin.
    """

    def __init__(self, limit: Limit, now: float, *, nodes: int = 1) -> None:
        self.limit = limit
        self.in_flight = 0
        self._stamp = now
        self._nodes = 1
        self._rate: float | None = None
        self._cap: int | None = None
        self._tokens = 0.0
        self.share(nodes)
        self._tokens = self._burst

    def share(self, nodes: int) -> None:
        """Enforce 1/``nodes`` of the limit here (at least one connection, some rate)."""
        self._nodes = max(1, nodes)
        rate, conns = self.limit.rate, self.limit.connections
        self._rate = None if rate is None else rate / self._nodes
        self._cap = None if conns is None else max(1, conns // self._nodes)
        self._tokens = min(self._tokens, self._burst)

    @property
    def _burst(self) -> float:
        return 0.0 if self._rate is None else max(1.0, self._rate / 10)

    def _refill(self, now: float) -> None:
        if self._rate is not None:
            elapsed = max(0.0, now - self._stamp)
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._stamp = now

    def ready(self, now: float) -> bool:
        """Would `take` succeed now?"""
        self._refill(now)
        if self._cap is not None and self.in_flight >= self._cap:
            return False
        return self._rate is None or self._tokens >= 1.0

    def room(self, now: float) -> int:
        """How many sends could start now (connections and tokens both free)."""
        self._refill(now)
        free = self.free_connections
        tokens = math.inf if self._rate is None else math.floor(self._tokens)
        left = min(free, tokens)
        return 1_000_000 if left == math.inf else max(0, int(left))

    def take(self, now: float) -> bool:
        """Claim a slot if one is free; True when claimed."""
        if not self.ready(now):
            return False
        if self._rate is not None:
            self._tokens -= 1.0
        self.in_flight += 1
        return True

    def give(self) -> None:
        """A send that `take` allowed has ended."""
        self.in_flight = max(0, self.in_flight - 1)

    def wait_hint(self, now: float) -> float:
        """Seconds until a token is due (0 when one is, or when the cap is what binds)."""
        self._refill(now)
        if self._rate is None or self._tokens >= 1.0:
            return 0.0
        return (1.0 - self._tokens) / self._rate

    @property
    def free_connections(self) -> float:
        return math.inf if self._cap is None else self._cap - self.in_flight
