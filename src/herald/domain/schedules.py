"""When a scheduled job is due: a fixed interval ("6h") or a 5-field cron expression (UTC)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cronsim import CronSim, CronSimError

from herald.errors import InvalidInput

_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# A job that never ran waits this long after its node starts (at most one
# interval): a test or a node that starts and stops at once runs nothing.
FIRST_RUN_DELAY = timedelta(minutes=10)


def parse_interval(text: str) -> timedelta:
    """``"90"`` or ``"90s"``, ``"30m"``, ``"6h"``, ``"1d"``, ``"2w"`` → a positive timedelta.

    Raises InvalidInput for anything else.
    """
    match = _INTERVAL.match(text)
    if not match:
        raise InvalidInput(f"{text!r} is not an interval such as 30m, 6h or 1d")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise InvalidInput(f"{text!r}: an interval must be longer than zero")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Schedule:
    """Either ``interval`` or ``cron`` (a 5-field expression evaluated in UTC)."""

    text: str
    interval: timedelta | None = None
    cron: str | None = None

    def next_due(self, last_start: datetime | None, *, started: datetime) -> datetime:
        """When the job is next due, given its last recorded start (None: never ran).

        Interval: one interval after the last start; a job that never ran is
        due ``min(interval, FIRST_RUN_DELAY)`` after ``started`` (the node's
        start). Cron: the first matching minute after the last start (a
        missed time is caught up once, not once per miss); never ran: the
        first matching minute after ``started``.
        """
        if self.interval is not None:
            if last_start is None:
                return started + min(self.interval, FIRST_RUN_DELAY)
            return last_start + self.interval
        assert self.cron is not None
        after = _utc(last_start if last_start is not None else started)
        return next(CronSim(self.cron, after))


def parse_schedule(text: str) -> Schedule:
    """An interval (``"6h"``) or a cron expression (``"0 3 * * *"``, UTC).

    Raises InvalidInput naming what is wrong.
    """
    text = text.strip()
    if len(text.split()) == 5:
        try:
            CronSim(text, datetime(2000, 1, 1, tzinfo=UTC))
        except CronSimError as exc:
            raise InvalidInput(f"{text!r} is not a valid cron expression: {exc}") from exc
        return Schedule(text=text, cron=text)
    try:
        return Schedule(text=text, interval=parse_interval(text))
    except InvalidInput:
        raise InvalidInput(
            f"{text!r} is neither an interval (30m, 6h, 1d) nor a 5-field cron expression"
        ) from None


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
