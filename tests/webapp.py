"""A node's web app in the test's own event loop, reached through httpx."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from herald.config import Settings
from herald.node import NodeState
from herald.runtime import Runtime, build_runtime
from herald.web.app import create_app
from tests.factories import SECRET

BASE_URL = "http://herald.test"


@dataclass
class WebApp:
    http: httpx.AsyncClient
    runtime: Runtime
    state: NodeState


@contextlib.asynccontextmanager
async def web_app(
    database_url: str, data_dir: Path, *, client: tuple[str, int] = ("127.0.0.1", 123)
) -> AsyncIterator[WebApp]:
    """``create_app`` for a runtime on ``database_url``; requests come from ``client``."""
    runtime = build_runtime(
        Settings(database_url=database_url, data_dir=data_dir, secret_key=SECRET, base_url=BASE_URL)
    )
    state = NodeState()
    transport = httpx.ASGITransport(app=create_app(runtime, state), client=client)
    try:
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            yield WebApp(http, runtime, state)
    finally:
        runtime.close()
