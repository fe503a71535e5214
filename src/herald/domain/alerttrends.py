"""Counter readings remembered across alert evaluations, turned into changes over a window.

Pure: times are seconds on any monotonic clock, passed in by the caller.
A series that goes down (a node restarted and counts from zero again)
starts over from that reading.
"""

from __future__ import annotations

from collections import deque


class Trends:
    """Readings of named counters and gauges over the last ``window`` seconds."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._series: dict[str, deque[tuple[float, float]]] = {}
        self._rose: dict[str, float] = {}

    def record(self, name: str, value: float, *, at: float, counter: bool = True) -> None:
        """Remember ``value`` of ``name`` at time ``at``; keeps one reading older
        than the window as the baseline. A ``counter`` that went down restarts."""
        series = self._series.setdefault(name, deque())
        if series:
            last = series[-1][1]
            if counter and value < last:
                series.clear()
            elif value > last:
                self._rose[name] = at
        else:
            # Unknown before now: count it as having just moved.
            self._rose[name] = at
        series.append((at, value))
        while len(series) >= 2 and series[1][0] <= at - self.window:
            series.popleft()

    def forget_except(self, names: set[str]) -> None:
        """Drop every series not in ``names`` (nodes that left, relays removed)."""
        for name in set(self._series) - names:
            del self._series[name]
            self._rose.pop(name, None)

    def change(self, name: str) -> float | None:
        """How much ``name`` moved over the window (or the history held so far);
        None with fewer than two readings."""
        series = self._series.get(name)
        if not series or len(series) < 2:
            return None
        return series[-1][1] - series[0][1]

    def covers(self, name: str, *, at: float) -> bool:
        """Whether the history of ``name`` reaches back a whole window before ``at``."""
        series = self._series.get(name)
        return bool(series) and series[0][0] <= at - self.window  # type: ignore[index]

    def grew_all_window(self, name: str, *, at: float) -> bool:
        """A whole window of history, non-zero at its start, and higher now."""
        series = self._series.get(name)
        if not series or not self.covers(name, at=at):
            return False
        return 0 < series[0][1] < series[-1][1]

    def quiet_for(self, name: str, *, at: float) -> float | None:
        """Seconds since ``name`` last went up (None if never read)."""
        rose = self._rose.get(name)
        return None if rose is None else at - rose
