"""Readiness: can this node write to the database, and is its schema current?"""

from __future__ import annotations

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from herald.services import nodes
from herald.store.engine import current_revision, head_revision, schema_behind


def database_problem(engine: Engine) -> str | None:
    """None when the database accepts a write transaction at the current schema.

    Otherwise a short, human-readable reason.
    """
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT 1"))
        revision = current_revision(engine)
    except SQLAlchemyError as exc:
        return f"database unreachable: {type(exc.__cause__ or exc).__name__}"
    if schema_behind(revision):
        return f"schema at {revision}, this node needs {head_revision()}: run 'herald init'"
    return None


def schema_compatibility(engine: Engine) -> dict[str, object]:
    """Can this version of Herald run against the database, beside the live nodes?

    ``state`` is ``current`` (at this code's head), ``behind`` (this code needs
    migrations the database lacks: run ``herald migrate``; they are
    expand-only, so the older nodes keep running) or ``ahead`` (a newer Herald
    migrated it; expand-only migrations keep this version working during a
    rolling upgrade). Raises the database's errors.
    """
    revision = current_revision(engine)
    head = head_revision()
    if revision == head:
        state = "current"
    elif schema_behind(revision):
        state = "behind"
    else:
        state = "ahead"
    return {
        "revision": revision,
        "head": head,
        "state": state,
        "compatible": state != "behind",
        # Not list_nodes: a schema behind this code lacks the columns it added.
        "live_nodes": nodes.live_versions(engine),
    }
