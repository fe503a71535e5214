"""Campaigns and their state transitions.

Every transition another node may race on is a guarded UPDATE
(``WHERE status IN (:expected)``) whose rowcount tells who won.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, exists, insert, select, update

from herald.errors import NotFound
from herald.store.tables import campaign_lists, campaigns, deliveries


def create_campaign(
    conn: Connection, values: dict[str, Any], *, list_ids: Iterable[int], now: datetime
) -> int:
    """Insert a draft campaign targeting ``list_ids``; returns its id."""
    result = conn.execute(
        insert(campaigns).values(
            **values,
            status="draft",
            materialised=False,
            materialise_cursor=0,
            created_at=now,
            updated_at=now,
        )
    )
    pk = result.inserted_primary_key
    assert pk is not None
    campaign_id = int(pk[0])
    conn.execute(
        insert(campaign_lists), [{"campaign_id": campaign_id, "list_id": lid} for lid in list_ids]
    )
    return campaign_id


def get_campaign(conn: Connection, campaign_id: int) -> dict[str, Any]:
    """The campaign row with ``list_ids``. Raises NotFound."""
    row = conn.execute(select(campaigns).where(campaigns.c.id == campaign_id)).mappings().first()
    if row is None:
        raise NotFound(f"no campaign with id {campaign_id}")
    list_ids = conn.scalars(
        select(campaign_lists.c.list_id).where(campaign_lists.c.campaign_id == campaign_id)
    ).all()
    return {**row, "list_ids": list(list_ids)}


def transition(
    conn: Connection,
    campaign_id: int,
    *,
    from_states: Iterable[str],
    to_state: str,
    now: datetime,
    extra: dict[str, Any] | None = None,
) -> bool:
    """Move a campaign to ``to_state`` if it is in one of ``from_states``.

    Returns False when another node (or user) moved it first: the caller decides
    whether that is an error.
    """
    result = conn.execute(
        update(campaigns)
        .where(campaigns.c.id == campaign_id, campaigns.c.status.in_(list(from_states)))
        .values(status=to_state, updated_at=now, **(extra or {}))
    )
    return result.rowcount == 1


def statuses(conn: Connection, campaign_ids: Iterable[int]) -> dict[int, tuple[str, float | None]]:
    """Current (status, rate limit) of each given campaign."""
    ids = list(campaign_ids)
    if not ids:
        return {}
    query = select(campaigns.c.id, campaigns.c.status, campaigns.c.rate_limit)
    rows = conn.execute(query.where(campaigns.c.id.in_(ids)))
    return {int(r.id): (str(r.status), r.rate_limit) for r in rows}


def running_unmaterialised(conn: Connection) -> list[tuple[int, int]]:
    """(campaign id, cursor) of running or paused campaigns still materialising."""
    rows = conn.execute(
        select(campaigns.c.id, campaigns.c.materialise_cursor).where(
            campaigns.c.status.in_(["running", "paused"]), campaigns.c.materialised.is_(False)
        )
    )
    return [(int(r.id), int(r.materialise_cursor)) for r in rows]


def advance_cursor(
    conn: Connection, campaign_id: int, *, old: int, new: int | None, now: datetime
) -> bool:
    """Move the materialisation cursor from ``old`` to ``new`` (None = done).

    Guarded on ``old``: False means another node took this chunk first, and the
    caller must leave it alone (see services.outbox: the cursor moves before
    the chunk's rows are inserted, in the same transaction).
    """
    values: dict[str, Any] = {"updated_at": now}
    if new is None:
        values["materialised"] = True
    else:
        values["materialise_cursor"] = new
    result = conn.execute(
        update(campaigns)
        .where(campaigns.c.id == campaign_id, campaigns.c.materialise_cursor == old)
        .where(campaigns.c.materialised.is_(False))
        .values(**values)
    )
    return result.rowcount == 1


def finish_if_done(conn: Connection, *, now: datetime) -> list[int]:
    """Mark finished every running, fully materialised campaign with no open delivery.

    Side effect: sets ``finished_at``. Returns the ids finished by this call.
    """
    open_rows = exists().where(
        deliveries.c.campaign_id == campaigns.c.id,
        deliveries.c.status.in_(["pending", "sending"]),
    )
    candidates = conn.scalars(
        select(campaigns.c.id).where(
            campaigns.c.status == "running",
            campaigns.c.materialised.is_(True),
            campaigns.c.kind == "campaign",  # a tx carrier runs for ever
            ~open_rows,
        )
    ).all()
    done = []
    for cid in candidates:
        if transition(
            conn,
            int(cid),
            from_states=["running"],
            to_state="finished",
            now=now,
            extra={"finished_at": now},
        ):
            done.append(int(cid))
    return done


def list_campaigns(conn: Connection) -> list[dict[str, Any]]:
    """Every campaign, newest first, without bodies (hidden tx carriers left out)."""
    cols = [c for c in campaigns.c if c.name not in {"html", "text"}]
    query = select(*cols).where(campaigns.c.kind == "campaign")
    rows = conn.execute(query.order_by(campaigns.c.id.desc())).mappings()
    return [dict(r) for r in rows]


def start_due(conn: Connection, *, now: datetime) -> list[int]:
    """Start every scheduled campaign whose time has come; returns the ids started.

    Runs on every node: the status guard makes each start happen exactly once
    (a second node's UPDATE finds the campaign already running and matches nothing).
    """
    rows = conn.execute(
        update(campaigns)
        .where(campaigns.c.status == "scheduled", campaigns.c.send_at <= now)
        .values(status="running", started_at=now, updated_at=now)
        .returning(campaigns.c.id)
    )
    return [int(r.id) for r in rows]


def set_values(
    conn: Connection, campaign_id: int, values: dict[str, Any], *, now: datetime
) -> None:
    """Update plain fields of a campaign. Raises NotFound."""
    result = conn.execute(
        update(campaigns).where(campaigns.c.id == campaign_id).values(**values, updated_at=now)
    )
    if result.rowcount != 1:
        raise NotFound(f"no campaign with id {campaign_id}")


def update_draft(
    conn: Connection,
    campaign_id: int,
    values: dict[str, Any],
    *,
    list_ids: Iterable[int] | None,
    now: datetime,
) -> bool:
    """Change a campaign that is still a draft; False when it is not (any more).

    Guarded on the status: a node or user starting it at the same moment wins
    or loses as a whole, so a running campaign's content never changes.
    Side effect: with ``list_ids``, replaces the campaign's lists.
    """
    result = conn.execute(
        update(campaigns)
        .where(campaigns.c.id == campaign_id, campaigns.c.status == "draft")
        .values(**values, updated_at=now)
    )
    if result.rowcount != 1:
        return False
    if list_ids is not None:
        conn.execute(delete(campaign_lists).where(campaign_lists.c.campaign_id == campaign_id))
        rows = [{"campaign_id": campaign_id, "list_id": lid} for lid in list_ids]
        conn.execute(insert(campaign_lists), rows)
    return True
