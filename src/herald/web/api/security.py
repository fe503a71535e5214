"""Who is calling, and may they: the API's auth dependencies and login routes.

A request authenticates with ``Authorization: Bearer hrld_…`` (an API token)
or the ``herald_session`` cookie set by ``POST /auth/login``. A request that
changes something with only the cookie must also carry ``X-Herald-Request: 1``,
a header no cross-site form can set (CSRF); the cookie is also SameSite=Strict.
"""

# No "from __future__ import annotations" here: FastAPI reads route signatures
# at runtime, and their dependency aliases are local to the router factory.

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict

from herald.domain import access
from herald.errors import Forbidden, Unauthorized
from herald.runtime import Runtime
from herald.services import auth
from herald.services.auth import Principal

COOKIE = "herald_session"
CSRF_HEADER = "x-herald-request"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def identify(runtime: Runtime, request: Request) -> Principal:
    """The caller of ``request``. Raises Unauthorized, TooManyAttempts."""
    address = client_address(request)
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if header:
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Unauthorized("use Authorization: Bearer <API token>")
        return auth.token_principal(runtime.engine, credentials.strip(), address=address)
    cookie = request.cookies.get(COOKIE)
    if cookie:
        if request.method not in _SAFE and request.headers.get(CSRF_HEADER) != "1":
            raise Unauthorized(f"a session request that changes data needs {CSRF_HEADER}: 1")
        return auth.session_principal(runtime.engine, runtime.secret, cookie, address=address)
    raise Unauthorized()


def requires(runtime: Runtime, role: access.Role) -> Callable[[Request], Principal]:
    """A dependency: the caller, who must have at least ``role``."""

    def dependency(request: Request) -> Principal:
        # The idempotency middleware may have identified the caller already.
        principal = getattr(request.state, "principal", None) or identify(runtime, request)
        if not access.allows(principal.role, role):
            raise Forbidden(f"this needs the {role} role; you are {principal.role}")
        request.state.principal = principal
        return principal

    return dependency


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str
    password: str


def auth_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(prefix="/auth", tags=["auth"])
    viewer = Annotated[Principal, Depends(requires(runtime, "viewer"))]

    @router.post("/login")
    def login(body: Login, request: Request, response: Response) -> dict[str, str]:
        """Check email and password; set the session cookie (12 hours)."""
        value = auth.login(
            runtime.engine,
            runtime.secret,
            body.email,
            body.password,
            address=client_address(request),
        )
        response.set_cookie(
            COOKIE,
            value,
            max_age=auth.SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            secure=runtime.settings.base_url.startswith("https:"),
            path="/",
        )
        return {"status": "logged in"}

    @router.post("/logout")
    def logout(response: Response) -> dict[str, str]:
        """Drop the session cookie."""
        response.delete_cookie(COOKIE, path="/")
        return {"status": "logged out"}

    @router.get("/me")
    def me(principal: viewer) -> dict[str, str]:
        """Who you are and your role."""
        return {"kind": principal.kind, "name": principal.name, "role": principal.role}

    return router
