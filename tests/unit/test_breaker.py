"""The relay circuit breaker's states and cool-downs."""

from __future__ import annotations

from herald.domain.breaker import Breaker, BreakerPolicy

POLICY = BreakerPolicy(threshold=3, cooldown=1.0, failed_cooldown=10.0, max_cooldown=8.0)


def test_it_opens_after_a_burst_of_failures_and_a_success_resets_the_count() -> None:
    breaker = Breaker(POLICY)
    breaker.failed(0.0, "connect: refused")
    breaker.failed(0.0, "connect: refused")
    breaker.succeeded()
    breaker.failed(0.0, "connect: refused")
    breaker.failed(0.0, "connect: refused")
    assert breaker.state == "healthy" and breaker.allows()
    breaker.failed(0.0, "mail: 421 busy")
    assert breaker.state == "open" and not breaker.allows()
    assert breaker.last_error == "mail: 421 busy"
    assert breaker.changed


def test_after_the_cooldown_a_passing_probe_lets_exactly_one_message_through() -> None:
    breaker = _opened()
    assert not breaker.probe_due(0.5)
    assert breaker.probe_due(1.0)
    breaker.probed(1.0, ok=True)
    assert breaker.state == "half_open" and breaker.allows()
    breaker.started()
    assert not breaker.allows()  # the one trial is in flight
    breaker.succeeded()
    assert breaker.state == "healthy" and breaker.allows()


def test_a_failed_trial_or_probe_doubles_the_cooldown_up_to_the_cap() -> None:
    breaker = _opened()
    breaker.probed(1.0, ok=True)
    breaker.started()
    breaker.failed(1.0, "rcpt: 451 later")
    assert breaker.state == "open"
    assert not breaker.probe_due(2.9) and breaker.probe_due(3.0)  # 2 s
    breaker.probed(3.0, ok=False, error="connect: refused")
    assert breaker.probe_due(7.0)  # 4 s
    breaker.probed(7.0, ok=False)
    breaker.probed(15.0, ok=False)
    assert not breaker.probe_due(22.9) and breaker.probe_due(23.0)  # capped at 8 s
    assert breaker.last_error == "connect: refused"


def test_a_relay_that_refuses_us_is_failed_for_the_longer_cooldown() -> None:
    breaker = Breaker(POLICY)
    breaker.broken(0.0, "auth: 535 bad credentials")
    assert breaker.state == "failed" and not breaker.allows()
    assert not breaker.probe_due(7.9)
    assert breaker.probe_due(8.0)  # failed_cooldown 10 s, capped at 8
    breaker.probed(8.0, ok=True)
    assert breaker.state == "half_open"
    breaker.started()
    breaker.broken(8.0, "rcpt: 554 relay access denied")
    assert breaker.state == "failed"


def test_a_failed_probe_of_an_idle_healthy_relay_opens_it_at_once() -> None:
    breaker = Breaker(POLICY)
    breaker.probed(0.0, ok=True)
    assert breaker.state == "healthy"
    breaker.probed(0.0, ok=False, error="connect: refused")
    assert breaker.state == "open" and breaker.probe_due(1.0)


def _opened() -> Breaker:
    breaker = Breaker(POLICY)
    for _ in range(3):
        breaker.failed(0.0, "connect: refused")
    return breaker
