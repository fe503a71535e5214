"""The ``/api/v1`` application, mounted by the node's web app."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from herald import __version__
from herald.runtime import Runtime
from herald.web.api.admin import admin_router
from herald.web.api.docs import render_docs
from herald.web.api.idempotent import IdempotencyMiddleware
from herald.web.api.problems import install_problem_handlers
from herald.web.api.resources import resource_router
from herald.web.api.security import auth_router

PREFIX = "/api/v1"


def build_api(runtime: Runtime) -> FastAPI:
    """The API as its own app: its OpenAPI document is ``/api/v1/openapi.json``."""
    api = FastAPI(
        title="Herald API",
        version=__version__,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        servers=[{"url": PREFIX}],
    )
    install_problem_handlers(api)
    api.add_middleware(IdempotencyMiddleware, runtime=runtime)
    api.include_router(auth_router(runtime))
    api.include_router(resource_router(runtime))
    api.include_router(admin_router(runtime))

    @api.get("/docs", include_in_schema=False, response_class=HTMLResponse)
    def docs() -> HTMLResponse:
        return HTMLResponse(render_docs(api.openapi()))

    return api
