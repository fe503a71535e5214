"""``POST /api/v1/tx``: one transactional message, queued durably before the reply."""

# No "from __future__ import annotations" here: FastAPI reads route signatures
# at runtime, and their dependency aliases are local to the router factory.

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, field_validator

from herald.runtime import Runtime
from herald.services import transactional
from herald.services.auth import Principal
from herald.web.api.security import requires


def _single_line(value: str | None) -> str | None:
    if value is not None and any(c in value for c in "\r\n\0"):
        raise ValueError("must be a single line (no CR, LF or NUL)")
    return value


class TxIn(BaseModel):
    """A stored template (``template_id``) or inline ``subject`` with ``html``/``text``."""

    model_config = ConfigDict(extra="forbid")
    to: str = Field(max_length=320, description="the recipient's address")
    name: str = Field("", max_length=255, description="the recipient's name, if new")
    data: dict[str, Any] = Field(default_factory=dict, description="the template's `data`")
    template_id: int | None = None
    subject: str | None = Field(None, max_length=2000)
    html: str | None = Field(None, max_length=1_000_000)
    text: str | None = Field(None, max_length=1_000_000)
    from_: str | None = Field(
        None, alias="from", max_length=512, description="default: HERALD_FROM"
    )

    _one_line = field_validator("to", "name", "subject", "from_")(_single_line)


class TxQueued(BaseModel):
    delivery_id: int


def transactional_router(runtime: Runtime) -> APIRouter:
    router = APIRouter()
    editor = Annotated[Principal, Depends(requires(runtime, "editor"))]
    viewer = Annotated[Principal, Depends(requires(runtime, "viewer"))]

    @router.post("/tx", tags=["transactional"], status_code=202)
    def send(body: TxIn, _: editor) -> TxQueued:
        """Queue one message to one address; the workers send it like a campaign's.

        Refused with 409 when the address is suppressed or blocklisted.
        """
        message = transactional.TxMessage(
            to=body.to,
            from_addr=body.from_ or runtime.settings.from_addr,
            data=body.data,
            name=body.name,
            template_id=body.template_id,
            subject=body.subject,
            html=body.html,
            text=body.text,
        )
        return TxQueued(delivery_id=transactional.send_transactional(runtime.engine, message))

    @router.get("/tx/{delivery_id}", tags=["transactional"])
    def status(delivery_id: int, _: viewer) -> dict[str, Any]:
        """Where a transactional message is: pending, sending, sent, failed or bounced."""
        return transactional.delivery_status(runtime.engine, delivery_id)

    return router
