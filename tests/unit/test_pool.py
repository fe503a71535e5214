"""The relay pool's choice: weights, exclusions, breakers, caps and pooled sessions."""

from __future__ import annotations

import asyncio
from collections import Counter

from herald.delivery.pool import PoolRelay, RelayPool
from herald.domain.breaker import BreakerPolicy
from herald.domain.relays import parse_relay_url
from herald.domain.replies import SendOutcome
from herald.domain.throttle import Limit

SENT = SendOutcome("sent", 250, "dot: 250 ok", stage="dot")
REFUSED = SendOutcome("temporary", None, "connect: refused", stage="connect")
DENIED = SendOutcome("relay_broken", 554, "rcpt: 554 relay access denied", stage="rcpt")


def relay(name: str, weight: int = 1, **limits: float | int | None) -> PoolRelay:
    config = parse_relay_url(f"smtp://{name}.example.com", name=name)
    return PoolRelay(config, weight, **limits)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_split_follows_the_weights_exactly() -> None:
    async def main() -> Counter[str]:
        pool = RelayPool([relay("a", 3), relay("b", 1), relay("c", 2)])
        used: Counter[str] = Counter()
        for _ in range(600):
            slot = pool.choose("example.org", set())
            assert slot is not None
            used[slot.relay] += 1
            await pool.release(slot, SENT)
        return used

    assert asyncio.run(main()) == {"a": 300, "b": 100, "c": 200}


def test_a_relay_at_its_connection_share_passes_its_turn_and_sessions_are_reused() -> None:
    async def main() -> None:
        pool = RelayPool([relay("a", 10, max_connections=4), relay("b", 1)])
        pool.share(2)  # two live nodes: two connections to "a" here
        held = [pool.choose("example.org", set()) for _ in range(4)]
        assert [s.relay for s in held if s] == ["a", "a", "b", "b"]
        first = held[0]
        assert first is not None
        await pool.release(first, SENT)
        again = pool.choose("example.org", set())
        assert again is not None and again.relay == "a" and again.conn is first.conn

    asyncio.run(main())


def test_excluded_and_broken_relays_are_skipped_and_the_pool_waits_when_all_are_down() -> None:
    clock = Clock()

    async def main() -> None:
        pool = RelayPool(
            [relay("a"), relay("b")], policy=BreakerPolicy(threshold=2, cooldown=1.0), clock=clock
        )
        slot = pool.choose("example.org", {"a"})
        assert slot is not None and slot.relay == "b"
        await pool.release(slot, DENIED)
        assert pool.state("b") == "failed"
        for _ in range(2):
            slot = pool.choose("example.org", set())
            assert slot is not None and slot.relay == "a"
            await pool.release(slot, REFUSED)
        assert pool.state("a") == "open" and not pool.any_up()
        assert await pool.acquire("example.org", set(), until=0.0) is None
        assert await pool.acquire("example.org", {"a", "b"}, until=10.0) is None
        clock.now = 1.0
        assert [r.name for r in pool.to_probe()] == ["a"]
        await pool.probed(relay("a"), SENT)
        assert pool.state("a") == "half_open" and pool.any_up()
        trial = await pool.acquire("example.org", set(), until=2.0)
        assert trial is not None and trial.relay == "a"
        assert pool.choose("example.org", set()) is None  # one trial at a time
        await pool.release(trial, SENT)
        assert pool.state("a") == "healthy"
        reports = {r.name: r for r in pool.take_reports()}
        assert (reports["a"].sent, reports["a"].deferred, reports["a"].state) == (1, 2, "healthy")
        assert reports["b"].state == "failed" and reports["b"].state_changed
        assert reports["b"].last_error == DENIED.reply

    asyncio.run(main())


def test_a_domain_throttle_holds_beside_the_relays() -> None:
    clock = Clock()

    async def main() -> None:
        pool = RelayPool([relay("a")], domain_limits={"gmail.com": Limit(10.0, 1)}, clock=clock)
        slot = pool.choose("gmail.com", set())
        assert slot is not None
        assert not pool.domain_ready("gmail.com") and pool.domain_room("gmail.com") == 0
        assert pool.choose("gmail.com", set()) is None
        assert pool.choose("example.org", set()) is not None  # other domains go on
        await pool.release(slot, SENT)
        assert not pool.domain_ready("gmail.com")  # the connection is free, the token is not
        clock.now = 0.1
        assert pool.domain_ready("gmail.com")

    asyncio.run(main())


def test_an_update_keeps_the_state_of_unchanged_relays() -> None:
    async def main() -> None:
        pool = RelayPool([relay("a"), relay("b")], policy=BreakerPolicy(threshold=1))
        slot = pool.choose("x.org", {"b"})
        assert slot is not None
        await pool.release(slot, REFUSED)
        stale = pool.update([relay("a"), relay("b", 5), relay("c")])
        assert pool.names == ["a", "b", "c"] and pool.state("a") == "open"
        assert stale == []  # "b" had no idle session

    asyncio.run(main())
