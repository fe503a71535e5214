"""``/status`` and ``/status.json``: the built-in probes' figures, for anyone.

Plain HTML (no JavaScript, no third-party assets) and the same data as JSON.
``HERALD_STATUS_PAGE=off`` turns both off (404). They show relay names, never
hosts, user names or error texts (which may name hosts), and node counts,
never node names (host names by default).
"""

from __future__ import annotations

import asyncio
import html
import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from herald.domain.slo import FIGURE_COLUMNS, WINDOWS, figure_cells
from herald.errors import DatabaseUnavailable
from herald.runtime import Runtime
from herald.services.status import status_report

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Herald status</title>
<style>body{{font-family:system-ui,sans-serif;max-width:64rem;margin:2rem auto;padding:0 1rem;
color:#222}}table{{border-collapse:collapse;margin:0 0 2rem}}th,td{{padding:.25rem .6rem;
border-bottom:1px solid #ddd;text-align:right}}th:first-child,td:first-child{{text-align:left}}
.operational{{color:#075}}.degraded{{color:#a60}}.down{{color:#b00}}.unknown{{color:#666}}
</style></head><body>{body}</body></html>
"""
CACHE_SECONDS = 10.0
_UNAVAILABLE = {"state": "unknown", "reason": "the status database does not answer"}


def status_router(runtime: Runtime) -> APIRouter:
    """The two routes; with ``status_page = off`` both answer 404."""
    router = APIRouter()
    enabled = runtime.settings.status_page == "public"
    # Anyone may ask, and a report reads up to 48 h of raw results: build one
    # at most every CACHE_SECONDS per node, however many ask meanwhile.
    cached: list[tuple[float, dict[str, Any]]] = []
    building = asyncio.Lock()

    async def report() -> dict[str, Any] | None:
        async with building:
            if cached and time.monotonic() - cached[0][0] < CACHE_SECONDS:
                return cached[0][1]
            try:
                data = await asyncio.to_thread(
                    status_report,
                    runtime.engine,
                    windows=list(WINDOWS),
                    slo=runtime.settings.slo,
                    public=True,
                )
            except (SQLAlchemyError, DatabaseUnavailable):
                return None
            cached[:] = [(time.monotonic(), data)]
            return data

    @router.get("/status", response_class=HTMLResponse, include_in_schema=False)
    async def status_page() -> HTMLResponse:
        """The status page."""
        if not enabled:
            return HTMLResponse("Not Found", status_code=404)
        data = await report()
        if data is None:
            return HTMLResponse(
                _PAGE.format(body="<h1>Status unknown</h1><p>The status cannot be read now.</p>"),
                status_code=503,
                headers={"Retry-After": "30"},
            )
        return HTMLResponse(_PAGE.format(body=render(data)))

    @router.get("/status.json", include_in_schema=False)
    async def status_json() -> JSONResponse:
        """The status page's data."""
        if not enabled:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        data = await report()
        if data is None:
            return JSONResponse(_UNAVAILABLE, status_code=503, headers={"Retry-After": "30"})
        return JSONResponse(data)

    return router


def render(data: dict[str, Any]) -> str:
    """The page's body from a public status report (every value escaped)."""
    state = str(data["state"])
    nodes = data["node_counts"]
    parts = [
        f'<h1>Herald is <span class="{_e(state)}">{_e(state)}</span></h1>',
        f"<p>Objective: {_e(data['slo_pct'])} % of endpoint probes succeed. "
        f"{_e(nodes['live'])} live nodes, {_e(nodes['draining'])} draining. "
        f"Generated {_e(data['generated_at'][:19])} UTC.</p>",
        "<h2>All endpoints</h2>",
        _table(
            ["window", *FIGURE_COLUMNS],
            [[w, *figure_cells(f)] for w, f in data["endpoints"].items()],
        ),
    ]
    for kind, title in (("endpoint", "Endpoints"), ("relay", "Relays")):
        rows = []
        for target in (t for t in data["targets"] if t["kind"] == kind):
            up = {True: "up", False: "down", None: "-"}[target["up"]]
            failed = target["last_error"]
            last = "-" if failed is None else failed["at"][:19]
            for window, f in target["windows"].items():
                rows.append([target["name"], up, window, *figure_cells(f), last])
        if rows:
            parts.append(f"<h2>{title}</h2>")
            parts.append(_table(["name", "now", "window", *FIGURE_COLUMNS, "last failure"], rows))
    circuits = [[r["name"], r["state"]] for r in data["relays"]]
    if circuits:
        parts.append("<h2>Relay circuits</h2>")
        parts.append(_table(["relay", "circuit"], circuits))
    return "\n".join(parts)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _e(value: object) -> str:
    return html.escape(str(value))
