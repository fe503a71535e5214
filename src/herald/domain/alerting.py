"""Alert rules: from one observation of the cluster to the set of conditions that hold.

Pure: the service layer fills an `Observation` (from the database, the nodes'
heartbeat stats and the engine's own memory of earlier readings) and
`evaluate` says which rules are true right now. Whether a true condition
notifies (it may have to last ``hold`` seconds first, or be silenced, or have
notified already) is `herald.domain.alertstate`'s business.

Rule names are those of ``deploy/prometheus/herald-rules.yml`` where a
Prometheus rule exists, so an operator sees one vocabulary in both places.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

WARNING = "warning"
CRITICAL = "critical"

# Fewer results than these in the window say too little to call a rate.
MIN_SEND_RESULTS = 10
MIN_HTTP_REQUESTS = 20
MIN_SENT_FOR_COMPLAINTS = 100
DOWN_RELAY_STATES = frozenset({"open", "half_open", "failed"})

NODE_LOST = "HeraldNodeLost"
NO_LIVE_WORKER = "HeraldNoLiveWorker"
RELAY_DOWN = "HeraldRelayCircuitOpen"
ALL_RELAYS_DOWN = "HeraldAllRelaysDown"
OUTBOX_STALLED = "HeraldOutboxStalled"
SEND_ERRORS = "HeraldSendErrorRate"
HTTP_ERRORS = "HeraldHttp5xxRate"
BURN_FAST = "HeraldSloBurnFast"
BURN_SLOW = "HeraldSloBurnSlow"
FAILOVER = "HeraldDatabaseFailover"
SPOOL_GROWING = "HeraldSpoolBacklogGrowing"
COMPLAINTS = "HeraldComplaintRate"
BACKUP_STALE = "HeraldBackupStale"
DATABASE_DOWN = "HeraldDatabaseDown"

RULES = (
    NODE_LOST,
    NO_LIVE_WORKER,
    RELAY_DOWN,
    ALL_RELAYS_DOWN,
    OUTBOX_STALLED,
    SEND_ERRORS,
    HTTP_ERRORS,
    BURN_FAST,
    BURN_SLOW,
    FAILOVER,
    SPOOL_GROWING,
    COMPLAINTS,
    BACKUP_STALE,
    DATABASE_DOWN,
)


def rule_named(name: str) -> str | None:
    """The rule called ``name`` (case-insensitive, the ``Herald`` prefix optional), or None."""
    wanted = name.strip().lower()
    for rule in RULES:
        if wanted in (rule.lower(), rule.lower().removeprefix("herald")):
            return rule
    return None


@dataclass(frozen=True)
class Thresholds:
    """Every rule's limit; durations in seconds, rates as fractions (0.05 = 5 %)."""

    node_lost_after: float = 30.0
    relay_down_after: float = 300.0
    all_relays_down_after: float = 60.0
    outbox_stalled_after: float = 600.0
    send_error_rate: float = 0.05
    http_error_rate: float = 0.01
    burn_fast: float = 14.4
    burn_slow: float = 6.0
    failover_hold: float = 600.0
    complaint_rate: float = 0.003
    backup_max_age: float = 26 * 3600.0


@dataclass(frozen=True)
class Condition:
    """A rule that holds now. ``key`` tells instances apart (a relay, a node; "" if one).

    ``hold``: seconds it must hold without a break before it notifies.
    """

    rule: str
    key: str
    severity: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict, compare=False)
    hold: float = 0.0

    @property
    def ident(self) -> tuple[str, str]:
        return (self.rule, self.key)


@dataclass(frozen=True)
class NodeSeen:
    name: str
    roles: tuple[str, ...]
    state: str  # active | draining
    heartbeat_age: float
    alive: bool


@dataclass(frozen=True)
class RelaySeen:
    name: str
    state: str  # healthy | open | half_open | failed (disabled relays are left out)


@dataclass(frozen=True)
class Rate:
    """Errors among all outcomes over a window."""

    errors: int
    total: int

    @property
    def ratio(self) -> float:
        return self.errors / self.total if self.total else 0.0


@dataclass(frozen=True)
class Observation:
    """The cluster as one evaluation saw it.

    ``database_error`` set means nothing else could be read: every other
    field is then left at its default and no other rule is judged. Windowed
    figures are None when there is not yet enough history to tell.
    """

    database_error: str | None = None
    nodes: tuple[NodeSeen, ...] = ()
    running_campaigns: int = 0
    relays: tuple[RelaySeen, ...] = ()
    pending_due: int = 0
    oldest_pending_age: float = 0.0
    seconds_since_send: float | None = None
    send: Rate | None = None
    http: Rate | None = None
    burn_fast: float | None = None
    burn_slow: float | None = None
    failover_age: float | None = None  # seconds since the database server changed
    growing_spools: tuple[tuple[str, int], ...] = ()  # (node, backlog bytes now)
    complaints: Rate | None = None
    backup_age: float | None = None  # None: no schedule; inf: never backed up


@dataclass(frozen=True)
class Evaluation:
    """What holds now, and whether the other rules could be judged at all."""

    conditions: tuple[Condition, ...]
    complete: bool  # False while the database is unreachable


def evaluate(obs: Observation, limits: Thresholds) -> Evaluation:
    """Every condition that holds in ``obs`` under ``limits``."""
    if obs.database_error is not None:
        down = Condition(
            DATABASE_DOWN,
            "",
            CRITICAL,
            "The database is unreachable",
            {"error": obs.database_error},
        )
        return Evaluation((down,), complete=False)
    found = [
        *_nodes(obs, limits),
        *_relays(obs, limits),
        *_outbox(obs, limits),
        *_rates(obs, limits),
        *_slo(obs, limits),
        *_database(obs, limits),
        *_spools(obs),
        *_backup(obs, limits),
    ]
    return Evaluation(tuple(found), complete=True)


def _nodes(obs: Observation, limits: Thresholds) -> Iterator[Condition]:
    for node in obs.nodes:
        if node.heartbeat_age > limits.node_lost_after:
            yield Condition(
                NODE_LOST,
                node.name,
                WARNING,
                f"Node {node.name} stopped heartbeating",
                {"heartbeat_age_s": round(node.heartbeat_age, 1), "roles": list(node.roles)},
            )
    workers = [n for n in obs.nodes if n.alive and n.state == "active" and "worker" in n.roles]
    if obs.running_campaigns and not workers:
        yield Condition(
            NO_LIVE_WORKER,
            "",
            CRITICAL,
            "A campaign is running but no worker node is alive",
            {"running_campaigns": obs.running_campaigns},
            hold=limits.node_lost_after,
        )


def _relays(obs: Observation, limits: Thresholds) -> Iterator[Condition]:
    down = [r for r in obs.relays if r.state in DOWN_RELAY_STATES]
    for relay in down:
        yield Condition(
            RELAY_DOWN,
            relay.name,
            WARNING,
            f"Relay {relay.name} is down (circuit {relay.state})",
            {"state": relay.state},
            hold=limits.relay_down_after,
        )
    if obs.relays and len(down) == len(obs.relays):
        yield Condition(
            ALL_RELAYS_DOWN,
            "",
            CRITICAL,
            "Every relay is down: nothing can be sent",
            {"relays": {r.name: r.state for r in down}},
            hold=limits.all_relays_down_after,
        )


def _outbox(obs: Observation, limits: Thresholds) -> Iterator[Condition]:
    quiet = obs.seconds_since_send
    if (
        obs.pending_due
        and obs.oldest_pending_age >= limits.outbox_stalled_after
        and quiet is not None
        and quiet >= limits.outbox_stalled_after
    ):
        yield Condition(
            OUTBOX_STALLED,
            "",
            CRITICAL,
            f"The outbox is stalled: {obs.pending_due} messages wait and none was sent",
            {
                "pending_due": obs.pending_due,
                "oldest_pending_age_s": round(obs.oldest_pending_age, 1),
                "seconds_since_send": round(quiet, 1),
            },
        )


def _rates(obs: Observation, limits: Thresholds) -> Iterator[Condition]:
    checks = (
        (obs.send, MIN_SEND_RESULTS, limits.send_error_rate, SEND_ERRORS, "of sends fail"),
        (obs.http, MIN_HTTP_REQUESTS, limits.http_error_rate, HTTP_ERRORS, "of HTTP are 5xx"),
        (obs.complaints, MIN_SENT_FOR_COMPLAINTS, limits.complaint_rate, COMPLAINTS, "complain"),
    )
    for rate, minimum, limit, rule, words in checks:
        if rate is not None and rate.total >= minimum and rate.ratio > limit:
            yield Condition(
                rule,
                "",
                WARNING,
                f"{rate.ratio:.2%} {words} (limit {limit:.2%})",
                {"errors": rate.errors, "total": rate.total, "ratio": round(rate.ratio, 5)},
            )


def _slo(obs: Observation, limits: Thresholds) -> Iterator[Condition]:
    for burn, limit, rule, window, severity in (
        (obs.burn_fast, limits.burn_fast, BURN_FAST, "1 h", CRITICAL),
        (obs.burn_slow, limits.burn_slow, BURN_SLOW, "6 h", WARNING),
    ):
        if burn is not None and burn > limit:
            yield Condition(
                rule,
                "",
                severity,
                f"The error budget burns {burn:.1f}x too fast over {window} (limit {limit}x)",
                {"burn_rate": round(burn, 2), "window": window},
            )


def _database(obs: Observation, limits: Thresholds) -> Iterator[Condition]:
    if obs.failover_age is not None and obs.failover_age < limits.failover_hold:
        yield Condition(
            FAILOVER,
            "",
            WARNING,
            "The database server changed (failover or restart)",
            {"seconds_ago": round(obs.failover_age, 1)},
        )


def _spools(obs: Observation) -> Iterator[Condition]:
    for node, backlog in obs.growing_spools:
        yield Condition(
            SPOOL_GROWING,
            node,
            WARNING,
            f"Node {node}'s tracking spool keeps growing ({backlog} bytes)",
            {"backlog_bytes": backlog},
        )


def _backup(obs: Observation, limits: Thresholds) -> Iterator[Condition]:
    age = obs.backup_age
    if age is not None and age > limits.backup_max_age:
        never = age == float("inf")
        yield Condition(
            BACKUP_STALE,
            "",
            WARNING,
            "No backup has ever succeeded"
            if never
            else f"The last backup is {age / 3600:.1f} h old",
            {"age_s": None if never else round(age)},
        )
