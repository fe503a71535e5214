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
from herald.errors import Conflict, InvalidInput
from herald.store import campaigns as store
from herald.store import deliveries as store_deliveries
from herald.store import lists as store_lists
from herald.store import tracking as store_tracking


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


def create_campaign(engine: Engine, draft: CampaignDraft) -> int:
    """Create a draft campaign; returns its id.

    Raises InvalidInput for a bad sender, no list, or a subject with CR/LF;
    TemplateError when a template cannot compile; NotFound for an unknown list.
    """
    parse_from(draft.from_addr)
    if not draft.list_names:
        raise InvalidInput("a campaign needs at least one list")
    if any(c in draft.subject for c in "\r\n\0"):
        raise InvalidInput("the subject must be a single line")
    compile_campaign(draft.subject, draft.html, draft.text)
    with engine.begin() as conn:
        list_ids = [store_lists.get_list_by_name(conn, n)["id"] for n in draft.list_names]
        values = {
            "name": draft.name or draft.subject[:255],
            "subject": draft.subject,
            "html": draft.html,
            "text": draft.text,
            "from_addr": draft.from_addr,
            "rate_limit": draft.rate_limit,
            "track": draft.track,
        }
        return store.create_campaign(conn, values, list_ids=list_ids, now=utcnow())


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
    total = sum(counts.values())
    first, last = times["first_sent_at"], times["last_sent_at"]
    rate = None
    if first and last and counts.get("sent", 0) > 1:
        span = (as_utc(last) - as_utc(first)).total_seconds()
        rate = round(counts["sent"] / span, 1) if span > 0 else None
    done = sum(counts.get(s, 0) for s in ("sent", "failed", "bounced"))
    return {
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


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def list_campaigns(engine: Engine) -> list[dict[str, Any]]:
    with engine.begin() as conn:
        return store.list_campaigns(conn)


def _iso(value: Any) -> str | None:
    return as_utc(value).isoformat() if value is not None else None
