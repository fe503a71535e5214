"""Creating and listing mailing lists."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from herald.domain.clock import utcnow
from herald.domain.states import OptIn
from herald.errors import InvalidInput, NotFound
from herald.store import lists as store_lists


def create_list(
    engine: Engine, name: str, *, double_optin: bool = False, description: str = ""
) -> int:
    """Create a mailing list; returns its id. Raises InvalidInput, Conflict."""
    name = _check_name(name)
    optin = OptIn.DOUBLE if double_optin else OptIn.SINGLE
    with engine.begin() as conn:
        return store_lists.create_list(
            conn, name, optin=optin.value, description=description, now=utcnow()
        )


def list_lists(engine: Engine) -> list[dict[str, Any]]:
    """All lists with subscriber counts per subscription status."""
    with engine.begin() as conn:
        return store_lists.list_lists(conn)


def get_list(engine: Engine, list_id: int) -> dict[str, Any]:
    """A list with its subscription counts. Raises NotFound."""
    for row in list_lists(engine):
        if row["id"] == list_id:
            return row
    raise NotFound(f"no list {list_id}")


def update_list(engine: Engine, list_id: int, changes: dict[str, Any]) -> dict[str, Any]:
    """Change name, description and/or ``double_optin``. Raises InvalidInput, NotFound, Conflict."""
    values: dict[str, Any] = {}
    if "name" in changes:
        values["name"] = _check_name(changes["name"])
    if "description" in changes:
        values["description"] = str(changes["description"])[:10_000]
    if "double_optin" in changes:
        values["optin"] = (OptIn.DOUBLE if changes["double_optin"] else OptIn.SINGLE).value
    with engine.begin() as conn:
        if not store_lists.update_list(conn, list_id, values, now=utcnow()):
            raise NotFound(f"no list {list_id}")
    return get_list(engine, list_id)


def delete_list(engine: Engine, list_id: int) -> None:
    """Delete a list and its subscriptions (subscribers stay). Raises NotFound."""
    with engine.begin() as conn:
        if not store_lists.delete_list(conn, list_id):
            raise NotFound(f"no list {list_id}")


def _check_name(raw: Any) -> str:
    name = raw.strip() if isinstance(raw, str) else ""
    if not name or len(name) > 255 or any(ord(c) < 32 for c in name):
        raise InvalidInput("a list name must be 1-255 printable characters")
    return name
