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


def test_it_reports_behind_only_for_a_known_older_revision() -> None:
    from herald.store.engine import schema_behind

    assert schema_behind(None)
    assert schema_behind("0001")
    assert not schema_behind(head_revision())
    assert not schema_behind("ffff_from_a_newer_version")
