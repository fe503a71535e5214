"""Mailing lists."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from herald.errors import Conflict, NotFound
from herald.store.tables import lists, subscriptions


def create_list(
    conn: Connection,
    name: str,
    *,
    optin: str,
    description: str,
    now: datetime,
    public: bool = False,
) -> int:
    """Insert a list; returns its id. Raises Conflict if the name is taken."""
    try:
        with conn.begin_nested():
            result = conn.execute(
                insert(lists).values(
                    name=name,
                    optin=optin,
                    description=description,
                    public=public,
                    created_at=now,
                    updated_at=now,
                )
            )
    except IntegrityError as exc:
        raise Conflict(f"a list named {name!r} already exists") from exc
    pk = result.inserted_primary_key
    assert pk is not None
    return int(pk[0])


def get_list_by_name(conn: Connection, name: str) -> dict[str, Any]:
    """Return the list row as a dict. Raises NotFound."""
    row = conn.execute(select(lists).where(lists.c.name == name)).mappings().first()
    if row is None:
        raise NotFound(f"no list named {name!r}")
    return dict(row)


def get_list(conn: Connection, list_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(lists).where(lists.c.id == list_id)).mappings().first()
    return None if row is None else dict(row)


def update_list(conn: Connection, list_id: int, values: dict[str, Any], *, now: datetime) -> bool:
    """Change a list; False when there is none. Raises Conflict if the new name is taken."""
    try:
        with conn.begin_nested():
            stmt = update(lists).where(lists.c.id == list_id).values(**values, updated_at=now)
            return conn.execute(stmt).rowcount == 1
    except IntegrityError as exc:
        raise Conflict(f"a list named {values.get('name')!r} already exists") from exc


def delete_list(conn: Connection, list_id: int) -> bool:
    """Delete a list and its subscriptions (the foreign key cascades)."""
    return conn.execute(delete(lists).where(lists.c.id == list_id)).rowcount == 1


def list_lists(conn: Connection) -> list[dict[str, Any]]:
    """All lists with their subscription counts per status, ordered by id."""
    counts = (
        select(
            subscriptions.c.list_id,
            subscriptions.c.status,
            func.count().label("n"),
        )
        .group_by(subscriptions.c.list_id, subscriptions.c.status)
        .subquery()
    )
    out: dict[int, dict[str, Any]] = {}
    for row in conn.execute(select(lists).order_by(lists.c.id)).mappings():
        out[row["id"]] = {**row, "subscribers": {}}
    for row in conn.execute(select(counts)).mappings():
        if row["list_id"] in out:
            out[row["list_id"]]["subscribers"][row["status"]] = row["n"]
    return list(out.values())
