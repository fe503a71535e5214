"""Campaign use cases: create, start, pause, resume, cancel, report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from herald.domain.addresses import parse_from
from herald.domain.clock import as_utc, utcnow
from herald.domain.rendering import compile_campaign
from herald.domain.states import CampaignStatus as S
from herald.errors import Conflict, InvalidInput, NotFound
from herald.store import campaigns as store
from herald.store import complaints as store_complaints
from herald.store import deliveries as store_deliveries
from herald.store import lists as store_lists
from herald.store import templates as store_templates
from herald.store import tracking as store_tracking
from herald.store import unsubscribes as store_unsubscribes


@dataclass(frozen=True)
class CampaignDraft:
    """What a user gives to create a campaign."""

    name: str
    subject: str
    html: str
    text: str | None
    from_addr: str
    list_names: tuple[str, ...]
    rate_limit: float | None = None
    track: bool = True  # open pixel and click redirects (domain.tracking)
    # Copy subject, HTML and text (those left empty here) from this template.
    template_id: int | None = None


def create_campaign(engine: Engine, draft: CampaignDraft) -> int:
    """Create a draft campaign; returns its id.

    With ``template_id``, the template's subject, HTML and text are copied
    into the campaign (a later change to the template does not change it).
    Raises InvalidInput for a bad sender, no list, or a subject with CR/LF;
    TemplateError when a template cannot compile; NotFound for an unknown list
    or template.
    """
    parse_from(draft.from_addr)
    if not draft.list_names:
        raise InvalidInput("a campaign needs at least one list")
    with engine.begin() as conn:
        subject, html, text = draft.subject, draft.html, draft.text
        if draft.template_id is not None:
            template = store_templates.get_template(conn, draft.template_id)
            if template is None:
                raise NotFound(f"no template {draft.template_id}")
            subject, html = subject or template["subject"], html or template["html"]
            text = template["text"] if text is None else text
        if any(c in subject for c in "\r\n\0"):
            raise InvalidInput("the subject must be a single line")
        compile_campaign(subject, html, text)
        list_ids = [store_lists.get_list_by_name(conn, n)["id"] for n in draft.list_names]
        values = {
            "name": draft.name or subject[:255],
            "subject": subject,
            "html": html,
            "text": text,
            "from_addr": draft.from_addr,
            "rate_limit": draft.rate_limit,
            "track": draft.track,
            "template_id": draft.template_id,
        }
        return store.create_campaign(conn, values, list_ids=list_ids, now=utcnow())


_EDITABLE = frozenset({"name", "subject", "html", "text", "from_addr", "rate_limit", "track"})


def update_campaign(
    engine: Engine, campaign_id: int, changes: dict[str, Any], *, list_ids: list[int] | None = None
) -> None:
    """Change a draft campaign's content, sender, lists, rate or tracking.

    The result is checked as at creation (sender, one-line subject, templates
    compile). Raises NotFound, InvalidInput, TemplateError, and Conflict when
    the campaign is no longer a draft (a scheduled or running campaign is
    changed by pausing or cancelling it, not by editing what is being sent).
    """
    unknown = set(changes) - _EDITABLE
    if unknown:
        raise InvalidInput(f"these fields cannot be changed: {', '.join(sorted(unknown))}")
    if list_ids is not None and not list_ids:
        raise InvalidInput("a campaign needs at least one list")
    with engine.begin() as conn:
        current = store.get_campaign(conn, campaign_id)
        merged = {**current, **changes}
        parse_from(merged["from_addr"])
        if any(c in merged["subject"] for c in "\r\n\0"):
            raise InvalidInput("the subject must be a single line")
        compile_campaign(merged["subject"], merged["html"], merged["text"])
        for list_id in list_ids or ():
            if store_lists.get_list(conn, list_id) is None:
                raise NotFound(f"no list {list_id}")
        if not store.update_draft(conn, campaign_id, changes, list_ids=list_ids, now=utcnow()):
            raise Conflict(
                f"campaign {campaign_id} is {current['status']}: only a draft can be changed"
            )


_TRANSITIONS: dict[str, tuple[tuple[S, ...], S]] = {
    "start": ((S.DRAFT, S.SCHEDULED), S.RUNNING),
    "pause": ((S.RUNNING,), S.PAUSED),
    "resume": ((S.PAUSED,), S.RUNNING),
    "cancel": ((S.DRAFT, S.SCHEDULED, S.RUNNING, S.PAUSED), S.CANCELLED),
}


def change_status(engine: Engine, campaign_id: int, action: str) -> str:
    """Apply ``action`` (start, pause, resume, cancel); returns the new status.

    Starting only flips the status: workers materialise the recipients in
    chunks, so a start is instant and survives any node dying half-way.
    Raises NotFound, or Conflict when the campaign is not in a state the action
    applies to (for example resuming a finished campaign).
    """
    from_states, to_state = _TRANSITIONS[action]
    now = utcnow()
    extra = {"started_at": now} if action == "start" else None
    with engine.begin() as conn:
        current = store.get_campaign(conn, campaign_id)["status"]
        if not store.transition(
            conn, campaign_id, from_states=from_states, to_state=to_state, now=now, extra=extra
        ):
            raise Conflict(f"cannot {action} campaign {campaign_id}: it is {current}")
    return to_state.value


def schedule_campaign(engine: Engine, campaign_id: int, at: datetime) -> None:
    """Schedule a draft (or re-schedule a scheduled) campaign; a node starts it at ``at``.

    Raises NotFound, Conflict.
    """
    now = utcnow()
    with engine.begin() as conn:
        current = store.get_campaign(conn, campaign_id)["status"]
        if not store.transition(
            conn,
            campaign_id,
            from_states=[S.DRAFT, S.SCHEDULED],
            to_state=S.SCHEDULED,
            now=now,
            extra={"send_at": as_utc(at)},
        ):
            raise Conflict(f"cannot schedule campaign {campaign_id}: it is {current}")


def set_rate(engine: Engine, campaign_id: int, rate: float | None) -> None:
    """Set (or with None remove) a campaign's cluster-wide send rate; takes effect at once."""
    with engine.begin() as conn:
        store.set_values(
            conn,
            campaign_id,
            {"rate_limit": rate, "rate_tokens": None, "rate_at": None},
            now=utcnow(),
        )


def campaign_report(engine: Engine, campaign_id: int) -> dict[str, Any]:
    """Counts per delivery status, progress, timings and send rate."""
    with engine.begin() as conn:
        camp = store.get_campaign(conn, campaign_id)
        counts = store_deliveries.status_counts(conn, campaign_id)
        times = store_deliveries.timings(conn, campaign_id)
        events = store_tracking.counts(conn, campaign_id)
        complaints = store_complaints.count_for_campaign(conn, campaign_id)
        unsubscribed = store_unsubscribes.count_for_campaign(conn, campaign_id)
    total = sum(counts.values())
    first, last = times["first_sent_at"], times["last_sent_at"]
    rate = None
    if first and last and counts.get("sent", 0) > 1:
        span = (as_utc(last) - as_utc(first)).total_seconds()
        rate = round(counts["sent"] / span, 1) if span > 0 else None
    done = sum(counts.get(s, 0) for s in ("sent", "failed", "bounced"))
    report: dict[str, Any] = {
        "id": camp["id"],
        "name": camp["name"],
        "subject": camp["subject"],
        "status": camp["status"],
        "materialised": bool(camp["materialised"]),
        "send_at": _iso(camp["send_at"]),
        "rate_limit": camp["rate_limit"],
        "track": bool(camp["track"]),
        "total": total,
        "counts": {
            s: counts.get(s, 0) for s in ("pending", "sending", "sent", "failed", "bounced")
        },
        "done": done,
        "rate_per_s": rate,
        "created_at": _iso(camp["created_at"]),
        "started_at": _iso(camp["started_at"]),
        "finished_at": _iso(camp["finished_at"]),
        "first_sent_at": _iso(first),
        "last_sent_at": _iso(last),
        "opens": events["open"],
        "clicks": events["click"],
        "open_rate": _rate(events["open"]["unique"], counts.get("sent", 0)),
        "click_rate": _rate(events["click"]["unique"], counts.get("sent", 0)),
    }
    report["complaints"] = complaints
    report["unsubscribes"] = unsubscribed  # through this campaign's links (store.unsubscribes)
    report["rates"] = _rates(report)
    return report


def _rates(report: dict[str, Any]) -> dict[str, float | None]:
    """Bounce rate over attempted deliveries; the others over messages sent."""
    counts = report["counts"]
    sent, bounced = counts["sent"], counts["bounced"]
    unsubscribes = report.get("unsubscribes")
    return {
        "bounce": _rate(bounced, sent + bounced + counts["failed"]),
        "open": _rate(report["opens"]["unique"], sent),
        "click": _rate(report["clicks"]["unique"], sent),
        "unsubscribe": _rate(unsubscribes, sent) if isinstance(unsubscribes, int) else None,
        "complaint": _rate(report["complaints"], sent),
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def list_campaigns(engine: Engine) -> list[dict[str, Any]]:
    with engine.begin() as conn:
        return store.list_campaigns(conn)


def _iso(value: Any) -> str | None:
    return as_utc(value).isoformat() if value is not None else None
