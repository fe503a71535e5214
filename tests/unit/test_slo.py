"""SLO arithmetic: buckets, percentiles, uptime, error budget and burn rate, known answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from herald.domain import slo
from herald.domain.slo import Tally
from herald.errors import InvalidInput


def tally(ok: int, failed: int = 0, latency_ms: float | None = 40.0) -> Tally:
    t = Tally()
    for _ in range(ok):
        t.add(ok=True, latency_ms=latency_ms)
    for _ in range(failed):
        t.add(ok=False, latency_ms=latency_ms)
    return t


def test_it_counts_a_latency_on_a_bound_in_the_bucket_below_it() -> None:
    assert slo.bucket_of(0.2) == 0
    assert slo.bucket_of(1) == 0
    assert slo.bucket_of(1.01) == 1
    assert slo.bucket_of(50) == slo.BUCKETS_MS.index(50)
    assert slo.bucket_of(10**9) == len(slo.BUCKETS_MS)


def test_it_interpolates_percentiles_inside_the_bucket_of_their_rank() -> None:
    t = tally(90, latency_ms=40)  # bucket (30, 50]
    t.merge(tally(10, latency_ms=400))  # bucket (300, 500]
    assert slo.percentile(t.buckets, 0.50) == pytest.approx(30 + 20 * 50 / 90)
    assert slo.percentile(t.buckets, 0.95) == pytest.approx(400)
    assert slo.percentile(t.buckets, 0.99) == pytest.approx(480)


def test_it_has_no_percentile_without_latencies() -> None:
    assert slo.percentile(tally(3, latency_ms=None).buckets, 0.5) is None
    assert slo.percentile(Tally().buckets, 0.99) is None


def test_it_answers_the_largest_bound_for_latencies_beyond_it() -> None:
    assert slo.percentile(tally(5, latency_ms=10**6).buckets, 0.5) == slo.BUCKETS_MS[-1]


def test_it_gives_the_same_answer_from_merged_parts_as_from_the_whole() -> None:
    latencies = [(i % 7 != 0, float(i * 13 % 900)) for i in range(500)]
    whole = slo.tally_of(latencies)
    merged = Tally()
    for start in range(0, 500, 60):
        merged.merge(slo.tally_of(latencies[start : start + 60]))
    assert merged == whole
    assert slo.figures(merged, 99.9) == slo.figures(whole, 99.9)


def test_it_burns_exactly_the_budget_at_the_slo() -> None:
    figures = slo.figures(tally(999, 1), 99.9)
    assert figures.uptime_pct == pytest.approx(99.9)
    assert figures.error_rate == pytest.approx(0.001)
    assert figures.burn_rate == pytest.approx(1.0)
    assert figures.budget_left_pct == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    ("ok", "failed", "target", "burn", "left"),
    [
        (1000, 0, 99.9, 0.0, 100.0),
        (998, 2, 99.9, 2.0, -100.0),
        (995, 5, 99.0, 0.5, 50.0),
        (9999, 1, 99.99, 1.0, 0.0),
        (998, 2, 0.999, 2.0, -100.0),  # a fraction means the same as a percentage
    ],
)
def test_it_computes_burn_rate_and_budget_left(
    ok: int, failed: int, target: float, burn: float, left: float
) -> None:
    figures = slo.figures(tally(ok, failed), target)
    assert figures.burn_rate == pytest.approx(burn)
    assert figures.budget_left_pct == pytest.approx(left, abs=1e-6)


def test_it_has_no_figures_without_probes() -> None:
    figures = slo.figures(Tally(), 99.9)
    assert figures.probes == 0
    assert figures.uptime_pct is figures.burn_rate is figures.budget_left_pct is None


@pytest.mark.parametrize("target", [0, 100, 150, -1])
def test_it_refuses_an_slo_outside_zero_to_a_hundred(target: float) -> None:
    with pytest.raises(InvalidInput):
        slo.budget_fraction(target)


def test_it_probes_the_default_endpoints_and_names_extra_urls_without_secrets() -> None:
    targets = slo.endpoint_targets(
        "https://mail.example.org/",
        "shop=https://shop.example.org/health, https://bob:pw@api.example.org:8443/ping?key=k",
    )
    assert [(t.name, t.url) for t in targets] == [
        ("/healthz", "https://mail.example.org/healthz"),
        ("/readyz", "https://mail.example.org/readyz"),
        ("/api/v1/openapi.json", "https://mail.example.org/api/v1/openapi.json"),
        ("shop", "https://shop.example.org/health"),
        ("api.example.org:8443/ping", "https://bob:pw@api.example.org:8443/ping?key=k"),
    ]


@pytest.mark.parametrize("extra", ["ftp://example.org/x", "name=mailto:a@b", "just-words"])
def test_it_refuses_a_probe_url_that_is_not_http(extra: str) -> None:
    with pytest.raises(InvalidInput):
        slo.endpoint_targets("http://127.0.0.1:8025", extra)


def test_it_knows_three_windows_and_the_start_of_an_hour() -> None:
    assert slo.parse_window("24h") == timedelta(hours=24)
    assert slo.parse_window("30d") == timedelta(days=30)
    with pytest.raises(InvalidInput):
        slo.parse_window("1y")
    at = datetime(2026, 3, 1, 13, 47, 12, 5, tzinfo=UTC)
    assert slo.hour_of(at) == datetime(2026, 3, 1, 13, tzinfo=UTC)


def test_it_keeps_stored_errors_to_one_short_line() -> None:
    assert slo.short_error("connect:\n  refused\t(111)") == "connect: refused (111)"
    long = slo.short_error("x" * 1000)
    assert len(long) == slo.MAX_ERROR_CHARS
    assert long.endswith("…")
