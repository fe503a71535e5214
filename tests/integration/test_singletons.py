"""Cluster singletons: a duty runs on one node at a time and moves when its node goes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from herald.cluster import Duty, Singletons
from herald.services import duties


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def _counting(runs: list[str], node: str) -> Callable[[], Awaitable[str]]:
    async def run() -> str:
        runs.append(node)
        return f"ran on {node}"

    return run


def test_it_runs_a_duty_on_one_node_and_moves_it_when_that_node_stops(engine: Engine) -> None:
    runs: list[str] = []

    async def scenario() -> None:
        stops = {name: asyncio.Event() for name in ("a", "b")}
        nodes = {
            name: Singletons(
                engine, name, [Duty("tick", _counting(runs, name), interval=0.05)], ttl=0.6
            )
            for name in stops
        }
        tasks = {name: asyncio.create_task(nodes[name].run(stops[name])) for name in stops}
        await _until(lambda: len(runs) >= 5, 10, "five runs")
        first = runs[0]
        assert set(runs) == {first}, "both nodes ran the duty at once"
        stops[first].set()
        await tasks[first]
        other = "b" if first == "a" else "a"
        await _until(lambda: other in runs, 10, "the other node to take over")
        stops[other].set()
        await tasks[other]

    asyncio.run(scenario())
    run = duties.last_run(engine, "tick", ok=True)
    assert run is not None and run.detail.startswith("ran on ")


def test_it_keeps_the_schedule_when_the_holder_changes(engine: Engine) -> None:
    """A node taking over reads the last recorded start: it does not run an hourly job again."""
    runs: list[str] = []

    async def node(name: str) -> None:
        stop = asyncio.Event()
        singletons = Singletons(
            engine, name, [Duty("hourly", _counting(runs, name), interval=3600)], ttl=0.6
        )
        task = asyncio.create_task(singletons.run(stop))
        await _until(lambda: "hourly" in singletons.held, 10, f"{name} to hold the lease")
        await asyncio.sleep(0.3)  # several ticks while holding: it must not run twice
        stop.set()
        await task

    asyncio.run(node("a"))
    asyncio.run(node("b"))
    assert runs == ["a"]


def test_it_records_a_failing_duty_and_keeps_going(engine: Engine) -> None:
    attempts: list[int] = []

    async def broken() -> str:
        attempts.append(1)
        raise RuntimeError("disk full")

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            Singletons(engine, "a", [Duty("broken", broken, interval=0.05)], ttl=0.6).run(stop)
        )
        await _until(lambda: len(attempts) >= 2, 10, "two attempts")
        stop.set()
        await task

    asyncio.run(scenario())
    failed = duties.last_run(engine, "broken", ok=False)
    assert failed is not None and failed.detail == "RuntimeError: disk full"
    assert duties.last_run(engine, "broken", ok=True) is None


def test_it_lets_only_one_of_two_racing_nodes_take_a_free_lease(engine: Engine) -> None:
    assert duties.take_lease(engine, "race", holder="a", ttl=30)
    assert not duties.take_lease(engine, "race", holder="b", ttl=30)
    assert duties.take_lease(engine, "race", holder="a", ttl=30)  # renewing
    duties.drop_lease(engine, "race", holder="a")
    assert duties.take_lease(engine, "race", holder="b", ttl=30)
    [lease] = duties.list_leases(engine)
    assert lease["holder"] == "b"
    assert lease["expires_at"] > datetime.now(UTC) + timedelta(seconds=20)
