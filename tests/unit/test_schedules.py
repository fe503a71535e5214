"""Schedules: intervals and cron expressions, and when a job is next due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from herald.domain.schedules import FIRST_RUN_DELAY, parse_interval, parse_schedule
from herald.errors import InvalidInput

T0 = datetime(2026, 3, 4, 10, 17, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("30m", 1800), ("6h", 21600), ("1d", 86400), ("2w", 1209600)],
)
def test_it_reads_intervals_with_units(text: str, seconds: int) -> None:
    assert parse_interval(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0", "0s", "-1h", "6 hours", "h", "1y"])
def test_it_refuses_what_is_not_a_positive_interval(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_interval(text)


def test_it_runs_an_interval_one_interval_after_the_last_start() -> None:
    schedule = parse_schedule("6h")
    assert schedule.next_due(T0, started=T0 + timedelta(days=9)) == T0 + timedelta(hours=6)


def test_it_waits_a_little_after_the_node_starts_for_a_job_that_never_ran() -> None:
    assert parse_schedule("1s").next_due(None, started=T0) == T0 + timedelta(seconds=1)
    assert parse_schedule("1d").next_due(None, started=T0) == T0 + FIRST_RUN_DELAY


def test_it_runs_a_cron_schedule_at_the_next_matching_minute_in_utc() -> None:
    schedule = parse_schedule("0 3 * * *")
    assert schedule.cron == "0 3 * * *"
    assert schedule.next_due(T0, started=T0) == datetime(2026, 3, 5, 3, 0, tzinfo=UTC)
    # Never ran: the first 03:00 after the node started.
    assert schedule.next_due(None, started=T0) == datetime(2026, 3, 5, 3, 0, tzinfo=UTC)


def test_it_catches_up_a_missed_cron_time_once() -> None:
    """A node down at 03:00 runs the backup when it is back, then again the next night."""
    schedule = parse_schedule("0 3 * * *")
    last = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
    assert schedule.next_due(last, started=T0) == datetime(2026, 3, 2, 3, 0, tzinfo=UTC) < T0
    assert schedule.next_due(T0, started=T0) == datetime(2026, 3, 5, 3, 0, tzinfo=UTC)


def test_it_treats_a_naive_last_start_as_utc() -> None:
    naive = datetime(2026, 3, 4, 2, 59)
    assert parse_schedule("0 3 * * *").next_due(naive, started=T0) == datetime(
        2026, 3, 4, 3, 0, tzinfo=UTC
    )


@pytest.mark.parametrize("text", ["61 * * * *", "* * * *", "0 3 * * * *", "every day", "@daily"])
def test_it_refuses_an_unreadable_schedule(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_schedule(text)
