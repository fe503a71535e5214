"""Creating and listing mailing lists."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from herald.domain.clock import utcnow
from herald.domain.states import OptIn
from herald.errors import InvalidInput
from herald.store import lists as store_lists


def create_list(
    engine: Engine, name: str, *, double_optin: bool = False, description: str = ""
) -> int:
    """Create a mailing list; returns its id. Raises InvalidInput, Conflict."""
    name = name.strip()
    if not name or len(name) > 255 or any(ord(c) < 32 for c in name):
        raise InvalidInput("a list name must be 1-255 printable characters")
    optin = OptIn.DOUBLE if double_optin else OptIn.SINGLE
    with engine.begin() as conn:
        return store_lists.create_list(
            conn, name, optin=optin.value, description=description, now=utcnow()
        )


def list_lists(engine: Engine) -> list[dict[str, Any]]:
    """All lists with subscriber counts per subscription status."""
    with engine.begin() as conn:
        return store_lists.list_lists(conn)
