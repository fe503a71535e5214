"""Templates: reusable subject, HTML and text that campaigns copy at creation."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from herald.store.tables import templates


def insert_template(conn: Connection, values: Mapping[str, Any], *, now: datetime) -> int:
    """Insert a template; returns its id. Raises IntegrityError for a taken name."""
    result = conn.execute(insert(templates).values(**values, created_at=now, updated_at=now))
    pk = result.inserted_primary_key
    assert pk is not None
    return int(pk[0])


def get_template(conn: Connection, template_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(templates).where(templates.c.id == template_id)).mappings().first()
    return None if row is None else dict(row)


def list_templates(conn: Connection) -> list[dict[str, Any]]:
    """Every template by name, without bodies."""
    cols = [c for c in templates.c if c.name not in {"html", "text"}]
    return [dict(r) for r in conn.execute(select(*cols).order_by(templates.c.name)).mappings()]


def update_template(
    conn: Connection, template_id: int, values: Mapping[str, Any], *, now: datetime
) -> bool:
    """Change fields of a template; False when there is none with that id."""
    stmt = update(templates).where(templates.c.id == template_id)
    return conn.execute(stmt.values(**values, updated_at=now)).rowcount == 1


def delete_template(conn: Connection, template_id: int) -> bool:
    """Delete a template. Side effect: campaigns made from it keep their copy and
    lose their ``template_id`` (the foreign key sets it NULL)."""
    return conn.execute(delete(templates).where(templates.c.id == template_id)).rowcount == 1
