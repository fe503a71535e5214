"""A circuit breaker per relay: stop sending where sending keeps failing.

States (as stored and shown by ``herald relays ls``):

- ``healthy``: messages flow.
- ``open``: a burst of failures (``threshold`` in a row: refused or dropped
  connections, timeouts, 4xx replies) stopped traffic for a cool-down.
- ``failed``: the relay refused *us* (bad credentials, relaying denied, TLS
  failure). Traffic stops for a longer cool-down; nobody is bounced.
- ``half_open``: the cool-down is over and an active probe (connect, EHLO,
  NOOP) passed; exactly one real message may go. Its success closes the
  breaker, its failure opens it again with the cool-down doubled.

While ``open`` or ``failed``, `probe_due` tells the health checker when to
probe; a failed probe doubles the cool-down (up to ``max_cooldown``).

Pure: the caller passes the time (monotonic seconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BreakerState = Literal["healthy", "open", "half_open", "failed"]


@dataclass(frozen=True)
class BreakerPolicy:
    threshold: int = 5  # failures in a row that open the circuit
    cooldown: float = 2.0  # first open period (seconds), doubled per failed probe
    failed_cooldown: float = 60.0  # first pause after the relay refused us
    max_cooldown: float = 300.0


class Breaker:
    def __init__(self, policy: BreakerPolicy) -> None:
        self.policy = policy
        self.state: BreakerState = "healthy"
        self.last_error: str | None = None
        self.failures = 0
        self._retry_at = 0.0
        self._cooldown = 0.0
        self._trial_in_flight = False
        self.changed = False  # set on every state change; cleared by whoever stores it

    def allows(self) -> bool:
        """May a message be sent through this relay now?"""
        if self.state == "healthy":
            return True
        return self.state == "half_open" and not self._trial_in_flight

    def started(self) -> None:
        """A message is going out; in half-open state it is the one trial."""
        if self.state == "half_open":
            self._trial_in_flight = True

    def succeeded(self) -> None:
        self.failures = 0
        self._trial_in_flight = False
        if self.state != "healthy":
            self._cooldown = 0.0
            self._set("healthy")

    def failed(self, now: float, error: str) -> None:
        """A transient failure (network, timeout, 4xx) at this relay."""
        self.last_error = error
        self.failures += 1
        if self.state == "half_open":
            self._open(now, "open", self._next_cooldown(self.policy.cooldown))
        elif self.state == "healthy" and self.failures >= self.policy.threshold:
            self._open(now, "open", self.policy.cooldown)

    def broken(self, now: float, error: str) -> None:
        """The relay refuses us whoever the recipient: stop using it for a long while."""
        self.last_error = error
        self.failures += 1
        if self.state == "failed":
            return
        start = self.policy.failed_cooldown
        self._open(
            now, "failed", self._next_cooldown(start) if self.state == "half_open" else start
        )

    def probe_due(self, now: float) -> bool:
        """Is it time for the health checker to probe this open or failed relay?"""
        return self.state in ("open", "failed") and now >= self._retry_at

    def probed(self, now: float, ok: bool, error: str | None = None) -> None:
        """Result of an active probe: an open or failed relay that passes goes
        half-open; a healthy (idle) relay that fails opens at once."""
        if ok:
            if self.state in ("open", "failed"):
                self._trial_in_flight = False
                self._set("half_open")
            return
        self.last_error = error or self.last_error
        if self.state == "healthy":
            self._open(now, "open", self.policy.cooldown)
        elif self.state in ("open", "failed"):
            self._open(now, self.state, self._next_cooldown(self._cooldown))

    def _open(self, now: float, state: BreakerState, cooldown: float) -> None:
        self._cooldown = min(cooldown, self.policy.max_cooldown)
        self._retry_at = now + self._cooldown
        self._trial_in_flight = False
        self._set(state)

    def _next_cooldown(self, start: float) -> float:
        return max(start, self._cooldown * 2)

    def _set(self, state: BreakerState) -> None:
        if state != self.state:
            self.state = state
            self.changed = True
