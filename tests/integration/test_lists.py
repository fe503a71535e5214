from __future__ import annotations

import pytest
from sqlalchemy import Engine

from herald.errors import Conflict, InvalidInput
from herald.services import lists


def test_it_creates_and_lists_lists(engine: Engine) -> None:
    a = lists.create_list(engine, "Newsletter")
    b = lists.create_list(engine, "Beta", double_optin=True, description="testers")
    rows = lists.list_lists(engine)
    assert [(r["id"], r["name"], r["optin"]) for r in rows] == [
        (a, "Newsletter", "single"),
        (b, "Beta", "double"),
    ]


def test_it_refuses_a_duplicate_or_blank_name(engine: Engine) -> None:
    lists.create_list(engine, "News")
    with pytest.raises(Conflict):
        lists.create_list(engine, "News")
    with pytest.raises(InvalidInput):
        lists.create_list(engine, "  ")
    assert len(lists.list_lists(engine)) == 1
