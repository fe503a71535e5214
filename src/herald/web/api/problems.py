"""Errors as RFC 9457 problem details (``application/problem+json``).

One mapping from Herald's error classes to HTTP status codes; request
validation errors list each field's problem; nothing internal (a traceback,
an SQL statement) ever reaches the client.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException

from herald.errors import (
    ConfigError,
    Conflict,
    DatabaseUnavailable,
    Forbidden,
    HeraldError,
    InvalidInput,
    NotFound,
    RelayUnavailable,
    RenderError,
    TemplateError,
    TooManyAttempts,
    Unauthorized,
)

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
_STATUS: tuple[tuple[type[HeraldError], int, str], ...] = (
    (Unauthorized, 401, "Unauthorized"),
    (Forbidden, 403, "Forbidden"),
    (NotFound, 404, "Not Found"),
    (Conflict, 409, "Conflict"),
    (TooManyAttempts, 429, "Too Many Requests"),
    # A template that does not compile is content the server cannot process.
    (TemplateError, 422, "Unprocessable Content"),
    (RenderError, 422, "Unprocessable Content"),
    (InvalidInput, 400, "Bad Request"),
    (ConfigError, 400, "Bad Request"),
    (DatabaseUnavailable, 503, "Service Unavailable"),
    (RelayUnavailable, 503, "Service Unavailable"),
)


def problem(
    status: int, title: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HeraldError, _herald_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(OperationalError, _database_down)  # type: ignore[arg-type]
    app.add_exception_handler(DataError, _out_of_range)
    app.add_exception_handler(OverflowError, _out_of_range)
    app.add_exception_handler(Exception, _unexpected)


def herald_error_response(exc: HeraldError) -> JSONResponse:
    for cls, status, title in _STATUS:
        if isinstance(exc, cls):
            headers = _headers(exc, status)
            return problem(status, title, exc.message, headers=headers)
    log.error("unexpected Herald error: %s", exc)
    return problem(500, "Internal Server Error", "the server could not complete the request")


async def _herald_error(request: Request, exc: HeraldError) -> JSONResponse:
    return herald_error_response(exc)


def _headers(exc: HeraldError, status: int) -> dict[str, str] | None:
    if status == 401:
        return {"WWW-Authenticate": 'Bearer realm="herald"'}
    if isinstance(exc, TooManyAttempts):
        return {"Retry-After": str(max(1, round(exc.retry_after)))}
    if status == 503:
        return {"Retry-After": "5"}
    return None


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "problem": e["msg"]}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{e['field'] or 'body'}: {e['problem']}" for e in errors[:5])
    return problem(422, "Unprocessable Content", detail, errors=errors)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return problem(exc.status_code, _reason(exc.status_code), str(exc.detail))


async def _database_down(request: Request, exc: OperationalError) -> JSONResponse:
    log.warning("database unavailable during %s %s", request.method, request.url.path)
    return herald_error_response(DatabaseUnavailable())


async def _out_of_range(request: Request, exc: Exception) -> JSONResponse:
    # A number past 64 bits (SQLite: OverflowError) or a value the database
    # cannot store (PostgreSQL: DataError, such as a NUL in text) is the
    # client's input, not a server fault.
    log.info("database refused a value in %s %s: %s", request.method, request.url.path, exc)
    return problem(422, "Unprocessable Content", "a value is out of range or cannot be stored")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    return problem(500, "Internal Server Error", "the server could not complete the request")


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


_PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "problem": {"type": "string"}},
            },
        },
    },
}


def document_problems(spec: dict[str, Any]) -> dict[str, Any]:
    """Say in the OpenAPI document what errors really look like.

    FastAPI documents a 422 as its own JSON shape; Herald answers every error,
    422 included, as ``application/problem+json``. Every operation gets that
    for 422 and as its ``default`` response (401, 403, 404, 409, 429, 503…).
    Changes ``spec`` in place and returns it.
    """
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = _PROBLEM_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    content = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for methods in spec.get("paths", {}).values():
        for operation in methods.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = {"description": "Invalid request", "content": content}
            responses["default"] = {"description": "An error (RFC 9457)", "content": content}
    return spec
