"""Tracking while the database is gone, and a node killed with events in its spool.

A real ``herald up`` node serves the links of a real received message. The
PostgreSQL primary is killed: clicks and opens still answer. The node is
then killed with kill -9 while its events wait in the spool (nothing could
be drained). The standby is promoted and the node restarted with the same
name and data directory: every acknowledged event arrives, exactly once.
"""

from __future__ import annotations

import email
import email.policy
import html
import re
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import Engine, func, select

from herald.services import campaigns
from herald.store.engine import make_engine, migrate
from herald.store.tables import tracking_events
from tests.chaos.pgcluster import PgPair
from tests.factories import add_subscribers, finished, make_campaign, make_list
from tests.processes import HeraldUp, wait_until
from tests.sinks import Sink

ARRIVAL_TIMEOUT = 60.0


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    path = tmp_path / "node"
    path.mkdir()
    return path


def _links(sink: Sink) -> tuple[str, str]:
    [message] = sink.messages
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    part = parsed.get_body(("html",))
    assert part is not None
    text = part.get_content()
    [click] = [html.unescape(h) for h in re.findall(r'href="([^"]+/t/c/[^"]+)"', text)]
    [pixel] = [html.unescape(p) for p in re.findall(r'<img src="([^"]+)"', text)]
    return click, pixel


def _events(engine: Engine) -> int:
    with engine.begin() as conn:
        return int(conn.scalar(select(func.count()).select_from(tracking_events)) or 0)


@pytest.mark.slow
def test_events_survive_a_database_outage_and_a_killed_node(
    pg_pair: PgPair, sink: Sink, node_dir: Path
) -> None:
    engine = make_engine(pg_pair.url)
    migrate(engine)
    add_subscribers(engine, make_list(engine), 1)
    html_body = '<html><body><a href="https://shop.example.com/">Shop</a></body></html>'
    campaign_id = make_campaign(engine, html=html_body, start=False)
    node = HeraldUp(pg_pair.url, node_dir, sink.url)
    try:
        node.start()
        # Links point at the node's own base URL: start the campaign once it runs.
        campaigns.change_status(engine, campaign_id, "start")
        wait_until(finished(engine, campaign_id), ARRIVAL_TIMEOUT, "the campaign to finish")
        click, pixel = _links(sink)
        assert urlsplit(click).netloc == f"127.0.0.1:{node.port}"
        pg_pair.wait_replicated()

        pg_pair.kill_primary()  # no database reachable now
        redirect = httpx.get(click, timeout=5)
        assert redirect.status_code == 302
        assert redirect.headers["location"] == "https://shop.example.com/"
        assert httpx.get(pixel, timeout=5).headers["content-type"] == "image/gif"
        node.kill()  # the two events are only in the spool
        spooled = sum(p.stat().st_size for p in (node_dir / "spool").rglob("*.jsonl"))
        assert spooled > 0

        pg_pair.promote_standby()
        node.start()
        wait_until(lambda: _events(engine) >= 2, ARRIVAL_TIMEOUT, "the spooled events")
        wait_until(
            lambda: not any(p.stat().st_size for p in (node_dir / "spool").rglob("*.jsonl")),
            ARRIVAL_TIMEOUT,
            "the spool to empty",
        )
        assert _events(engine) == 2  # once each
    finally:
        node.stop()
        engine.dispose()
