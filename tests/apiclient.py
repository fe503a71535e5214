"""A client of the REST API for tests: tokens per role, problem+json checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from herald.runtime import Runtime
from herald.services import auth
from tests.webapp import web_app

ROLES = ("viewer", "editor", "admin")


class Api:
    """An HTTP client on the app, and tokens for each role."""

    def __init__(self, http: httpx.AsyncClient, runtime: Runtime) -> None:
        self.http = http
        self.runtime = runtime
        self.tokens = {
            role: auth.create_token(runtime.engine, f"{role}-token", role)[0] for role in ROLES
        }

    def headers(self, role: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}", **extra}

    async def get(self, path: str, role: str = "viewer", **kw: object) -> httpx.Response:
        return await self.http.get(f"/api/v1{path}", headers=self.headers(role), **kw)  # type: ignore[arg-type]

    async def send(
        self, method: str, path: str, body: object = None, role: str = "editor", **headers: str
    ) -> httpx.Response:
        return await self.http.request(
            method, f"/api/v1{path}", json=body, headers=self.headers(role, **headers)
        )


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with web_app(database_url, tmp_path, client=("203.0.113.7", 4321)) as app:
        yield Api(app.http, app.runtime)


def assert_problem(response: httpx.Response, status: int, text: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and text in body["detail"], body
