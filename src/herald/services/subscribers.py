"""One subscriber at a time: create, read, change, delete, search (the API's use cases).

Bulk loading is `services.imports`. Addresses are normalised and validated
(domain.addresses); attributes are a JSON object of at most `MAX_ATTRIBS`
bytes; list subscriptions are set per list with a status.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, Engine

from herald.domain.addresses import normalise_email
from herald.domain.clock import utcnow
from herald.domain.states import SubscriberStatus, SubscriptionStatus
from herald.errors import Conflict, InvalidInput, NotFound
from herald.store import lists as store_lists
from herald.store import subscribers as store

MAX_ATTRIBS = 16_384
MAX_PAGE = 500


def create_subscriber(
    engine: Engine,
    email: str,
    *,
    name: str = "",
    attribs: dict[str, Any] | None = None,
    status: str = "enabled",
    lists: dict[int, str] | None = None,
) -> dict[str, Any]:
    """Store a subscriber, subscribed to ``lists`` ({list id: status}). Raises
    InvalidInput, NotFound (a list), Conflict (the address exists)."""
    values = {
        "email": normalise_email(email),
        "name": _name(name),
        "attribs": _attribs(attribs or {}),
        "status": _status(status),
    }
    now = utcnow()
    with engine.begin() as conn:
        subscriber_id = store.insert_subscriber(conn, values, now=now)
        if subscriber_id is None:
            raise Conflict(f"a subscriber {values['email']} already exists")
        _subscribe(conn, subscriber_id, lists or {})
        return _full(conn, subscriber_id)


def get_subscriber(engine: Engine, subscriber_id: int) -> dict[str, Any]:
    """The subscriber with their subscriptions. Raises NotFound."""
    with engine.begin() as conn:
        return _full(conn, subscriber_id)


def update_subscriber(
    engine: Engine, subscriber_id: int, changes: dict[str, Any]
) -> dict[str, Any]:
    """Change name, attribs, status and/or list subscriptions ({list id: status})."""
    values: dict[str, Any] = {}
    if "name" in changes:
        values["name"] = _name(changes["name"])
    if "attribs" in changes:
        values["attribs"] = _attribs(changes["attribs"])
    if "status" in changes:
        values["status"] = _status(changes["status"])
    with engine.begin() as conn:
        if not store.update_subscriber(conn, subscriber_id, values, now=utcnow()):
            raise NotFound(f"no subscriber {subscriber_id}")
        _subscribe(conn, subscriber_id, changes.get("lists") or {})
        return _full(conn, subscriber_id)


def delete_subscriber(engine: Engine, subscriber_id: int) -> None:
    """Delete a subscriber and what hangs off them. Raises NotFound."""
    with engine.begin() as conn:
        if not store.delete_subscriber(conn, subscriber_id):
            raise NotFound(f"no subscriber {subscriber_id}")


def search_subscribers(
    engine: Engine,
    *,
    email: str | None = None,
    status: str | None = None,
    list_id: int | None = None,
    attribute: str | None = None,
    after: int = 0,
    limit: int = 100,
) -> dict[str, Any]:
    """A page of matching subscribers: ``{"items": […], "next": id or None}``.

    ``attribute`` is ``key=value``. Pass ``next`` back as ``after`` for the next page.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be from 1 to {MAX_PAGE}")
    pair = None
    if attribute is not None:
        key, sep, value = attribute.partition("=")
        if not sep or not key:
            raise InvalidInput("attribute must be written key=value")
        pair = (key, value)
    with engine.begin() as conn:
        rows = store.search_subscribers(
            conn,
            email=email.lower() if email else None,
            status=_status(status) if status else None,
            list_id=list_id,
            attribute=pair,
            after=after,
            limit=limit + 1,
        )
    more = len(rows) > limit
    items = rows[:limit]
    return {"items": items, "next": items[-1]["id"] if more else None}


def _full(conn: Connection, subscriber_id: int) -> dict[str, Any]:
    row = store.get_subscriber(conn, subscriber_id)
    if row is None:
        raise NotFound(f"no subscriber {subscriber_id}")
    return {**row, "lists": store.subscriptions_of(conn, subscriber_id)}


def _subscribe(conn: Connection, subscriber_id: int, lists: dict[int, str]) -> None:
    now = utcnow()
    for list_id, status in lists.items():
        if store_lists.get_list(conn, list_id) is None:
            raise NotFound(f"no list {list_id}")
        try:
            checked = SubscriptionStatus(status)
        except ValueError:
            raise InvalidInput(
                f"subscription status must be one of {', '.join(SubscriptionStatus)}"
            ) from None
        store.set_subscription(conn, subscriber_id, list_id, checked.value, now=now)


def _name(name: Any) -> str:
    if not isinstance(name, str) or len(name) > 255 or any(ord(c) < 32 for c in name):
        raise InvalidInput("a name is at most 255 characters, without control characters")
    return name.strip()


def _attribs(attribs: Any) -> dict[str, Any]:
    if not isinstance(attribs, dict):
        raise InvalidInput("attribs must be a JSON object")
    if len(json.dumps(attribs)) > MAX_ATTRIBS:
        raise InvalidInput(f"attribs are limited to {MAX_ATTRIBS} bytes of JSON")
    return attribs


def _status(status: Any) -> str:
    try:
        return SubscriberStatus(status).value
    except ValueError:
        raise InvalidInput(
            f"status must be one of {', '.join(SubscriberStatus)}, not {status!r}"
        ) from None
