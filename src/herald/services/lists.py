"""Creating and listing mailing lists."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from herald.domain.clock import utcnow
from herald.domain.states import OptIn, SubscriptionStatus
from herald.errors import InvalidInput, NotFound
from herald.store import lists as store_lists
from herald.store import subscribers as store_subscribers
from herald.store import subscriptions as store_subscriptions


def create_list(
    engine: Engine,
    name: str,
    *,
    double_optin: bool = False,
    description: str = "",
    public: bool = False,
) -> int:
    """Create a mailing list; returns its id. Raises InvalidInput, Conflict.

    A ``public`` list has a subscribe form anyone can use (web.signup).
    """
    name = _check_name(name)
    optin = OptIn.DOUBLE if double_optin else OptIn.SINGLE
    with engine.begin() as conn:
        return store_lists.create_list(
            conn, name, optin=optin.value, description=description, public=public, now=utcnow()
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
    if changes.get("public") is not None:
        values["public"] = bool(changes["public"])
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


def list_members(
    engine: Engine,
    list_id: int,
    *,
    status: str | None = None,
    after: int = 0,
    limit: int = 100,
) -> dict[str, Any]:
    """A page of a list's subscribers with their subscription status.

    ``{"items": […], "next": id or None}``; pass ``next`` back as ``after``.
    Raises NotFound, InvalidInput (limit or status).
    """
    if not 1 <= limit <= 500:
        raise InvalidInput("limit must be from 1 to 500")
    checked = _subscription_status(status) if status else None
    with engine.begin() as conn:
        if store_lists.get_list(conn, list_id) is None:
            raise NotFound(f"no list {list_id}")
        rows = store_subscriptions.members(
            conn, list_id, status=checked, after=after, limit=limit + 1
        )
    items = rows[:limit]
    return {"items": items, "next": items[-1]["id"] if len(rows) > limit else None}


def set_subscription(
    engine: Engine, list_id: int, subscriber_id: int, status: str
) -> dict[str, Any]:
    """Subscribe a subscriber to a list, or change the subscription's status.

    Returns ``{"list_id", "subscriber_id", "status"}``. Raises NotFound, InvalidInput.
    """
    checked = _subscription_status(status)
    with engine.begin() as conn:
        if store_lists.get_list(conn, list_id) is None:
            raise NotFound(f"no list {list_id}")
        if store_subscribers.get_subscriber(conn, subscriber_id) is None:
            raise NotFound(f"no subscriber {subscriber_id}")
        store_subscribers.set_subscription(conn, subscriber_id, list_id, checked, now=utcnow())
    return {"list_id": list_id, "subscriber_id": subscriber_id, "status": checked}


def remove_subscription(engine: Engine, list_id: int, subscriber_id: int) -> None:
    """Delete a subscription outright. Raises NotFound when there is none."""
    with engine.begin() as conn:
        if not store_subscriptions.remove(conn, list_id, subscriber_id):
            raise NotFound(f"subscriber {subscriber_id} is not on list {list_id}")


def _subscription_status(status: str) -> str:
    try:
        return SubscriptionStatus(status).value
    except ValueError:
        raise InvalidInput(
            f"subscription status must be one of {', '.join(SubscriptionStatus)}"
        ) from None
