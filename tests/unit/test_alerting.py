from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from herald.domain import alerting as a
from herald.domain.alerting import (
    Condition,
    Evaluation,
    NodeSeen,
    Observation,
    Rate,
    RelaySeen,
    Thresholds,
    evaluate,
)
from herald.domain.alertstate import FIRING, PENDING, RESOLVED, Silence, step
from herald.domain.alerttrends import Trends

LIMITS = Thresholds(node_lost_after=10, relay_down_after=5, outbox_stalled_after=30)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def rules(obs: Observation) -> set[tuple[str, str]]:
    return {c.ident for c in evaluate(obs, LIMITS).conditions}


def worker(name: str = "w1", *, age: float = 1.0) -> NodeSeen:
    return NodeSeen(name, ("worker",), "active", age, age <= 5)


def test_it_finds_nothing_in_a_healthy_cluster() -> None:
    obs = Observation(
        nodes=(worker(),),
        running_campaigns=1,
        relays=(RelaySeen("r1", "healthy"),),
        send=Rate(0, 100),
        http=Rate(0, 100),
        complaints=Rate(0, 1000),
        burn_fast=1.0,
        burn_slow=1.0,
        backup_age=60.0,
    )
    assert rules(obs) == set()


def test_it_reports_a_lost_node_and_no_live_worker_while_a_campaign_runs() -> None:
    obs = Observation(nodes=(worker(age=11),), running_campaigns=1)
    assert rules(obs) == {(a.NODE_LOST, "w1"), (a.NO_LIVE_WORKER, "")}
    assert rules(Observation(nodes=(worker(age=11),))) == {(a.NODE_LOST, "w1")}


def test_it_reports_each_down_relay_and_all_relays_down() -> None:
    one = Observation(relays=(RelaySeen("r1", "open"), RelaySeen("r2", "healthy")))
    assert rules(one) == {(a.RELAY_DOWN, "r1")}
    both = Observation(relays=(RelaySeen("r1", "open"), RelaySeen("r2", "failed")))
    assert rules(both) == {(a.RELAY_DOWN, "r1"), (a.RELAY_DOWN, "r2"), (a.ALL_RELAYS_DOWN, "")}


def test_it_calls_the_outbox_stalled_only_when_due_work_waits_and_nothing_is_sent() -> None:
    stalled = Observation(pending_due=5, oldest_pending_age=31, seconds_since_send=31)
    assert rules(stalled) == {(a.OUTBOX_STALLED, "")}
    assert rules(Observation(pending_due=5, oldest_pending_age=31, seconds_since_send=3)) == set()
    assert rules(Observation(pending_due=5, oldest_pending_age=3, seconds_since_send=31)) == set()


def test_it_judges_rates_only_above_their_limit_and_minimum_sample() -> None:
    assert rules(Observation(send=Rate(6, 100))) == {(a.SEND_ERRORS, "")}
    assert rules(Observation(send=Rate(5, 100))) == set()
    assert rules(Observation(send=Rate(5, 5))) == set()  # too few results to judge
    assert rules(Observation(http=Rate(2, 100))) == {(a.HTTP_ERRORS, "")}
    assert rules(Observation(complaints=Rate(4, 1000))) == {(a.COMPLAINTS, "")}
    assert rules(Observation(complaints=Rate(3, 1000))) == set()


def test_it_reports_fast_and_slow_slo_burn() -> None:
    assert rules(Observation(burn_fast=15.0, burn_slow=7.0)) == {
        (a.BURN_FAST, ""),
        (a.BURN_SLOW, ""),
    }
    assert rules(Observation(burn_fast=14.0, burn_slow=5.0)) == set()


def test_it_holds_a_failover_notice_for_its_hold_time() -> None:
    assert rules(Observation(failover_age=1.0)) == {(a.FAILOVER, "")}
    assert rules(Observation(failover_age=LIMITS.failover_hold + 1)) == set()


def test_it_reports_growing_spools_and_stale_or_missing_backups() -> None:
    assert rules(Observation(growing_spools=(("api1", 900),))) == {(a.SPOOL_GROWING, "api1")}
    assert rules(Observation(backup_age=LIMITS.backup_max_age + 1)) == {(a.BACKUP_STALE, "")}
    assert rules(Observation(backup_age=float("inf"))) == {(a.BACKUP_STALE, "")}
    assert rules(Observation(backup_age=None)) == set()  # no schedule, no rule


def test_it_judges_only_the_database_while_it_is_unreachable() -> None:
    result = evaluate(Observation(database_error="refused"), LIMITS)
    assert [c.rule for c in result.conditions] == [a.DATABASE_DOWN]
    assert not result.complete


def test_it_knows_rules_by_name_without_case_or_prefix() -> None:
    assert a.rule_named("relaycircuitopen") == a.RELAY_DOWN
    assert a.rule_named("HeraldNodeLost") == a.NODE_LOST
    assert a.rule_named("nope") is None


def holding(*conditions: Condition, complete: bool = True) -> Evaluation:
    return Evaluation(tuple(conditions), complete)


RELAY = Condition(a.RELAY_DOWN, "r1", "warning", "down", hold=5)
LOST = Condition(a.NODE_LOST, "w1", "warning", "lost")


def test_it_fires_once_after_the_hold_then_repeats_then_resolves() -> None:
    states, notices = step([], holding(RELAY), [], now=T0, repeat=60)
    assert [s.status for s in states] == [PENDING] and notices == []
    states, notices = step(states, holding(RELAY), [], now=T0 + timedelta(seconds=5), repeat=60)
    assert [s.status for s in states] == [FIRING] and [n.kind for n in notices] == ["firing"]
    states, notices = step(states, holding(RELAY), [], now=T0 + timedelta(seconds=30), repeat=60)
    assert notices == []
    states, notices = step(states, holding(RELAY), [], now=T0 + timedelta(seconds=66), repeat=60)
    assert [n.kind for n in notices] == ["repeat"]
    states, notices = step(states, holding(), [], now=T0 + timedelta(seconds=70), repeat=60)
    assert [s.status for s in states] == [RESOLVED] and [n.kind for n in notices] == [RESOLVED]


def test_it_forgets_a_pending_alert_that_ends_before_its_hold() -> None:
    states, _ = step([], holding(RELAY), [], now=T0, repeat=60)
    states, notices = step(states, holding(), [], now=T0 + timedelta(seconds=1), repeat=60)
    assert states == [] and notices == []
    stored = replace(step([], holding(RELAY), [], now=T0, repeat=60)[0][0], id=7)
    states, notices = step([stored], holding(), [], now=T0, repeat=60)
    assert [(s.id, s.status) for s in states] == [(7, RESOLVED)] and notices == []


def test_it_keeps_other_alerts_while_the_database_is_unreachable() -> None:
    states, _ = step([], holding(LOST), [], now=T0, repeat=60)
    down = Condition(a.DATABASE_DOWN, "", "critical", "db")
    states, notices = step(states, holding(down, complete=False), [], now=T0, repeat=60)
    assert {s.rule: s.status for s in states} == {a.NODE_LOST: FIRING, a.DATABASE_DOWN: FIRING}
    assert [n.alert.rule for n in notices] == [a.DATABASE_DOWN]
    states, notices = step(states, holding(), [], now=T0, repeat=60)
    assert {n.alert.rule for n in notices} == {a.NODE_LOST, a.DATABASE_DOWN}


def test_it_mutes_a_silenced_alert_until_the_silence_expires() -> None:
    silence = Silence(1, a.NODE_LOST, "w1", T0 + timedelta(seconds=10))
    states, notices = step([], holding(LOST), [silence], now=T0, repeat=60)
    assert states[0].status == FIRING and notices == []
    later = T0 + timedelta(seconds=11)
    states, notices = step(states, holding(LOST), [silence], now=later, repeat=60)
    assert [n.kind for n in notices] == ["firing"]


def test_it_sends_no_resolved_notice_for_an_alert_nobody_was_told_about() -> None:
    silence = Silence(1, a.NODE_LOST, None, T0 + timedelta(hours=1))
    states, _ = step([], holding(LOST), [silence], now=T0, repeat=60)
    states, notices = step(states, holding(), [], now=T0, repeat=60)
    assert states[0].status == RESOLVED and notices == []


def test_it_turns_counters_into_changes_over_the_window() -> None:
    t = Trends(window=10)
    for at, value in ((0, 5), (5, 8), (12, 20)):
        t.record("c", value, at=at)
    assert t.change("c") == 15  # since the newest reading at or before 12 - 10 s
    t.record("c", 1, at=13)  # a restart: counts from zero again
    assert t.change("c") is None
    assert t.quiet_for("c", at=15) == 3


def test_it_calls_a_spool_growing_only_over_a_whole_window() -> None:
    t = Trends(window=10)
    t.record("s", 100, at=0, counter=False)
    t.record("s", 200, at=5, counter=False)
    assert not t.grew_all_window("s", at=5)
    t.record("s", 300, at=11, counter=False)
    assert t.grew_all_window("s", at=11)
    t.record("s", 0, at=22, counter=False)
    assert not t.grew_all_window("s", at=22)
