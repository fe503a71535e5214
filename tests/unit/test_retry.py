"""What a delivery becomes after the relays' last word."""

from __future__ import annotations

import pytest

from herald.domain.replies import classify, relay_fault
from herald.domain.retry import Decision, RetryPolicy, decide

POLICY = RetryPolicy(max_attempts=3, base_seconds=10.0, relay_seconds=2.0)


def test_sent_and_bounced_are_final() -> None:
    assert decide(classify("dot", 250, "ok"), 0, POLICY, 1.0) == Decision("sent")
    assert decide(classify("rcpt", 550, "5.1.1 no such user"), 0, POLICY, 1.0) == Decision(
        "bounced"
    )


@pytest.mark.parametrize(
    "outcome",
    [
        classify("connect", None, "refused"),
        classify("mail", 421, "busy"),
        classify("data", None, "connection lost"),  # before the dot: nobody has it
        classify("auth", 535, "bad credentials"),
        relay_fault("tls", "certificate verify failed"),
    ],
)
def test_failures_of_the_relays_count_no_attempt_and_return_soon(outcome: object) -> None:
    decision = decide(outcome, 5, POLICY, 1.5)  # type: ignore[arg-type]
    assert decision == Decision("pending", 3.0, count_attempt=False)


def test_failures_that_may_be_the_messages_back_off_and_then_fail() -> None:
    later = classify("rcpt", 451, "try later")
    lost_reply = classify("dot", None, "connection lost", after_dot=True)
    assert decide(later, 0, POLICY, 1.0) == Decision("pending", 10.0)
    assert decide(lost_reply, 1, POLICY, 1.2) == Decision("pending", 24.0)
    assert decide(later, 2, POLICY, 1.0) == Decision("failed")
    huge = RetryPolicy(max_attempts=100, base_seconds=30.0)
    assert decide(later, 40, huge, 1.0).delay == 3600.0
