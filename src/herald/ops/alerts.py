"""The alert engine: the cluster duty "alerts" (one node at a time) evaluates the rules.

Each run:

1. reads the cluster (`services.alerts.read_cluster`) and the figures other
   parts provide (SLO burn, complaints, last backup); a database that does not
   answer is itself the observation (``HeraldDatabaseDown``);
2. turns counters into changes over ``HERALD_ALERT_WINDOW`` with the readings
   it remembers (`domain.alerttrends`), and notes a change of database server;
3. judges the rules (`domain.alerting`) and advances each alert
   (`domain.alertstate`): fire once, repeat, resolve; silences mute;
4. hands the notices to the `Notifier` (log, webhook, email; in the
   background) and stores the new states.

While the database is unreachable the states live in memory only (the duty is
``through_outage``, so its node keeps running it); the first run that can
write again stores them and marks any other stored active alert resolved.
A node that takes the duty over starts from the stored states.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError

from herald.cluster import Duty
from herald.config import Settings
from herald.domain.alerting import Observation, Rate, Thresholds, evaluate
from herald.domain.alertstate import AlertState, Silence, step
from herald.domain.alerttrends import Trends
from herald.domain.clock import as_utc, utcnow
from herald.domain.relays import RelayConfig
from herald.errors import HeraldError
from herald.ops.notify import Notifier, NotifyOptions
from herald.runtime import Runtime
from herald.services import alerts as svc
from herald.services import duties
from herald.services.relays import load_relay_configs

log = logging.getLogger(__name__)

DEFAULT_SLO = 0.999
PRUNE_SECONDS = 3600.0


def thresholds(settings: Settings) -> Thresholds:
    """The rule limits as configured (percent settings become fractions)."""
    return Thresholds(
        node_lost_after=settings.alert_node_lost_after,
        relay_down_after=settings.alert_relay_down_after,
        all_relays_down_after=settings.alert_all_relays_down_after,
        outbox_stalled_after=settings.alert_outbox_stalled_after,
        send_error_rate=settings.alert_send_error_percent / 100,
        http_error_rate=settings.alert_http_error_percent / 100,
        failover_hold=settings.alert_failover_hold,
        complaint_rate=settings.alert_complaint_percent / 100,
        backup_max_age=settings.alert_backup_max_age,
    )


def alerts_duty(runtime: Runtime) -> Duty:
    """The "alerts" duty, run every ``HERALD_ALERT_INTERVAL`` seconds, also through
    a database outage (its last holder goes on evaluating)."""
    engine = AlertEngine(runtime)
    return Duty(
        "alerts",
        engine.run,
        interval=runtime.settings.alert_interval,
        record=False,
        through_outage=True,
    )


class AlertEngine:
    """Evaluates the rules; keeps what must survive between runs (readings, states)."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        s = runtime.settings
        self.runtime = runtime
        self.limits = thresholds(s)
        self.repeat = s.alert_repeat
        self.clock = clock
        self.trends = Trends(s.alert_window)
        self.states: list[AlertState] = []
        self.silences: list[Silence] = []
        self.dirty = False  # memory holds states the database has not stored
        self.server: str | None = None
        self.failover_at: float | None = None
        self._relays: list[RelayConfig] = list(runtime.relays)
        self._next_prune = 0.0  # the first run prunes old history
        self.notifier = notifier or Notifier(
            NotifyOptions(
                node=runtime.node_name,
                webhook=s.alert_webhook,
                webhook_format=s.alert_webhook_format,
                email=s.alert_email,
                from_addr=s.from_addr,
            ),
            relays=lambda: self._relays,
        )

    async def run(self) -> str:
        """One evaluation; returns a one-line summary."""
        obs, reading = await asyncio.to_thread(self._observe)
        evaluation = evaluate(obs, self.limits)
        if reading is not None and not self.dirty:
            self.states = reading.alerts
        if reading is not None:
            self.silences = reading.silences
        states, notices = step(
            self.states, evaluation, self.silences, now=utcnow(), repeat=self.repeat
        )
        self.notifier.notify(notices)
        self.states = [a for a in await self._store(states) if a.active]
        firing = sum(1 for a in self.states if a.status == "firing")
        return f"{firing} firing, {len(self.states) - firing} pending, {len(notices)} notices"

    async def _store(self, states: list[AlertState]) -> list[AlertState]:
        """Store ``states`` (nothing to write when all is quiet); on failure keep them
        in memory, to be stored by the first run that can."""
        prune = self.clock() >= self._next_prune
        if not states and not self.dirty and not prune:
            return states
        try:
            saved = await asyncio.to_thread(
                svc.save_states,
                self.runtime.engine,
                states,
                node=self.runtime.node_name,
                replace_all=self.dirty,
                prune=prune,
            )
        except SQLAlchemyError:
            self.dirty = True
            return states
        self.dirty = False
        if prune:
            self._next_prune = self.clock() + PRUNE_SECONDS
        return saved

    def _observe(self) -> tuple[Observation, svc.ClusterReading | None]:
        """Read the cluster (in a thread); the database's error is an observation too."""
        engine = self.runtime.engine
        try:
            reading = svc.read_cluster(engine)
        except SQLAlchemyError as exc:
            cause = exc.__cause__ or exc
            return Observation(database_error=f"{type(cause).__name__}: {cause}"[:300]), None
        at = self.clock()
        self._note_server(reading.server, at)
        self._refresh_relays()
        obs = Observation(
            nodes=reading.nodes,
            running_campaigns=reading.running_campaigns,
            relays=reading.relays,
            pending_due=reading.pending_due,
            oldest_pending_age=reading.oldest_pending_age,
            failover_age=None if self.failover_at is None else at - self.failover_at,
            backup_age=self._backup_age(),
            complaints=self._complaints(),
        )
        fast, slow = self._burn()
        obs = replace(obs, burn_fast=fast, burn_slow=slow)
        return self._with_trends(obs, reading, at), reading

    def _with_trends(self, obs: Observation, reading: svc.ClusterReading, at: float) -> Observation:
        t = self.trends
        totals = reading.relay_totals
        for name, value in totals.items():
            t.record(f"relay:{name}", value, at=at)
        http_total = http_errors = 0
        growing = []
        names = {f"relay:{n}" for n in totals}
        for node, stats in reading.stats.items():
            for field in ("http_requests", "http_5xx"):
                t.record(f"{field}:{node}", float(stats.get(field, 0)), at=at)
                names.add(f"{field}:{node}")
            t.record(f"spool:{node}", float(stats.get("spool_bytes", 0)), at=at, counter=False)
            names.add(f"spool:{node}")
            http_total += int(t.change(f"http_requests:{node}") or 0)
            http_errors += int(t.change(f"http_5xx:{node}") or 0)
            if t.grew_all_window(f"spool:{node}", at=at):
                growing.append((node, int(stats.get("spool_bytes", 0))))
        t.forget_except(names)
        sent, deferred, failed = (t.change(f"relay:{k}") for k in ("sent", "deferred", "failed"))
        send = None
        if sent is not None and deferred is not None and failed is not None:
            # A relay's "failed" count is bounces: the recipients' problem, not an
            # error of sending (as in HeraldSendErrorRate's Prometheus rule).
            send = Rate(int(deferred), int(sent + deferred + failed))
        return replace(
            obs,
            seconds_since_send=t.quiet_for("relay:sent", at=at),
            send=send,
            http=Rate(http_errors, http_total),
            growing_spools=tuple(growing),
        )

    def _note_server(self, server: str | None, at: float) -> None:
        if server is not None and self.server is not None and server != self.server:
            log.warning("database server changed: %s -> %s", self.server, server)
            self.failover_at = at
        if server is not None:
            self.server = server

    def _refresh_relays(self) -> None:
        """Keep the stored relays at hand: alert email must go out when the database
        cannot tell us where to send it."""
        if self.runtime.relays:
            return
        try:
            self._relays = load_relay_configs(self.runtime.engine, self.runtime.secret)
        except (SQLAlchemyError, HeraldError) as exc:
            log.warning("alerts: relays not refreshed (%s)", type(exc).__name__)

    def _backup_age(self) -> float | None:
        """Seconds since the last good backup; None unless backups are scheduled."""
        if not str(getattr(self.runtime.settings, "backup_schedule", "") or "").strip():
            return None
        try:
            last = duties.last_run(self.runtime.engine, "backup", ok=True)
        except SQLAlchemyError as exc:
            log.warning("alerts: last backup unknown (%s)", type(exc).__name__)
            return None
        if last is None:
            return float("inf")
        return (utcnow() - as_utc(last.started_at)).total_seconds()

    def _complaints(self) -> Rate | None:
        since = utcnow() - timedelta(seconds=self.runtime.settings.alert_complaint_window)
        try:
            found = svc.complaints_since(self.runtime.engine, since=since)
        except (SQLAlchemyError, HeraldError) as exc:
            log.warning("alerts: complaint rate unavailable (%s)", type(exc).__name__)
            return None
        return None if found is None else Rate(*found)

    def _burn(self) -> tuple[float | None, float | None]:
        slo = float(getattr(self.runtime.settings, "slo", DEFAULT_SLO) or DEFAULT_SLO)
        try:
            return svc.burn_rates(self.runtime.engine, slo=slo)
        except (SQLAlchemyError, HeraldError) as exc:
            log.warning("alerts: SLO burn rate unavailable (%s)", type(exc).__name__)
            return None, None
