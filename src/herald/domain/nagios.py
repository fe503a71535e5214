"""``herald check`` decisions: what was observed, against thresholds, as a Nagios plugin says it.

The Nagios plugin conventions, which Icinga, Zabbix (``system.run`` or an
external check), Sensu and others follow too:

- exit status 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the check could not
  tell, e.g. bad arguments);
- one line on standard output, ``SERVICE STATE - text | perfdata``, where
  perfdata is ``label=value[UOM];[warn];[crit];[min];[max]`` separated by
  spaces, for the monitoring system to graph.

A threshold ``N`` is exceeded when the value is *above* ``N`` (a Nagios range
of ``0:N``). Pure: the caller gathers an `Observation`; nothing here does I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from herald.errors import InvalidInput

SERVICE = "HERALD"
RELAY_DOWN_STATES = frozenset({"open", "failed"})
_UNSAFE = re.compile(r"[|\s]+")  # a pipe starts perfdata; a newline ends the status line


class State(IntEnum):
    """A check's result; the value is the plugin's exit status."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


@dataclass(frozen=True)
class Thresholds:
    """Warning and critical limits; None leaves that figure unchecked."""

    warn_pending: float | None = None
    crit_pending: float | None = None
    warn_age: float | None = None
    crit_age: float | None = None


@dataclass(frozen=True)
class HttpProbe:
    """The answer of a node's URL (``--url``): HTTP status, or None and an error."""

    url: str
    status: int | None
    seconds: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Observation:
    """What ``herald check`` saw. With ``database_problem`` set, the rest is unknown."""

    database_problem: str | None = None
    db_seconds: float | None = None
    running_campaigns: int = 0
    live_workers: int = 0
    pending: int = 0  # pending and sending deliveries of running campaigns
    oldest_pending_age: float | None = None  # seconds the oldest due, pending row has waited
    relay_states: tuple[tuple[str, str], ...] = ()  # (name, state) of enabled stored relays
    http: HttpProbe | None = None


@dataclass(frozen=True)
class PerfDatum:
    label: str
    value: float
    uom: str = ""
    warn: float | None = None
    crit: float | None = None
    minimum: float | None = 0
    maximum: float | None = None

    def render(self) -> str:
        """``label=value[UOM];warn;crit;min;max`` with empty trailing fields dropped."""
        fields = [self.warn, self.crit, self.minimum, self.maximum]
        tail = ";".join("" if f is None else _number(f) for f in fields).rstrip(";")
        head = f"{self.label}={_number(self.value)}{self.uom}"
        return f"{head};{tail}" if tail else head


@dataclass(frozen=True)
class Verdict:
    state: State
    problems: tuple[str, ...]
    summary: str
    perfdata: tuple[PerfDatum, ...] = ()


def make_thresholds(
    *,
    warn_pending: float | None = None,
    crit_pending: float | None = None,
    warn_age: float | None = None,
    crit_age: float | None = None,
) -> Thresholds:
    """Thresholds from the four options, each None or a finite number ≥ 0.

    Raises InvalidInput for a negative or non-finite value, or a warning
    threshold above its critical one.
    """
    limits = Thresholds(warn_pending, crit_pending, warn_age, crit_age)
    for name, value in vars(limits).items():
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise InvalidInput(f"--{name.replace('_', '-')} must be a number ≥ 0")
    for name, warn, crit in (
        ("pending", warn_pending, crit_pending),
        ("age", warn_age, crit_age),
    ):
        if warn is not None and crit is not None and warn > crit:
            raise InvalidInput(f"--warn-{name} {_number(warn)} is above --crit-{name}")
    return limits


def exceeded(value: float, warn: float | None, crit: float | None) -> State:
    """CRITICAL above ``crit``, else WARNING above ``warn``, else OK."""
    if crit is not None and value > crit:
        return State.CRITICAL
    if warn is not None and value > warn:
        return State.WARNING
    return State.OK


def evaluate(obs: Observation, limits: Thresholds) -> Verdict:
    """Judge an observation; the verdict's state is the worst finding's.

    1. The database unreachable or its schema behind the code: CRITICAL.
    2. A running campaign and no live worker node: CRITICAL.
    3. Outbox depth and oldest pending age against the thresholds.
    4. Every enabled relay open or failed: CRITICAL; some of them: WARNING.
    5. With ``--url``: anything but a 2xx answer is CRITICAL.
    """
    findings: list[tuple[State, str]] = []
    perf: list[PerfDatum] = []
    if obs.database_problem is not None:
        findings.append((State.CRITICAL, obs.database_problem))
        summary = ""
    else:
        findings += _outbox_findings(obs, limits)
        findings += _relay_findings(obs.relay_states)
        perf += _outbox_perfdata(obs, limits)
        summary = _summary(obs)
    if obs.http is not None:
        findings += _http_findings(obs.http)
        if obs.http.seconds is not None:
            perf.append(PerfDatum("http_time", obs.http.seconds, "s"))
    problems = [(state, text) for state, text in findings if state is not State.OK]
    problems.sort(key=lambda p: -p[0])
    state = max((s for s, _ in problems), default=State.OK)
    return Verdict(state, tuple(text for _, text in problems), summary, tuple(perf))


def unknown(reason: str) -> Verdict:
    """The verdict when the check cannot tell (bad arguments, an unexpected error)."""
    return Verdict(State.UNKNOWN, (reason,), "")


def status_line(verdict: Verdict, *, service: str = SERVICE) -> str:
    """``SERVICE STATE - problems; summary | perfdata`` on one line."""
    parts = [*verdict.problems, *([verdict.summary] if verdict.summary else [])]
    text = "; ".join(_UNSAFE.sub(" ", p).strip() for p in parts) or "no data"
    line = f"{service} {verdict.state.name} - {text}"
    if verdict.perfdata:
        line += " | " + " ".join(d.render() for d in verdict.perfdata)
    return line


def _outbox_findings(obs: Observation, limits: Thresholds) -> list[tuple[State, str]]:
    findings: list[tuple[State, str]] = []
    if obs.running_campaigns and not obs.live_workers:
        verb = "runs" if obs.running_campaigns == 1 else "run"
        running = f"{_count(obs.running_campaigns, 'campaign')} {verb}"
        findings.append((State.CRITICAL, f"no live worker while {running}"))
    depth = exceeded(obs.pending, limits.warn_pending, limits.crit_pending)
    findings.append((depth, f"{obs.pending} messages waiting in the outbox"))
    age = obs.oldest_pending_age or 0.0
    oldest = exceeded(age, limits.warn_age, limits.crit_age)
    findings.append((oldest, f"oldest pending message waiting {_number(round(age, 1))}s"))
    return findings


def _relay_findings(states: Iterable[tuple[str, str]]) -> list[tuple[State, str]]:
    relays = list(states)
    down = [f"{name} {state}" for name, state in relays if state in RELAY_DOWN_STATES]
    if not down:
        return []
    if len(down) == len(relays):
        return [(State.CRITICAL, f"all relays down ({', '.join(down)})")]
    return [(State.WARNING, f"relay {', '.join(down)}")]


def _http_findings(probe: HttpProbe) -> list[tuple[State, str]]:
    if probe.status is None:
        return [(State.CRITICAL, f"{probe.url} unreachable: {probe.error or 'no answer'}")]
    if not 200 <= probe.status < 300:
        detail = f" ({probe.error})" if probe.error else ""
        return [(State.CRITICAL, f"{probe.url} answered {probe.status}{detail}")]
    return []


def _outbox_perfdata(obs: Observation, limits: Thresholds) -> list[PerfDatum]:
    up = sum(1 for _, state in obs.relay_states if state not in RELAY_DOWN_STATES)
    perf = [
        PerfDatum("pending", obs.pending, "", limits.warn_pending, limits.crit_pending),
        PerfDatum(
            "oldest_pending_age",
            round(obs.oldest_pending_age or 0.0, 3),
            "s",
            limits.warn_age,
            limits.crit_age,
        ),
        PerfDatum("running_campaigns", obs.running_campaigns),
        PerfDatum("live_workers", obs.live_workers),
        PerfDatum("relays_up", up, maximum=len(obs.relay_states)),
    ]
    if obs.db_seconds is not None:
        perf.append(PerfDatum("db_time", round(obs.db_seconds, 6), "s"))
    return perf


def _summary(obs: Observation) -> str:
    relays = len(obs.relay_states)
    up = sum(1 for _, state in obs.relay_states if state not in RELAY_DOWN_STATES)
    parts = [
        f"{_count(obs.running_campaigns, 'campaign')} running",
        f"{_count(obs.live_workers, 'live worker')}",
        f"{obs.pending} pending",
    ]
    if relays:
        parts.append(f"{up}/{relays} relays up")
    return ", ".join(parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _number(value: float) -> str:
    """A perfdata number: integers without a point, others with at most 6 decimals."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")
