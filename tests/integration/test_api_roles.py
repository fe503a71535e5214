"""Every route of the OpenAPI document, called with no token and with each role.

The role rule below is the API's contract: reads need ``viewer``, changes
``editor``, tokens, users and relay changes ``admin``. A route added without a
role check (or with the wrong one) fails here without anyone listing it.
"""

from __future__ import annotations

from typing import Any

from tests.apiclient import ROLES, Api

# Routes anyone may call: logging in and out.
PUBLIC = {("POST", "/auth/login"), ("POST", "/auth/logout")}
# Reads that use POST because they take a body.
VIEWER_POSTS = {("POST", "/campaigns/{campaign_id}/preview")}
# Path parameter values that name nothing, so an allowed call changes nothing.
PARAMS = {"name": "nothing-here", "email": "nobody@example.com"}


def required_role(method: str, path: str) -> str | None:
    """The least role a route needs (None: public)."""
    if (method, path) in PUBLIC:
        return None
    if path.startswith(("/tokens", "/users")):
        return "admin"
    if path.startswith("/relays") and method != "GET":
        return "admin"
    if method == "GET" or (method, path) in VIEWER_POSTS:
        return "viewer"
    return "editor"


def _operations(spec: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, methods in spec["paths"].items()
        for method in methods
        if method in {"get", "post", "put", "patch", "delete"}
    ]


def _url(path: str) -> str:
    for name, value in PARAMS.items():
        path = path.replace("{" + name + "}", value)
    while "{" in path:
        start = path.index("{")
        path = path[:start] + "987654" + path[path.index("}") + 1 :]
    return "/api/v1" + path


async def _call(api: Api, method: str, path: str, role: str | None) -> int:
    headers = api.headers(role) if role else {}
    body = None if method in {"GET", "DELETE"} else {}
    response = await api.http.request(method, _url(path), json=body, headers=headers)
    if response.status_code in (401, 403):
        assert response.headers["content-type"].startswith("application/problem+json")
    return response.status_code


async def test_every_route_enforces_its_role(api: Api) -> None:
    spec = (await api.http.get("/api/v1/openapi.json")).json()
    operations = _operations(spec)
    assert len(operations) > 40  # the document really lists the API
    wrong = []
    for method, path in operations:
        need = required_role(method, path)
        got = {None: await _call(api, method, path, None)}
        for role in ROLES:
            got[role] = await _call(api, method, path, role)
        for role, status in got.items():
            if need is None:
                ok = status not in (401, 403) and status < 500
            elif role is None:
                ok = status == 401
            elif ROLES.index(role) < ROLES.index(need):
                ok = status == 403
            else:
                ok = status not in (401, 403) and status < 500
            if not ok:
                wrong.append(f"{method} {path} as {role or 'anonymous'}: {status} (needs {need})")
    assert not wrong, "\n".join(wrong)
