"""``herald check``'s judgement: observations and thresholds → Nagios state and status line."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest

from herald.domain.nagios import (
    HttpProbe,
    Observation,
    PerfDatum,
    State,
    Thresholds,
    evaluate,
    exceeded,
    make_thresholds,
    status_line,
    unknown,
)
from herald.errors import InvalidInput

HEALTHY = Observation(
    db_seconds=0.0021,
    running_campaigns=1,
    live_workers=2,
    pending=40,
    oldest_pending_age=3.25,
    relay_states=(("ses", "healthy"), ("own", "healthy")),
)
LIMITS = Thresholds(warn_pending=100, crit_pending=1000, warn_age=60, crit_age=300)
# label=value[UOM];warn;crit;min;max with empty trailing fields dropped
PERFDATUM = re.compile(r"^[a-z_]+=-?\d+(\.\d+)?(s|%|B)?(;(-?\d+(\.\d+)?)?){0,4}$")


def perfdata(line: str) -> dict[str, str]:
    _, _, data = line.partition(" | ")
    return dict(item.split("=", 1) for item in data.split())


def test_it_is_ok_when_everything_is_within_limits() -> None:
    verdict = evaluate(HEALTHY, LIMITS)

    assert verdict.state is State.OK
    line = status_line(verdict)
    assert line.startswith("HERALD OK - 1 campaign running, 2 live workers, 40 pending, 2/2 relays")
    assert perfdata(line) == {
        "pending": "40;100;1000;0",
        "oldest_pending_age": "3.25s;60;300;0",
        "running_campaigns": "1;;;0",
        "live_workers": "2;;;0",
        "relays_up": "2;;;0;2",
        "db_time": "0.0021s;;;0",
    }


def test_it_prints_exactly_one_line_of_well_formed_perfdata() -> None:
    line = status_line(evaluate(HEALTHY, LIMITS))

    assert "\n" not in line
    assert line.count(" | ") == 1
    for item in line.partition(" | ")[2].split():
        assert PERFDATUM.match(item), item


@pytest.mark.parametrize(
    ("pending", "state"),
    [(100, State.OK), (101, State.WARNING), (1000, State.WARNING), (1001, State.CRITICAL)],
)
def test_it_judges_outbox_depth_above_the_thresholds(pending: int, state: State) -> None:
    obs = replace(HEALTHY, pending=pending)

    verdict = evaluate(obs, LIMITS)

    assert verdict.state is state
    if state is not State.OK:
        assert f"{pending} messages waiting" in status_line(verdict)


@pytest.mark.parametrize(
    ("age", "state"),
    [(None, State.OK), (60.0, State.OK), (60.5, State.WARNING), (301.0, State.CRITICAL)],
)
def test_it_judges_the_oldest_pending_age(age: float | None, state: State) -> None:
    obs = replace(HEALTHY, oldest_pending_age=age)

    assert evaluate(obs, LIMITS).state is state


def test_it_leaves_unset_thresholds_unchecked() -> None:
    obs = replace(HEALTHY, pending=10**9, oldest_pending_age=1e6)

    verdict = evaluate(obs, Thresholds())

    assert verdict.state is State.OK
    assert perfdata(status_line(verdict))["pending"] == "1000000000;;;0"


def test_it_is_critical_when_a_campaign_runs_with_no_live_worker() -> None:
    obs = replace(HEALTHY, live_workers=0)

    line = status_line(evaluate(obs, LIMITS))

    assert line.startswith("HERALD CRITICAL - no live worker while 1 campaign runs;")


def test_it_is_ok_with_no_worker_while_nothing_runs() -> None:
    obs = replace(HEALTHY, live_workers=0, running_campaigns=0)

    assert evaluate(obs, LIMITS).state is State.OK


def test_it_is_critical_when_the_database_cannot_be_used() -> None:
    verdict = evaluate(
        Observation(database_problem="database unreachable: OperationalError"), LIMITS
    )

    assert verdict.state is State.CRITICAL
    assert status_line(verdict) == "HERALD CRITICAL - database unreachable: OperationalError"


def test_it_warns_when_some_relays_are_down_and_is_critical_when_all_are() -> None:
    some = replace(HEALTHY, relay_states=(("ses", "open"), ("own", "healthy")))
    every = replace(HEALTHY, relay_states=(("ses", "open"), ("own", "failed")))

    assert evaluate(some, LIMITS).state is State.WARNING
    assert "relay ses open" in status_line(evaluate(some, LIMITS))
    assert evaluate(every, LIMITS).state is State.CRITICAL
    assert "all relays down (ses open, own failed)" in status_line(evaluate(every, LIMITS))


def test_a_half_open_relay_counts_as_up() -> None:
    obs = replace(HEALTHY, relay_states=(("ses", "half_open"),))

    assert evaluate(obs, LIMITS).state is State.OK


def test_it_puts_the_worst_problem_first() -> None:
    obs = replace(HEALTHY, pending=500, relay_states=(("a", "open"), ("b", "failed")))

    verdict = evaluate(obs, LIMITS)

    assert verdict.state is State.CRITICAL
    assert verdict.problems[0].startswith("all relays down")
    assert verdict.problems[1] == "500 messages waiting in the outbox"


@pytest.mark.parametrize(
    ("probe", "state", "text"),
    [
        (HttpProbe("http://n1/readyz", 200, 0.01), State.OK, None),
        (
            HttpProbe("http://n1/readyz", 503, 0.02, "draining"),
            State.CRITICAL,
            "http://n1/readyz answered 503 (draining)",
        ),
        (
            HttpProbe("http://n1/readyz", None, None, "connection refused"),
            State.CRITICAL,
            "http://n1/readyz unreachable: connection refused",
        ),
    ],
)
def test_it_judges_the_url_answer(probe: HttpProbe, state: State, text: str | None) -> None:
    verdict = evaluate(replace(HEALTHY, http=probe), LIMITS)

    assert verdict.state is state
    if text:
        assert text in status_line(verdict)
    if probe.seconds is not None:
        assert "http_time" in perfdata(status_line(verdict))


def test_text_cannot_break_the_status_line() -> None:
    obs = Observation(database_problem="line one\nline two | fake=1")

    line = status_line(evaluate(obs, LIMITS))

    assert line == "HERALD CRITICAL - line one line two fake=1"


def test_unknown_has_no_perfdata() -> None:
    assert status_line(unknown("bad arguments")) == "HERALD UNKNOWN - bad arguments"
    assert unknown("x").state == 3


def test_the_states_are_the_plugin_exit_codes() -> None:
    assert [int(s) for s in (State.OK, State.WARNING, State.CRITICAL, State.UNKNOWN)] == [
        0,
        1,
        2,
        3,
    ]


def test_thresholds_are_exceeded_only_above_them() -> None:
    assert exceeded(10, 10, 20) is State.OK
    assert exceeded(10.1, 10, 20) is State.WARNING
    assert exceeded(20.1, 10, 20) is State.CRITICAL
    assert exceeded(20.1, None, None) is State.OK


def test_it_refuses_a_warning_above_its_critical() -> None:
    with pytest.raises(InvalidInput, match="--warn-age 10 is above --crit-age"):
        make_thresholds(warn_age=10, crit_age=5)
    assert make_thresholds(warn_pending=5, crit_pending=5) == Thresholds(5, 5)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_it_refuses_negative_or_non_finite_thresholds(bad: float) -> None:
    with pytest.raises(InvalidInput, match="--crit-pending must be a number"):
        make_thresholds(crit_pending=bad)


def test_perfdata_renders_like_nagios_expects() -> None:
    assert PerfDatum("x", 3).render() == "x=3;;;0"
    assert PerfDatum("t", 0.1234567, "s", 1, 2.5).render() == "t=0.123457s;1;2.5;0"
    assert PerfDatum("r", 1, maximum=3).render() == "r=1;;;0;3"
    assert PerfDatum("n", 1, minimum=None).render() == "n=1"
