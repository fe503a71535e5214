"""Routes for the cluster's moving parts: relays and nodes (read), API tokens (admin)."""

# No "from __future__ import annotations" here: FastAPI reads route signatures
# at runtime, and their dependency aliases are local to the router factory.

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from herald.runtime import Runtime
from herald.services import auth, nodes, relays
from herald.services.auth import Principal
from herald.web.api.security import requires


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=255)
    role: str = "viewer"


def admin_router(runtime: Runtime) -> APIRouter:
    router = APIRouter()
    engine = runtime.engine
    viewer = Annotated[Principal, Depends(requires(runtime, "viewer"))]
    admin = Annotated[Principal, Depends(requires(runtime, "admin"))]

    @router.get("/relays", tags=["relays"])
    def get_relays(_: viewer) -> list[dict[str, Any]]:
        """Every relay with its state and counts (never a password)."""
        return relays.list_relays(engine)

    @router.get("/nodes", tags=["nodes"])
    def get_nodes(_: viewer) -> list[dict[str, Any]]:
        """Every known node, with ``alive``."""
        return nodes.list_nodes(engine)

    @router.get("/tokens", tags=["tokens"])
    def get_tokens(_: admin) -> list[dict[str, Any]]:
        """API tokens (names, roles, prefixes; never a token)."""
        return auth.list_tokens(engine)

    @router.post("/tokens", tags=["tokens"], status_code=201)
    def create_token(body: TokenIn, _: admin) -> dict[str, Any]:
        """Create a token; the response holds it once, and it is never shown again."""
        token, record = auth.create_token(engine, body.name, body.role)
        return {**record, "token": token}

    @router.delete("/tokens/{name}", tags=["tokens"], status_code=204)
    def revoke_token(name: str, _: admin) -> Response:
        auth.revoke_token(engine, name)
        return Response(status_code=204)

    return router
