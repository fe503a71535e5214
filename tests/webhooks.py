"""A real HTTP webhook receiver on loopback that records every JSON body it is sent."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from herald.ops.alerts import AlertEngine

TIMEOUT = 45.0


class WebhookReceiver:
    """Listens on 127.0.0.1; ``fail_next`` answers that many requests with 503 first."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail_next = 0
        self.refused = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    refuse = receiver.fail_next > 0
                    if refuse:
                        receiver.fail_next -= 1
                        receiver.refused += 1
                    else:
                        receiver.bodies.append(json.loads(body))
                self.send_response(503 if refuse else 204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def notices(self, rule: str, status: str | None = None) -> list[dict[str, Any]]:
        """Bodies about ``rule`` (optionally only ``status`` firing or resolved)."""
        with self._lock:
            return [
                b
                for b in self.bodies
                if b.get("rule") == rule and (status is None or b.get("status") == status)
            ]

    def saw(self, rule: str, status: str, *, key: str | None = None) -> bool:
        return any(key is None or b["key"] == key for b in self.notices(rule, status))


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


async def evaluate_until(engine: AlertEngine, condition: Callable[[], bool], what: str) -> None:
    """Run evaluations every 0.1 s until ``condition`` holds (after the notices went out)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        await engine.run()
        await engine.notifier.flush(10)
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {TIMEOUT}s waiting for {what}")
        await asyncio.sleep(0.1)
