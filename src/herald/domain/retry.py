"""What happens to a delivery after the relays' last word on it.

Pure: the caller passes the attempt count, the policy and a jitter factor.
"""

from __future__ import annotations

from dataclasses import dataclass

from herald.domain.replies import SendOutcome

MAX_BACKOFF_SECONDS = 3600.0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_seconds: float = 30.0  # first backoff of a counted attempt, doubled per attempt
    relay_seconds: float = 2.0  # wait after the relays (not the message) failed


@dataclass(frozen=True)
class Decision:
    """The delivery's next status; for ``pending``, in how long, and whether an
    attempt is counted."""

    status: str  # sent | bounced | failed | pending
    delay: float = 0.0
    count_attempt: bool = True


def decide(outcome: SendOutcome, attempts: int, policy: RetryPolicy, jitter: float) -> Decision:
    """Decide from the last relay's ``outcome`` after ``attempts`` earlier attempts.

    ``jitter`` (about 0.8–1.5) spreads retries so they do not return in a herd.
    A failure of the relays or the network before the message was handed over
    (refused at connect, EHLO, TLS, AUTH or MAIL, a broken relay, or a
    connection lost before the final dot) counts no attempt and comes back
    soon; a failure that may be about this message (4xx at RCPT or later, a
    reply lost after the final dot) counts one and backs off exponentially,
    until ``max_attempts`` makes it ``failed``.
    """
    if outcome.kind == "sent":
        return Decision("sent")
    if outcome.kind == "bounce":
        return Decision("bounced")
    lost = outcome.code is None and not outcome.ambiguous
    if outcome.kind == "relay_broken" or outcome.before_envelope or lost:
        return Decision("pending", policy.relay_seconds * jitter, count_attempt=False)
    if attempts + 1 >= policy.max_attempts:
        return Decision("failed")
    delay = policy.base_seconds * (2**attempts) * jitter
    return Decision("pending", min(delay, MAX_BACKOFF_SECONDS))
