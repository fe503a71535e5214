"""Scheduled backups: the cluster duty "backup", its target, and retention.

``duties.last_run(engine, "backup", ok=True)`` is the last successful
scheduled backup (the "backup stale" alert and the metric read it).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from pathlib import Path

from herald.cluster import Duty
from herald.config import Settings
from herald.domain.clock import utcnow
from herald.domain.schedules import parse_schedule
from herald.errors import HeraldError
from herald.runtime import Runtime
from herald.services.backups import create_backup
from herald.services.backuptargets import DirectoryTarget, S3Target, Target, apply_retention

log = logging.getLogger(__name__)

BACKUP_DUTY = "backup"


def backup_dir(settings: Settings) -> Path:
    """Where archives are written (and kept, unless they go to S3)."""
    return settings.backup_dir or settings.data_dir / "backups"


def backup_target(settings: Settings) -> Target:
    """The S3 bucket when ``backup_s3_url`` is set, else the backup directory."""
    if settings.backup_s3_url:
        return S3Target(
            settings.backup_s3_url,
            endpoint=settings.backup_s3_endpoint,
            region=settings.backup_s3_region,
            access_key_id=settings.backup_s3_access_key_id,
            secret_access_key=settings.backup_s3_secret_access_key,
        )
    return DirectoryTarget(backup_dir(settings))


def scheduled_backup(runtime: Runtime) -> str:
    """Take one backup, keep it at the target, apply retention; returns a one-line summary.

    The archive is written into the backup directory under its final name
    only when complete (``services.backups.create_backup``). With an S3
    target it is uploaded, then removed locally whatever happened. Raises
    HeraldError when the backup cannot be written or stored (the run is
    then recorded as failed). A retention failure after a good backup is
    logged and reported in the summary: the backup itself succeeded.
    """
    settings = runtime.settings
    target = backup_target(settings)
    result = create_backup(runtime.engine, backup_dir(settings))
    try:
        where = target.store(result.path)
    finally:
        if not isinstance(target, DirectoryTarget):
            result.path.unlink(missing_ok=True)
    summary = (
        f"{result.path.name} to {where} ({result.size} bytes, "
        f"{sum(result.tables.values())} rows, {result.seconds} s)"
    )
    try:
        dropped = apply_retention(
            target, daily=settings.backup_keep_daily, weekly=settings.backup_keep_weekly
        )
    except (HeraldError, OSError) as exc:
        log.warning("backup retention failed at %s: %s", target.describe(), exc)
        return f"{summary}; retention failed: {exc}"
    return f"{summary}; retention deleted {len(dropped)}"


def backup_duty(runtime: Runtime, *, started: datetime | None = None) -> Duty | None:
    """The "backup" duty when ``backup_schedule`` is set, else None.

    A schedule that never ran is first due as ``Schedule.next_due`` says,
    counted from ``started`` (this node's start).
    """
    text = runtime.settings.backup_schedule.strip()
    if not text:
        return None
    schedule = parse_schedule(text)
    since = started or utcnow()
    backup_target(runtime.settings)  # a bad S3 URL stops the node at start, not at 3 am

    async def run() -> str:
        return await asyncio.to_thread(scheduled_backup, runtime)

    def next_due(last_start: datetime | None) -> datetime:
        return schedule.next_due(last_start, started=since)

    return Duty(BACKUP_DUTY, run, next_due=next_due, record=True)
