"""The suppression list through the API: search, add by hand, remove."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from herald.domain.addresses import normalise_email
from herald.domain.clock import utcnow
from herald.errors import InvalidInput, NotFound
from herald.store import suppressions as store

MAX_PAGE = 500
REASONS = frozenset({"manual", "bounce", "complaint", "unsubscribe"})


def search_suppressions(
    engine: Engine, *, email: str | None = None, after: str = "", limit: int = 100
) -> dict[str, Any]:
    """A page ``{"items": […], "next": address or None}``; pass ``next`` back as ``after``."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be from 1 to {MAX_PAGE}")
    with engine.begin() as conn:
        rows = store.search_suppressions(
            conn, email=email.lower() if email else None, after=after, limit=limit + 1
        )
    items = rows[:limit]
    return {"items": items, "next": items[-1]["email"] if len(rows) > limit else None}


def add_suppression(
    engine: Engine, email: str, *, reason: str = "manual", source: str = "api"
) -> dict[str, Any]:
    """Suppress an address (an existing entry keeps its reason); returns the entry.

    Raises InvalidInput for a bad address or reason.
    """
    if reason not in REASONS:
        raise InvalidInput(f"reason must be one of {', '.join(sorted(REASONS))}")
    address = normalise_email(email)
    with engine.begin() as conn:
        store.suppress(conn, [address], reason=reason, source=source, now=utcnow())
        found = store.get_suppression(conn, address)
    assert found is not None
    return found


def remove_suppression(engine: Engine, email: str) -> None:
    """Allow mail to an address again. Raises NotFound when it is not suppressed."""
    with engine.begin() as conn:
        if not store.unsuppress(conn, email.strip().lower()):
            raise NotFound(f"{email[:320]!r} is not suppressed")
