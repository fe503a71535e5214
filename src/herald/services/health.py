"""Readiness: can this node write to the database, and is its schema current?"""

from __future__ import annotations

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

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
