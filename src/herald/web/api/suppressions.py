"""Routes for the suppression list and for spam complaints (feedback loops).

Reads need ``viewer``; adding or removing a suppression and recording a
complaint need ``editor`` (a feedback-loop processor gets an editor token).
"""

# No "from __future__ import annotations" here: FastAPI reads route signatures
# at runtime, and their dependency aliases are local to the router factory.

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field, field_validator

from herald.runtime import Runtime
from herald.services import complaints, suppressions
from herald.services.auth import Principal
from herald.web.api.fields import NO_EXTRA, single_line
from herald.web.api.security import requires


class SuppressionIn(BaseModel):
    model_config = NO_EXTRA
    email: str = Field(max_length=320)
    reason: Literal["manual", "bounce", "complaint", "unsubscribe"] = "manual"

    _one_line = field_validator("email")(single_line)


class ComplaintIn(BaseModel):
    """Exactly one of the three: the delivery id, its Message-ID, or a raw ARF report."""

    model_config = NO_EXTRA
    delivery_id: int | None = Field(None, ge=1)
    message_id: str | None = Field(None, max_length=998)
    arf: str | None = Field(None, max_length=1_000_000, description="RFC 5965 report, raw")


def suppression_router(runtime: Runtime) -> APIRouter:
    router = APIRouter()
    engine = runtime.engine
    viewer = Annotated[Principal, Depends(requires(runtime, "viewer"))]
    editor = Annotated[Principal, Depends(requires(runtime, "editor"))]

    @router.get("/suppressions", tags=["suppressions"])
    def search(
        _: viewer,
        email: Annotated[str | None, Query(max_length=320)] = None,
        after: Annotated[str, Query(max_length=320)] = "",
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        """Suppressed addresses containing ``email``; pass ``next`` back as ``after``."""
        return suppressions.search_suppressions(engine, email=email, after=after, limit=limit)

    @router.post("/suppressions", tags=["suppressions"], status_code=201)
    def add(body: SuppressionIn, _: editor) -> dict[str, Any]:
        """Never mail this address again (an existing entry keeps its reason)."""
        return suppressions.add_suppression(engine, body.email, reason=body.reason)

    @router.delete("/suppressions/{email}", tags=["suppressions"], status_code=204)
    def remove(email: str, _: editor) -> Response:
        suppressions.remove_suppression(engine, email)
        return Response(status_code=204)

    @router.post("/complaints", tags=["complaints"])
    def complain(body: ComplaintIn, _: editor) -> dict[str, Any]:
        """Record a spam complaint: suppress the address, unsubscribe it from the
        campaign's lists. Repeating it changes nothing (``recorded: false``)."""
        return complaints.record_complaint(
            engine,
            runtime.secret,
            delivery_id=body.delivery_id,
            message_id=body.message_id,
            arf=body.arf.encode("utf-8", "surrogateescape") if body.arf is not None else None,
        )

    return router
