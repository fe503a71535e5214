"""The REST API under /api/v1: auth, roles, resources, problem+json and idempotency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update

from herald.config import Settings
from herald.domain.clock import utcnow
from herald.runtime import build_runtime
from herald.services import auth, idempotency
from herald.store.tables import idempotency_keys
from tests.apiclient import Api, assert_problem
from tests.factories import SECRET

PASSWORD = "correct horse battery"


async def test_every_route_needs_a_valid_token(api: Api) -> None:
    missing = await api.http.get("/api/v1/lists")
    assert_problem(missing, 401, "Authentication is required")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    forged = await api.http.get("/api/v1/lists", headers={"Authorization": "Bearer hrld_nope"})
    assert_problem(forged, 401, "invalid or revoked API token")
    auth.revoke_token(api.runtime.engine, "viewer-token")
    assert_problem(await api.get("/lists"), 401, "invalid or revoked")


async def test_repeated_failures_from_one_address_are_slowed_down(api: Api) -> None:
    bad = {"Authorization": "Bearer hrld_guessing-guessing-guessing"}
    codes = [(await api.http.get("/api/v1/lists", headers=bad)).status_code for _ in range(6)]
    assert codes == [401] * 5 + [429]
    blocked = await api.get("/lists")  # even a good token waits out the block
    assert_problem(blocked, 429, "Too many failed attempts")
    assert int(blocked.headers["retry-after"]) >= 1


async def test_roles_are_enforced(api: Api) -> None:
    assert (await api.get("/lists")).status_code == 200
    refused = await api.send("POST", "/lists", {"name": "News"}, role="viewer")
    assert_problem(refused, 403, "needs the editor role")
    assert (await api.send("POST", "/lists", {"name": "News"})).status_code == 201
    assert_problem(await api.get("/tokens", role="editor"), 403, "admin")
    assert (await api.get("/tokens", role="admin")).status_code == 200


async def test_lists_and_subscribers_round_trip_with_search_and_paging(api: Api) -> None:
    news = (await api.send("POST", "/lists", {"name": "News", "double_optin": True})).json()
    assert news["optin"] == "double"
    ids = []
    for n in range(5):
        body = {
            "email": f"Person{n}@Example.com",
            "name": f"Person {n}",
            "attribs": {"plan": "pro" if n % 2 else "free"},
            "lists": {str(news["id"]): "confirmed"} if n < 3 else {},
        }
        created = await api.send("POST", "/subscribers", body)
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    one = (await api.get(f"/subscribers/{ids[0]}")).json()
    assert one["email"] == "person0@example.com"
    assert one["lists"][0]["status"] == "confirmed"

    pages, after = [], 0
    while after is not None:
        page = (await api.get("/subscribers", params={"limit": 2, "after": after})).json()
        pages.append([s["id"] for s in page["items"]])
        after = page["next"]
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]
    members = (await api.get("/subscribers", params={"list_id": news["id"]})).json()
    assert [s["id"] for s in members["items"]] == ids[:3]
    pros = (await api.get("/subscribers", params={"attribute": "plan=pro"})).json()
    assert [s["id"] for s in pros["items"]] == [ids[1], ids[3]]
    found = (await api.get("/subscribers", params={"email": "son4@"})).json()
    assert [s["id"] for s in found["items"]] == [ids[4]]

    changed = await api.send("PATCH", f"/subscribers/{ids[4]}", {"status": "blocklisted"})
    assert changed.json()["status"] == "blocklisted"
    assert (await api.send("DELETE", f"/subscribers/{ids[4]}")).status_code == 204
    assert_problem(await api.get(f"/subscribers/{ids[4]}"), 404, "no subscriber")
    renamed = await api.send("PATCH", f"/lists/{news['id']}", {"name": "Weekly"})
    assert renamed.json()["name"] == "Weekly"
    assert renamed.json()["subscribers"] == {"confirmed": 3}


async def test_bad_input_gets_a_clear_problem_and_changes_nothing(api: Api) -> None:
    unknown = await api.send("POST", "/lists", {"name": "News", "colour": "red"})
    assert_problem(unknown, 422, "colour")
    header = await api.send("POST", "/subscribers", {"email": "a@example.com", "name": "A\r\nB"})
    assert_problem(header, 422, "single line")
    invalid = await api.send("POST", "/subscribers", {"email": "not an address"})
    assert_problem(invalid, 400, "")
    await api.send("POST", "/subscribers", {"email": "a@example.com"})
    twice = await api.send("POST", "/subscribers", {"email": "A@example.com"})
    assert_problem(twice, 409, "already exists")
    listed = (await api.get("/subscribers")).json()["items"]
    assert [s["email"] for s in listed] == ["a@example.com"]


async def test_a_campaign_is_created_started_and_reported(api: Api) -> None:
    news = (await api.send("POST", "/lists", {"name": "News"})).json()
    draft = {
        "name": "Hello",
        "subject": "Hello {{ subscriber.name }}",
        "html": "<p>Hi</p>",
        "from": "News <news@example.com>",
        "lists": [news["id"]],
    }
    injected = await api.send("POST", "/campaigns", {**draft, "subject": "Hi\nBcc: x@y.z"})
    assert_problem(injected, 422, "single line")
    created = await api.send("POST", "/campaigns", draft)
    assert created.status_code == 201, created.text
    campaign = created.json()
    assert campaign["status"] == "draft"
    refused = await api.send("POST", f"/campaigns/{campaign['id']}/start", role="viewer")
    assert_problem(refused, 403, "editor")
    started = await api.send("POST", f"/campaigns/{campaign['id']}/start")
    assert started.json()["status"] == "running"
    again = await api.send("POST", f"/campaigns/{campaign['id']}/resume")
    assert_problem(again, 409, "cannot resume")


async def test_a_retried_post_with_an_idempotency_key_does_nothing_twice(api: Api) -> None:
    body = {"email": "once@example.com"}
    first = await api.send("POST", "/subscribers", body, **{"Idempotency-Key": "k-1"})
    retry = await api.send("POST", "/subscribers", body, **{"Idempotency-Key": "k-1"})
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert retry.headers["idempotent-replayed"] == "true"
    other = await api.send(
        "POST", "/subscribers", {"email": "x@example.com"}, **{"Idempotency-Key": "k-1"}
    )
    assert_problem(other, 400, "different request")
    items = (await api.get("/subscribers")).json()["items"]
    assert [s["email"] for s in items] == ["once@example.com"]
    # Keys belong to their caller: the admin's k-1 is another key.
    mine = await api.send(
        "POST", "/lists", {"name": "A"}, role="admin", **{"Idempotency-Key": "k-1"}
    )
    assert mine.status_code == 201


async def test_a_session_cookie_works_and_needs_the_csrf_header_to_change_things(
    api: Api,
) -> None:
    auth.create_user(api.runtime.engine, "ann@example.com", PASSWORD, "editor")
    wrong = await api.http.post(
        "/api/v1/auth/login", json={"email": "ann@example.com", "password": "nope-nope-nope"}
    )
    assert_problem(wrong, 401, "wrong email or password")
    login = await api.http.post(
        "/api/v1/auth/login", json={"email": "ANN@example.com", "password": PASSWORD}
    )
    assert login.status_code == 200
    assert "httponly" in login.headers["set-cookie"].lower()
    me = await api.http.get("/api/v1/auth/me")
    assert me.json() == {"kind": "user", "name": "ann@example.com", "role": "editor"}
    forged = await api.http.post("/api/v1/lists", json={"name": "CSRF"})
    assert_problem(forged, 401, "x-herald-request")
    made = await api.http.post(
        "/api/v1/lists", json={"name": "Mine"}, headers={"X-Herald-Request": "1"}
    )
    assert made.status_code == 201
    auth.set_user(api.runtime.engine, "ann@example.com", role="viewer")
    ended = await api.http.get("/api/v1/auth/me")  # a role change ends sessions
    assert_problem(ended, 401, "session")


async def test_the_api_describes_itself_without_external_assets(api: Api) -> None:
    spec = (await api.http.get("/api/v1/openapi.json")).json()
    assert "/subscribers" in spec["paths"] and "/campaigns/{campaign_id}/start" in spec["paths"]
    page = await api.http.get("/api/v1/docs")
    assert page.status_code == 200 and "/api/v1/subscribers" in page.text
    assert "<script" not in page.text and "cdn" not in page.text.lower()


def test_the_cli_makes_users_and_tokens_that_the_api_accepts(
    tmp_path: Path, database_url: str
) -> None:
    env = {
        **os.environ,
        "HERALD_DATABASE_URL": database_url,
        "HERALD_DATA_DIR": str(tmp_path),
        "HERALD_SECRET_KEY": SECRET,
    }

    def herald(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "herald", *args],
            input=stdin,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    made = herald("users", "create", "bob@example.com", "--role", "admin", stdin=PASSWORD + "\n")
    assert made.returncode == 0, made.stderr
    short = herald("users", "create", "eve@example.com", stdin="short\n")
    assert short.returncode == 2 and "at least 10 characters" in short.stderr
    assert "Traceback" not in short.stderr
    listed = json.loads(herald("users", "ls", "--json").stdout)
    assert [(u["email"], u["role"]) for u in listed] == [("bob@example.com", "admin")]
    assert "password" not in json.dumps(listed)
    created = json.loads(
        herald("tokens", "create", "--name", "ci", "--role", "editor", "--json").stdout
    )
    assert created["token"].startswith("hrld_")
    shown = herald("tokens", "ls", "--json").stdout
    assert created["token"] not in shown and "token_hash" not in shown
    assert herald("tokens", "revoke", "ci").returncode == 0
    assert herald("tokens", "revoke", "ci").returncode == 3


def test_idempotency_keys_are_forgotten_after_a_day(database_url: str, tmp_path: Path) -> None:
    runtime = build_runtime(
        Settings(database_url=database_url, data_dir=tmp_path, secret_key=SECRET)
    )
    try:
        for key in ("old", "new"):
            idempotency.begin(
                runtime.engine, "token:1", key, method="POST", path="/lists", request_hash="h"
            )
        with runtime.engine.begin() as conn:
            conn.execute(
                update(idempotency_keys)
                .where(idempotency_keys.c.key == "old")
                .values(created_at=utcnow() - idempotency.KEEP - timedelta(minutes=1))
            )
        assert idempotency.purge(runtime.engine) == 1
        with runtime.engine.begin() as conn:
            left = conn.scalars(select(idempotency_keys.c.key)).all()
        assert left == ["new"]
    finally:
        runtime.close()
