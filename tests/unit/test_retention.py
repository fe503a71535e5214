"""Backup retention: the newest of each of the last N days and M ISO weeks, and the newest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from herald.domain.backupformat import backup_filename
from herald.domain.retention import backup_time, backups_to_keep


def _backups(*times: datetime) -> list[tuple[str, datetime]]:
    return [(backup_filename(t), t) for t in times]


def _at(day: int, hour: int = 3) -> datetime:
    return datetime(2026, 3, day, hour, 0, tzinfo=UTC)  # 2026-03-02 is a Monday


def test_it_keeps_the_newest_backup_of_each_of_the_last_days() -> None:
    found = _backups(*(_at(d, h) for d in range(1, 11) for h in (3, 15)))
    keep = backups_to_keep(found, daily=3, weekly=0)
    assert keep == {backup_filename(_at(d, 15)) for d in (8, 9, 10)}


def test_it_keeps_the_newest_backup_of_each_of_the_last_iso_weeks() -> None:
    # Daily backups from Sunday 1 March to Tuesday 24 March 2026.
    found = _backups(*(_at(d) for d in range(1, 25)))
    keep = backups_to_keep(found, daily=0, weekly=3)
    # Weeks end on Sundays 15 and 22 March; the current week's newest is the 24th.
    assert keep == {backup_filename(_at(d)) for d in (24, 22, 15)}


def test_it_keeps_the_union_of_daily_and_weekly_choices() -> None:
    found = _backups(*(_at(d) for d in range(1, 25)))
    keep = backups_to_keep(found, daily=7, weekly=4)
    expected_days = set(range(18, 25)) | {15, 8}
    assert keep == {backup_filename(_at(d)) for d in expected_days}


def test_it_always_keeps_the_newest_backup() -> None:
    found = _backups(_at(1), _at(2), _at(3))
    assert backups_to_keep(found, daily=0, weekly=0) == {backup_filename(_at(3))}
    assert backups_to_keep([], daily=7, weekly=4) == set()


def test_it_counts_only_days_that_have_a_backup() -> None:
    """After a pause in the schedule the old backups are still the last N days with one."""
    found = _backups(_at(1), _at(2), _at(3), _at(1) + timedelta(days=60))
    keep = backups_to_keep(found, daily=3, weekly=0)
    assert keep == {backup_filename(t) for t in (_at(2), _at(3), _at(1) + timedelta(days=60))}


def test_it_reads_the_time_only_from_its_own_file_names() -> None:
    assert backup_time("herald-backup-20260301T030000Z.tar") == _at(1)
    for name in (
        "herald-backup-20260301T030000Z.tar.partial",
        "notes.txt",
        "herald-backup-20261301T030000Z.tar",
        "my-herald-backup-20260301T030000Z.tar",
    ):
        assert backup_time(name) is None
