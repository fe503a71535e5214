"""Which backups to keep: the newest of each of the last N days and M ISO weeks."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

# Only files of exactly this shape are Herald's own backups; retention never
# looks at (let alone deletes) anything else in a backup directory or bucket.
BACKUP_NAME = re.compile(r"^herald-backup-(\d{8}T\d{6}Z)\.tar$")


def backup_time(name: str) -> datetime | None:
    """The UTC creation time in a backup's file name; None if it is not a backup's name."""
    match = BACKUP_NAME.match(name)
    if not match:
        return None
    try:
        return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def backups_to_keep(
    backups: Iterable[tuple[str, datetime]], *, daily: int, weekly: int
) -> set[str]:
    """The names to keep among ``(name, created_at)`` pairs.

    1. Newest first, the newest backup is always kept.
    2. Daily: the newest backup of each of the ``daily`` most recent UTC days
       that have a backup (days without one do not count, so a pause in the
       schedule never empties the store).
    3. Weekly: the same for the ``weekly`` most recent ISO weeks.
    A backup may be kept for several reasons; everything not chosen may go.
    """
    ordered = sorted(backups, key=lambda b: (b[1], b[0]), reverse=True)
    keep: set[str] = {ordered[0][0]} if ordered else set()
    days: set[object] = set()
    weeks: set[object] = set()
    for name, created in ordered:
        when = created.astimezone(UTC)
        day, week = when.date(), when.isocalendar()[:2]
        if day not in days and len(days) < daily:
            days.add(day)
            keep.add(name)
        if week not in weeks and len(weeks) < weekly:
            weeks.add(week)
            keep.add(name)
    return keep
