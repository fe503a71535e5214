"""CSV imports through the API: upload, background run, polling from any node, errors."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from herald.domain.clock import utcnow
from herald.services import import_jobs, subscribers
from herald.store import imports as store_imports
from tests.apiclient import Api, assert_problem
from tests.factories import make_list
from tests.webapp import web_app


async def _upload(api: Api, data: bytes, lists: str, **headers: str) -> httpx.Response:
    return await api.http.post(
        "/api/v1/imports",
        files={"file": ("people.csv", data, "text/csv")},
        data={"lists": lists},
        headers=api.headers("editor", **headers),
    )


async def _finished(http: httpx.AsyncClient, api: Api, import_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        got = await http.get(f"/api/v1/imports/{import_id}", headers=api.headers("viewer"))
        body: dict[str, Any] = got.json()
        if body["status"] in ("done", "failed") or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.05)


async def test_it_imports_an_upload_in_the_background_and_any_node_reports_it(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    engine = api.runtime.engine
    news, vip = make_list(engine, "News"), make_list(engine, "VIP")
    rows = ["email,name", *(f"user{n}@example.com,User {n}" for n in range(2500))]
    rows += ["not-an-address,Bad", '=HYPERLINK("http://evil"),Formula']
    data = ("\n".join(rows) + "\n").encode()
    accepted = await _upload(api, data, f"{news},{vip}")
    assert accepted.status_code == 202, accepted.text
    import_id = accepted.json()["id"]
    async with web_app(database_url, tmp_path / "other") as other:
        done = await _finished(other.http, api, import_id)
    assert done["status"] == "done", done
    assert done["rows"] == 2502 and done["errors"] == 2
    assert done["added"] == 2500 and done["bytes_read"] == done["bytes_total"] == len(data)
    page = subscribers.search_subscribers(engine, list_id=vip, limit=500)
    assert len(page["items"]) == 500
    report = await api.get(f"/imports/{import_id}/errors")
    assert report.headers["content-type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(report.content.decode("utf-8-sig"))))
    assert lines[0] == ["line", "email", "error"] and len(lines) == 3
    assert lines[2][1].startswith("'=HYPERLINK"), lines  # escaped against formula injection
    assert not list((tmp_path / "imports").glob("*.csv"))  # the upload is deleted after


async def test_it_refuses_an_upload_over_the_limit_and_bad_forms(api: Api) -> None:
    news = make_list(api.runtime.engine, "News")
    api.runtime.settings.import_max_bytes = 1000
    big = b"email\n" + b"someone@example.com\n" * 100_000
    assert_problem(await _upload(api, big, str(news)), 413, "larger than the limit")
    assert_problem(await _upload(api, b"email\n", "999"), 404, "no list 999")
    assert_problem(await _upload(api, b"email\n", "x"), 400, "list ids")
    no_file = await api.http.post(
        "/api/v1/imports", data={"lists": str(news)}, headers=api.headers("editor")
    )
    assert_problem(no_file, 400, "part named file")
    assert (await api.get("/imports/1")).status_code == 404


async def test_it_reports_an_import_whose_node_died_as_failed(api: Api, tmp_path: Path) -> None:
    engine = api.runtime.engine
    news = make_list(engine, "News")
    import_id = import_jobs.create_import(
        engine, list_ids=[news], filename="x.csv", node="gone-node", bytes_total=10
    )
    silent = utcnow() - timedelta(seconds=61)
    with engine.begin() as conn:
        store_imports.set_progress(conn, import_id, {"status": "running"}, now=silent)
    reported = (await api.get(f"/imports/{import_id}")).json()
    assert reported["status"] == "failed"
    assert "gone-node stopped working on it" in reported["detail"]
    late = tmp_path / "late.csv"
    late.write_text("email\nlate@example.com\n")
    import_jobs.run_import(engine, import_id, late)  # the node wakes up: it must not run it
    assert (await api.get(f"/imports/{import_id}")).json() == reported
    assert subscribers.search_subscribers(engine)["items"] == [] and not late.exists()
