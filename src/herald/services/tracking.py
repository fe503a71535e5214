"""Opens and clicks: recorded to a local spool at once, drained into the database later.

The pixel and the redirect must answer even while the database is down or
slow, so a request only appends one JSON line to this node's spool file (a
write to the operating system, no database round trip); the drainer loop
fsyncs the file in small groups (every `SYNC_SECONDS`), so a machine crash
loses at most that much. The drainer, a loop
in every node, moves the current file aside and inserts its events in
batches; each event carries a random id that is unique in the table, so a
drain interrupted after its commit but before the file was removed inserts
nothing twice when it runs again. A node that stops leaves its spool for its
next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from herald.domain.clock import utcnow
from herald.errors import HeraldError
from herald.services import idempotency
from herald.store import tracking as store

log = logging.getLogger(__name__)

BATCH = 1000
DRAIN_SECONDS = 1.0
SYNC_SECONDS = 0.05
PURGE_SECONDS = 600.0
CURRENT = "current.jsonl"


class Spool:
    """An append-only file of tracking events in ``directory`` (one node's own)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file = (directory / CURRENT).open("a", encoding="utf-8")
        self._dirty = False

    def record(
        self,
        kind: str,
        delivery_id: int,
        campaign_id: int,
        *,
        url: str | None = None,
        user_agent: str | None = None,
        ip: str | None = None,
    ) -> None:
        event = {
            "event_id": secrets.token_hex(16),
            "kind": kind,
            "delivery_id": delivery_id,
            "campaign_id": campaign_id,
            "url": url,
            "user_agent": user_agent[:255] if user_agent else None,
            "ip": ip,
            "at": utcnow().isoformat(),
        }
        line = json.dumps(event, separators=(",", ":")) + "\n"
        with self._lock:
            if self._file.closed:  # a late request after the drainer closed it
                self._file = (self.directory / CURRENT).open("a", encoding="utf-8")
            self._file.write(line)
            self._file.flush()
            self._dirty = True

    def sync(self) -> None:
        """fsync what was written since the last sync (one fsync for the group).

        The lock is not held during the fsync, so recording never waits for a disk.
        """
        with self._lock:
            if not self._dirty or self._file.closed:
                return
            self._dirty = False
            fd = os.dup(self._file.fileno())  # stays valid if the file is rotated meanwhile
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def rotate(self) -> list[Path]:
        """Move the current file aside (if it holds events); return every file to drain."""
        full = None
        with self._lock:
            if self._file.tell() > 0:
                full = self._file
                name = f"batch-{utcnow().strftime('%Y%m%dT%H%M%S%f')}.jsonl"
                os.replace(self.directory / CURRENT, self.directory / name)
                self._file = (self.directory / CURRENT).open("a", encoding="utf-8")
                self._dirty = False
        if full is not None:  # fsync outside the lock: recording never waits for the disk
            os.fsync(full.fileno())
            full.close()
        return sorted(self.directory.glob("batch-*.jsonl"))

    def backlog(self) -> int:
        """Bytes of events not yet in the database."""
        return sum(p.stat().st_size for p in self.directory.glob("*.jsonl"))

    def close(self) -> None:
        with self._lock:
            self._file.close()


def drain(engine: Engine, spool: Spool) -> int:
    """Insert every spooled event into the database; returns how many were read.

    Raises the database's errors: the files stay for the next attempt.
    """
    read = 0
    for path in spool.rotate():
        events = _read(path)
        for start in range(0, len(events), BATCH):
            with engine.begin() as conn:
                store.insert_events(conn, events[start : start + BATCH])
        path.unlink()
        read += len(events)
    return read


async def drain_spool(engine: Engine, spool: Spool, stop: asyncio.Event) -> None:
    """Drain ``spool`` every `DRAIN_SECONDS` until ``stop``, then once more and close it.

    Database errors are logged and retried: the events wait in their files.
    Every `PURGE_SECONDS` it also forgets idempotency keys past their day
    (the other upkeep of the HTTP side; deleting them twice is harmless).
    """
    syncer = asyncio.create_task(_sync_often(spool, stop))
    purged_at = 0.0
    while True:
        if time.monotonic() - purged_at > PURGE_SECONDS:  # idempotency keys past their day
            purged_at = time.monotonic()
            with contextlib.suppress(HeraldError, SQLAlchemyError):
                await asyncio.to_thread(idempotency.purge, engine)
        stopping = stop.is_set()
        try:
            await asyncio.to_thread(drain, engine, spool)
        except (HeraldError, SQLAlchemyError) as exc:
            log.warning("tracking events wait in the spool (%s)", str(exc).splitlines()[0][:200])
        if stopping:
            await syncer
            spool.close()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=DRAIN_SECONDS)


async def _sync_often(spool: Spool, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.to_thread(spool.sync)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=SYNC_SECONDS)
    await asyncio.to_thread(spool.sync)


def anonymise_ip(address: str | None, mode: str) -> str | None:
    """Keep all, part (IPv4 /24, IPv6 /48) or none of a reader's address."""
    if not address or mode == "none":
        return None
    if mode == "full":
        return address[:64]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


def _read(path: Path) -> list[dict[str, Any]]:
    events = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            try:
                event = json.loads(line)
                event["at"] = datetime.fromisoformat(event["at"])
                events.append(event)
            except (ValueError, KeyError, TypeError):
                # A line cut short by a crash mid-write: skip it, keep the rest.
                log.warning("skipping unreadable tracking event %s:%d", path.name, number)
    return events


def campaign_counts(engine: Engine, campaign_id: int) -> dict[str, dict[str, int]]:
    with engine.begin() as conn:
        return store.counts(conn, campaign_id)
