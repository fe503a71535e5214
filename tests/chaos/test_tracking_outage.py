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
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import Engine, func, select

from herald.services import campaigns
from herald.store.engine import make_engine, migrate
from herald.store.tables import tracking_events
from tests.chaos.pgcluster import PgPair
from tests.factories import SECRET, add_subscribers, finished, make_campaign, make_list
from tests.processes import free_port, wait_until
from tests.sinks import Sink

BOOT_TIMEOUT = 30.0
ARRIVAL_TIMEOUT = 60.0


class Node:
    """One ``herald up`` process (HTTP and worker) that can be killed and restarted."""

    def __init__(self, database_url: str, data_dir: Path, relay_url: str) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "HERALD_DATABASE_URL": database_url,
            "HERALD_DATA_DIR": str(data_dir),
            "HERALD_SECRET_KEY": SECRET,
            "HERALD_NODE_NAME": "tracker",
            "HERALD_RELAYS": relay_url,
            "HERALD_HTTP_PORT": str(self.port),
            "HERALD_BASE_URL": f"http://127.0.0.1:{self.port}",
        }
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        with (self.data_dir / "node.log").open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "herald", "up"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        wait_until(self._answers, BOOT_TIMEOUT, "the node to answer /healthz")

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"node exited: {(self.data_dir / 'node.log').read_text()[-2000:]}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


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
    node = Node(pg_pair.url, node_dir, sink.url)
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
