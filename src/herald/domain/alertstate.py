"""The life of an alert: pending, firing (notify once, then on a repeat schedule), resolved.

Pure: `step` takes what the engine knew, what holds now and the silences in
force, and returns what it knows next and which notices to send. The engine
stores the states; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from herald.domain.alerting import DATABASE_DOWN, Condition, Evaluation

PENDING = "pending"
FIRING = "firing"
RESOLVED = "resolved"


@dataclass(frozen=True)
class AlertState:
    """One alert instance. ``notified_at`` None: nobody has been told about it yet."""

    rule: str
    key: str
    severity: str
    summary: str
    status: str
    started_at: datetime
    details: dict[str, Any] = field(default_factory=dict)
    fired_at: datetime | None = None
    notified_at: datetime | None = None
    resolved_at: datetime | None = None
    id: int | None = None  # the row, once stored

    @property
    def ident(self) -> tuple[str, str]:
        return (self.rule, self.key)

    @property
    def active(self) -> bool:
        return self.status in (PENDING, FIRING)


@dataclass(frozen=True)
class Silence:
    """Mutes ``rule`` (for one ``key``, or every key when None) until ``expires_at``."""

    id: int
    rule: str
    key: str | None
    expires_at: datetime

    def mutes(self, alert: AlertState, now: datetime) -> bool:
        return (
            self.rule == alert.rule
            and (self.key is None or self.key == alert.key)
            and now < self.expires_at
        )


@dataclass(frozen=True)
class Notice:
    """Something to tell people: ``kind`` is firing, repeat or resolved."""

    kind: str
    alert: AlertState


def step(
    known: list[AlertState],
    now_holding: Evaluation,
    silences: list[Silence],
    *,
    now: datetime,
    repeat: float,
) -> tuple[list[AlertState], list[Notice]]:
    """Advance every alert by one evaluation.

    1. A condition that holds starts (or continues) its alert; one that has
       held for its ``hold`` seconds fires.
    2. A firing alert notifies once, then every ``repeat`` seconds; a silenced
       one notifies nothing (once the silence ends it catches up: it notifies
       as firing if nobody was told yet, else on its repeat schedule).
    3. An alert whose condition no longer holds resolves, with a resolved
       notice if a firing notice went out and no silence covers it. While the
       evaluation is incomplete (the database is away) only the database
       rule is judged: every other alert stays as it was.

    Returns (the states after this step, including those that just resolved
    and must be stored as such; the notices to send, in order).
    """
    holding = {c.ident: c for c in now_holding.conditions}
    states: list[AlertState] = []
    notices: list[Notice] = []
    seen: set[tuple[str, str]] = set()
    for alert in known:
        if not alert.active:
            continue
        seen.add(alert.ident)
        condition = holding.get(alert.ident)
        if condition is not None:
            alert = _continue(alert, condition, now)
        elif now_holding.complete or alert.rule == DATABASE_DOWN:
            alert = replace(alert, status=RESOLVED, resolved_at=now)
        states.append(alert)
    for ident, condition in holding.items():
        if ident not in seen:
            states.append(_continue(_start(condition, now), condition, now))
    result = []
    for alert in states:
        muted = any(s.mutes(alert, now) for s in silences)
        alert, notice = _notify(alert, muted, now=now, repeat=repeat)
        if notice is not None:
            notices.append(notice)
        result.append(alert)
    # A pending alert that never fired and was never stored is simply forgotten.
    kept = [a for a in result if a.active or a.fired_at is not None or a.id is not None]
    return kept, notices


def _start(condition: Condition, now: datetime) -> AlertState:
    return AlertState(
        rule=condition.rule,
        key=condition.key,
        severity=condition.severity,
        summary=condition.summary,
        status=PENDING,
        started_at=now,
        details=dict(condition.details),
    )


def _continue(alert: AlertState, condition: Condition, now: datetime) -> AlertState:
    alert = replace(
        alert,
        severity=condition.severity,
        summary=condition.summary,
        details=dict(condition.details),
    )
    if alert.status == PENDING and now - alert.started_at >= timedelta(seconds=condition.hold):
        alert = replace(alert, status=FIRING, fired_at=now)
    return alert


def _notify(
    alert: AlertState, muted: bool, *, now: datetime, repeat: float
) -> tuple[AlertState, Notice | None]:
    if muted or alert.status == PENDING:
        return alert, None
    if alert.status == RESOLVED:
        # Only an alert somebody was told about gets a resolved notice.
        return alert, Notice(RESOLVED, alert) if alert.notified_at is not None else None
    if alert.notified_at is None:
        alert = replace(alert, notified_at=now)
        return alert, Notice(FIRING, alert)
    if now - alert.notified_at >= timedelta(seconds=repeat):
        alert = replace(alert, notified_at=now)
        return alert, Notice("repeat", alert)
    return alert, None
