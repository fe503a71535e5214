"""Probe history arithmetic: tallies, latency histograms, uptime, percentiles, error budget.

Pure functions over counts, no I/O. Every latency is counted in the same
fixed buckets (`BUCKETS_MS`), whether it comes from a raw probe result or
from an hourly roll-up, so percentiles over any window are computed the same
way before and after history is compacted: compaction changes how much is
stored, never an answer.

Definitions (per target, or over all endpoints, over one window):

- uptime % = successful probes / probes x 100; error rate = failed / probes;
- error budget = 1 - SLO (99.9 % leaves 0.1 % of probes to fail);
- burn rate = error rate / budget (1.0 spends exactly the budget over the
  window; 14.4 over one hour spends 2 % of a 30-day budget);
- budget left = 1 - burn rate (negative once the budget is overspent);
- a percentile is interpolated linearly inside the bucket holding its rank.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from herald.errors import InvalidInput

# Upper bounds (ms) of the latency buckets; one more bucket holds the rest.
BUCKETS_MS: tuple[float, ...] = (
    1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700,
    1000, 1500, 2000, 3000, 5000, 7000, 10000, 15000, 20000, 30000, 60000,
)  # fmt: skip
WINDOWS: dict[str, timedelta] = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
ENDPOINT = "endpoint"
RELAY = "relay"
MAX_ERROR_CHARS = 200


def bucket_of(latency_ms: float) -> int:
    """Index of the bucket that counts ``latency_ms`` (upper bounds are inclusive)."""
    return bisect.bisect_left(BUCKETS_MS, latency_ms)


def empty_buckets() -> list[int]:
    return [0] * (len(BUCKETS_MS) + 1)


@dataclass
class Tally:
    """Probes counted so far: how many, how many failed, and their latencies."""

    count: int = 0
    failures: int = 0
    buckets: list[int] = field(default_factory=empty_buckets)

    def add(self, *, ok: bool, latency_ms: float | None) -> None:
        """Count one probe result (a result without a latency only counts as a probe)."""
        self.count += 1
        self.failures += 0 if ok else 1
        if latency_ms is not None:
            self.buckets[bucket_of(latency_ms)] += 1

    def merge(self, other: Tally) -> None:
        """Add ``other``'s counts (an hourly roll-up, say) to this tally."""
        self.count += other.count
        self.failures += other.failures
        self.buckets = merge_buckets(self.buckets, other.buckets)


def merge_buckets(a: list[int], b: list[int]) -> list[int]:
    """Bucket-wise sum; a shorter list (written with fewer buckets) is padded with zeros."""
    size = max(len(a), len(b), len(BUCKETS_MS) + 1)
    return [(a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(size)][
        : len(BUCKETS_MS) + 1
    ]


def percentile(buckets: list[int], q: float) -> float | None:
    """The ``q`` quantile (0 < q <= 1) in ms, or None when nothing was counted.

    The rank ``q x total`` falls in one bucket; the answer is interpolated
    between that bucket's bounds. The open-ended last bucket answers its
    lower bound (the largest fixed bound).
    """
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, n in enumerate(buckets):
        if n and seen + n >= rank:
            if index >= len(BUCKETS_MS):
                return float(BUCKETS_MS[-1])
            low = 0.0 if index == 0 else float(BUCKETS_MS[index - 1])
            high = float(BUCKETS_MS[index])
            return low + (high - low) * max(0.0, rank - seen) / n
        seen += n
    return float(BUCKETS_MS[-1])


def budget_fraction(slo: float) -> float:
    """The share of probes allowed to fail under ``slo``, given in percent (99.9)
    or as a fraction (0.999). Raises InvalidInput outside (0, 100)."""
    target = slo / 100 if slo > 1 else slo
    if not 0 < target < 1:
        raise InvalidInput(f"an SLO must be between 0 and 100 %, not {slo}")
    return 1 - target


def burn_rate(tally: Tally, slo: float) -> float | None:
    """Error rate over the error budget; None when no probe was counted."""
    if tally.count == 0:
        return None
    return (tally.failures / tally.count) / budget_fraction(slo)


@dataclass(frozen=True)
class Figures:
    """What a status report shows for one target (or all endpoints) over one window."""

    probes: int
    failures: int
    uptime_pct: float | None
    error_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    burn_rate: float | None
    budget_left_pct: float | None


def figures(tally: Tally, slo: float) -> Figures:
    """Uptime, error rate, percentiles and error budget of ``tally`` against ``slo``."""
    burn = burn_rate(tally, slo)
    error_rate = None if tally.count == 0 else tally.failures / tally.count
    return Figures(
        probes=tally.count,
        failures=tally.failures,
        uptime_pct=None if error_rate is None else 100 * (1 - error_rate),
        error_rate=error_rate,
        p50_ms=percentile(tally.buckets, 0.50),
        p95_ms=percentile(tally.buckets, 0.95),
        p99_ms=percentile(tally.buckets, 0.99),
        burn_rate=burn,
        budget_left_pct=None if burn is None else 100 * (1 - burn),
    )


def hour_of(at: datetime) -> datetime:
    """The start of the hour holding ``at``."""
    return at.replace(minute=0, second=0, microsecond=0)


def parse_window(text: str) -> timedelta:
    """``24h``, ``7d`` or ``30d``. Raises InvalidInput otherwise."""
    try:
        return WINDOWS[text]
    except KeyError:
        raise InvalidInput(f"window must be one of {', '.join(WINDOWS)}, not {text!r}") from None


@dataclass(frozen=True)
class ProbeTarget:
    """An HTTP endpoint to probe: a display name (never a secret) and its URL."""

    name: str
    url: str


def endpoint_targets(base_url: str, extra: str) -> list[ProbeTarget]:
    """The default endpoints under ``base_url`` (``/healthz``, ``/readyz``, the API's
    OpenAPI document) plus ``extra``: a comma list of ``url`` or ``name=url``.

    An unnamed extra URL is named by its host and path, without user name,
    password or query. Raises InvalidInput for a URL that is not http(s).
    """
    base = base_url.rstrip("/")
    targets = [
        ProbeTarget(path, f"{base}{path}")
        for path in ("/healthz", "/readyz", "/api/v1/openapi.json")
    ]
    for item in (part.strip() for part in extra.split(",")):
        if not item:
            continue
        name, sep, url = item.partition("=")
        if not sep or "://" in name:
            name, url = "", item
        url = url.strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput(f"probe URL must be http:// or https://, not {url!r}")
        port = f":{parts.port}" if parts.port else ""
        targets.append(ProbeTarget(name.strip() or f"{parts.hostname}{port}{parts.path}", url))
    return targets


def short_error(text: str) -> str:
    """One line of at most `MAX_ERROR_CHARS` characters, for storage."""
    line = " ".join(text.split())
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 1] + "…"


def tally_of(results: Iterable[tuple[bool, float | None]]) -> Tally:
    """A tally of ``(ok, latency_ms)`` pairs."""
    tally = Tally()
    for ok, latency in results:
        tally.add(ok=ok, latency_ms=latency)
    return tally


FIGURE_COLUMNS = ("probes", "uptime", "errors", "p50", "p95", "p99", "budget")


def figure_cells(f: dict[str, Any]) -> list[str]:
    """A report's figures (`Figures` as a dict) as display text, in `FIGURE_COLUMNS` order."""
    error = None if f["error_rate"] is None else 100 * f["error_rate"]
    return [
        str(f["probes"]),
        _pct(f["uptime_pct"], 3),
        _pct(error, 3),
        _ms(f["p50_ms"]),
        _ms(f["p95_ms"]),
        _ms(f["p99_ms"]),
        _pct(f["budget_left_pct"], 1),
    ]


def _pct(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}ms"
