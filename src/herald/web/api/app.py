"""The ``/api/v1`` application, mounted by the node's web app."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from herald import __version__
from herald.runtime import Runtime
from herald.web.api.admin import admin_router
from herald.web.api.alerts import alert_router
from herald.web.api.campaigns import campaign_router
from herald.web.api.docs import render_docs
from herald.web.api.idempotent import IdempotencyMiddleware
from herald.web.api.imports import import_router
from herald.web.api.problems import document_problems, install_problem_handlers
from herald.web.api.resources import resource_router
from herald.web.api.security import auth_router
from herald.web.api.suppressions import suppression_router
from herald.web.api.templates import template_router
from herald.web.api.transactional import transactional_router

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
    api.include_router(campaign_router(runtime))
    api.include_router(template_router(runtime))
    api.include_router(import_router(runtime))
    api.include_router(suppression_router(runtime))
    api.include_router(admin_router(runtime))
    api.include_router(alert_router(runtime))
    api.include_router(transactional_router(runtime))

    generated = api.openapi

    def openapi() -> dict[str, Any]:
        # FastAPI caches the document it generates; errors are documented once.
        documented = api.openapi_schema is not None
        spec = generated()
        return spec if documented else document_problems(spec)

    api.openapi = openapi  # type: ignore[method-assign]

    @api.get("/docs", include_in_schema=False, response_class=HTMLResponse)
    def docs() -> HTMLResponse:
        return HTMLResponse(render_docs(api.openapi()))

    return api
