from __future__ import annotations

from sqlalchemy import Engine, inspect

from herald.store.engine import current_revision, head_revision, migrate


def test_it_creates_every_table_and_is_idempotent(engine: Engine) -> None:
    names = set(inspect(engine).get_table_names())
    assert {
        "subscribers",
        "lists",
        "subscriptions",
        "templates",
        "campaigns",
        "deliveries",
        "suppressions",
        "campaign_lists",
    } <= names
    before, after = migrate(engine)
    assert before == after == head_revision() == current_revision(engine)
