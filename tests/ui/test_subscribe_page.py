"""The subscribe form and the confirm page in a real browser (Debian's chromium).

Playwright drives the system chromium; it never downloads browsers of its
own. Outside CI a missing chromium skips this; with ``CI=true`` it fails.
"""

from __future__ import annotations

import email
import email.policy
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from herald.services import lists
from herald.store import subscriptions
from herald.store.engine import make_engine
from herald.store.tables import subscribers
from tests.ci import unavailable
from tests.processes import HeraldUp, wait_until
from tests.sinks import Sink

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        unavailable("chromium is not installed (apt-get install -y chromium)")
    return path


@pytest.fixture
def browser_page() -> Iterator[Any]:
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable(
            "the playwright package is missing",
            in_ci="the playwright package is missing (pip install -e '.[test]')",
        )
    with sync_playwright() as play:
        browser = play.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def test_it_subscribes_and_confirms_through_the_pages_in_a_browser(
    browser_page: Any, database_url: str, tmp_path: Path, sink: Sink
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    engine = make_engine(database_url)
    list_id = lists.create_list(engine, "Garden news", double_optin=True, public=True)
    node = HeraldUp(database_url, tmp_path, sink.url)
    node.start()
    try:
        page.goto(f"{node.url}/subscribe/{list_id}")
        page.get_by_label("Email").fill("rose@example.com")
        page.get_by_label("Name").fill("Rose")
        page.get_by_role("button", name="Subscribe").click()
        expect(page.get_by_role("heading")).to_have_text("Check your inbox")

        wait_until(lambda: len(sink.messages) == 1, 60, "the confirmation email")
        msg = email.message_from_bytes(sink.messages[0].data, policy=email.policy.default)
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        link = re.search(r"http://\S+/confirm/[A-Za-z0-9_-]+", text)
        assert link is not None, text

        page.goto(link.group(0))
        expect(page.get_by_role("button")).to_have_text("Confirm my subscription")
        assert _status(engine, "rose@example.com") == {list_id: "unconfirmed"}
        page.get_by_role("button", name="Confirm my subscription").click()
        expect(page.get_by_role("heading")).to_have_text("Subscription confirmed")
        assert _status(engine, "rose@example.com") == {list_id: "confirmed"}
    finally:
        node.stop()
        engine.dispose()


def _status(engine: Engine, address: str) -> dict[int, str]:
    with engine.begin() as conn:
        subscriber_id = conn.scalar(select(subscribers.c.id).where(subscribers.c.email == address))
        return subscriptions.statuses(conn, int(subscriber_id or 0))
