"""Factories for test data and a helper that runs a worker until a condition holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, insert, select, update

from herald.delivery.pool import PoolRelay
from herald.delivery.worker import Worker, WorkerOptions
from herald.domain.breaker import BreakerPolicy
from herald.domain.clock import utcnow
from herald.domain.relays import RelayConfig, parse_relay_url
from herald.services import campaigns, lists
from herald.store.tables import deliveries, subscribers, subscriptions

SECRET = "test-secret"


def make_list(engine: Engine, name: str = "News", *, double: bool = False) -> int:
    return lists.create_list(engine, name, double_optin=double)


def add_subscribers(
    engine: Engine, list_id: int, count: int, *, start: int = 1, status: str = "confirmed"
) -> list[str]:
    """Insert ``count`` subscribers user{n}@example.com subscribed to ``list_id``."""
    now = utcnow()
    emails = [f"user{n}@example.com" for n in range(start, start + count)]
    with engine.begin() as conn:
        conn.execute(
            insert(subscribers),
            [
                {
                    "email": e,
                    "name": f"User {n}",
                    "attribs": {"city": f"City{n}"},
                    "status": "enabled",
                    "created_at": now,
                    "updated_at": now,
                }
                for n, e in enumerate(emails, start)
            ],
        )
        ids = dict(
            conn.execute(
                select(subscribers.c.email, subscribers.c.id).where(subscribers.c.email.in_(emails))
            ).all()
        )
        conn.execute(
            insert(subscriptions),
            [
                {
                    "list_id": list_id,
                    "subscriber_id": ids[e],
                    "status": status,
                    "created_at": now,
                    "updated_at": now,
                }
                for e in emails
            ],
        )
    return emails


def make_campaign(
    engine: Engine,
    *,
    list_name: str = "News",
    subject: str = "Hello {{ subscriber.name }}",
    html: str = "<p>Hi {{ subscriber.name }} from {{ subscriber.attribs.city }}</p>"
    '<p><a href="{{ unsubscribe_url }}">unsubscribe</a></p>',
    text: str | None = None,
    start: bool = True,
) -> int:
    draft = campaigns.CampaignDraft(
        name="Test campaign",
        subject=subject,
        html=html,
        text=text,
        from_addr="Herald Test <news@herald.test>",
        list_names=(list_name,),
    )
    campaign_id = campaigns.create_campaign(engine, draft)
    if start:
        campaigns.change_status(engine, campaign_id, "start")
    return campaign_id


def options(**changes: Any) -> WorkerOptions:
    base: dict[str, Any] = {
        "node_name": "test-node",
        "secret": SECRET,
        "base_url": "http://herald.test",
        "lease_ttl": 5.0,
        "batch_size": 200,
        "concurrency": 4,
        "max_attempts": 4,
        "retry_base_seconds": 0.05,
        "idle_poll_seconds": 0.02,
        "keeper_interval": 0.1,
        "breaker": BreakerPolicy(threshold=3, cooldown=0.2, failed_cooldown=1.0),
    }
    base.update(changes)
    return WorkerOptions(**base)


def relay(url: str, name: str = "sink") -> RelayConfig:
    return parse_relay_url(url, name=name)


def run_worker_until(
    engine: Engine,
    relays: list[RelayConfig] | list[PoolRelay],
    done: Callable[[], bool],
    *,
    timeout: float = 60.0,
    opts: WorkerOptions | None = None,
    during: Callable[[Worker], None] | None = None,
) -> Worker:
    """Run a worker in this thread until ``done()`` holds; fail after ``timeout`` s.

    ``during``, if given, is called (in a thread) once the worker runs, for a
    test to break things while it sends.
    """
    worker = Worker(engine, relays, opts or options())
    asyncio.run(drive(worker, done, timeout=timeout, during=during))
    return worker


async def drive(
    worker: Worker,
    done: Callable[[], bool],
    *,
    timeout: float = 60.0,
    during: Callable[[Worker], None] | None = None,
) -> None:
    """Run ``worker`` in the current loop until ``done()`` holds; fail after ``timeout`` s."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    deadline = time.monotonic() + timeout
    if during is not None:
        await asyncio.to_thread(during, worker)
    while not await asyncio.to_thread(done):
        if task.done():
            task.result()
            raise AssertionError("worker stopped early")
        if time.monotonic() > deadline:
            stop.set()
            await task
            raise AssertionError(f"condition not reached within {timeout}s")
        await asyncio.sleep(0.05)
    stop.set()
    await task


def campaign_status(engine: Engine, campaign_id: int) -> str:
    return str(campaigns.campaign_report(engine, campaign_id)["status"])


def finished(engine: Engine, campaign_id: int) -> Callable[[], bool]:
    return lambda: campaign_status(engine, campaign_id) == "finished"


def delivery_rows(engine: Engine, campaign_id: int) -> list[dict[str, Any]]:
    with engine.begin() as conn:
        rows = conn.execute(
            select(deliveries, subscribers.c.email)
            .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
            .where(deliveries.c.campaign_id == campaign_id)
        ).mappings()
        return [dict(r) for r in rows]


def set_subscription_status(engine: Engine, email: str, status: str) -> None:
    with engine.begin() as conn:
        sub_id = conn.scalar(select(subscribers.c.id).where(subscribers.c.email == email))
        conn.execute(
            update(subscriptions)
            .where(subscriptions.c.subscriber_id == sub_id)
            .values(status=status)
        )
