"""The FastAPI application: health, readiness, public pages, and the API under /api/v1."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from herald import __version__
from herald.runtime import Runtime
from herald.services import health
from herald.services.tracking import Spool
from herald.web.api.app import PREFIX, build_api
from herald.web.metrics import install_metrics
from herald.web.public import public_router
from herald.web.signup import signup_router
from herald.web.status import status_router
from herald.web.tracking import tracking_router

if TYPE_CHECKING:
    from herald.node import NodeState


def create_app(runtime: Runtime, state: NodeState) -> FastAPI:
    """Build the app; handlers read ``app.state`` only (no globals)."""
    app = FastAPI(title="Herald", version=__version__, docs_url=None, redoc_url=None)
    app.state.runtime = runtime
    app.state.node = state
    app.include_router(public_router(runtime))
    app.include_router(signup_router(runtime))
    app.include_router(status_router(runtime))
    if state.spool is None:
        state.spool = Spool(runtime.settings.data_dir / "spool" / runtime.node_name)
    app.state.spool = state.spool
    app.include_router(tracking_router(runtime, state.spool))
    app.mount(PREFIX, build_api(runtime))
    install_metrics(app, runtime, state)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Alive: the process answers."""
        return {"status": "ok", "node": runtime.node_name, "version": __version__}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready: database reachable for writes, schema current, not draining."""
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        problem = await asyncio.to_thread(health.database_problem, runtime.engine)
        if problem:
            return JSONResponse(
                {"status": "unavailable", "reason": problem},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        return JSONResponse({"status": "ready"})

    return app
