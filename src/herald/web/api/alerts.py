"""Routes for alerts (read: ``viewer``) and silences (create, end: ``editor``)."""

# No "from __future__ import annotations" here: FastAPI reads route signatures
# at runtime, and their dependency aliases are local to the router factory.

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from herald.runtime import Runtime
from herald.services import alerts
from herald.services.auth import Principal
from herald.web.api.security import requires


class SilenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rule: str = Field(min_length=1, max_length=64, description="e.g. HeraldRelayCircuitOpen")
    key: str | None = Field(None, max_length=255, description="one relay or node; none: all")
    seconds: float = Field(gt=0, le=366 * 86400, description="how long it lasts")
    comment: str = Field("", max_length=2000)


def alert_router(runtime: Runtime) -> APIRouter:
    router = APIRouter()
    engine = runtime.engine
    viewer = Annotated[Principal, Depends(requires(runtime, "viewer"))]
    editor = Annotated[Principal, Depends(requires(runtime, "editor"))]

    @router.get("/alerts", tags=["alerts"])
    def get_alerts(
        _: viewer, hours: Annotated[float, Query(gt=0, le=24 * 30)] = 24.0
    ) -> dict[str, Any]:
        """Pending and firing alerts, those resolved in the last ``hours``, and the
        silences in force."""
        return {
            "alerts": alerts.list_alerts(engine, hours=hours),
            "silences": alerts.list_silences(engine),
        }

    @router.post("/alerts/silences", tags=["alerts"], status_code=201)
    def add_silence(body: SilenceIn, who: editor) -> dict[str, Any]:
        """Mute a rule (or one key of it) for ``seconds``: it notifies nothing meanwhile."""
        return alerts.add_silence(
            engine,
            body.rule,
            key=body.key,
            seconds=body.seconds,
            comment=body.comment,
            created_by=who.name,
        )

    @router.delete("/alerts/silences/{silence_id}", tags=["alerts"], status_code=204)
    def end_silence(silence_id: int, _: editor) -> Response:
        """End a silence now."""
        alerts.remove_silence(engine, silence_id)
        return Response(status_code=204)

    return router
