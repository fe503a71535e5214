"""Send limits: rate parsing, domain limit syntax, and a node's share of a limit."""

from __future__ import annotations

import pytest

from herald.domain.throttle import Limit, Throttle, parse_domain_limits, parse_rate
from herald.errors import InvalidInput


def test_it_parses_rates() -> None:
    assert parse_rate("50/s") == 50
    assert parse_rate("120/min") == 2
    assert parse_rate("7200/h") == 2
    for bad in ("0", "-1/s", "x/s", "5/week"):
        with pytest.raises(InvalidInput, match="invalid rate"):
            parse_rate(bad)


def test_it_parses_domain_limits() -> None:
    assert parse_domain_limits(" Gmail.com=50/s:10, outlook.com=1200/min,yahoo.com=:4 ") == {
        "gmail.com": Limit(50.0, 10),
        "outlook.com": Limit(20.0, None),
        "yahoo.com": Limit(None, 4),
    }
    assert parse_domain_limits("") == {}
    for bad in ("gmail.com", "=5/s", "gmail.com=", "a@b.com=5/s", "x.com=5/s:0", "x.com=5/s:y"):
        with pytest.raises(InvalidInput):
            parse_domain_limits(bad)


def test_a_connection_cap_limits_sends_in_flight() -> None:
    throttle = Throttle(Limit(None, 2), now=0.0)
    assert throttle.take(0.0) and throttle.take(0.0)
    assert not throttle.take(0.0)
    assert throttle.room(0.0) == 0
    throttle.give()
    assert throttle.room(0.0) == 1
    assert throttle.take(0.0)


def test_a_rate_admits_its_messages_per_second_after_a_small_burst() -> None:
    throttle = Throttle(Limit(100.0, None), now=0.0)
    started = sum(throttle.take(0.0) for _ in range(50))
    assert started == 10  # burst: a tenth of a second's worth
    assert throttle.wait_hint(0.0) == pytest.approx(0.01)
    # Over the next second: 100 more, not one over.
    admitted = 0
    for step in range(1, 1001):
        admitted += throttle.take(step / 1000)
        throttle.give()
    assert admitted == 100


def test_each_node_enforces_its_share_of_a_cluster_wide_limit() -> None:
    throttle = Throttle(Limit(40.0, 10), now=0.0, nodes=4)
    assert throttle.room(0.0) == 1  # 10/s per node: a burst of one
    throttle.share(2)
    assert throttle.free_connections == 5
    admitted = sum(
        throttle.take(t / 100) or False for t in range(1, 101) if throttle.give() or True
    )
    assert admitted == 20  # 40/s over two nodes: 20 in one second here
    throttle.share(100)
    assert throttle.free_connections == 1  # never below one connection
