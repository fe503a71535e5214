"""Routes for templates: reusable subject, HTML and text, checked in the sandbox.

A template that does not compile, or fails the sandbox on a trial render, is
refused with 422 and nothing is stored. Reads need ``viewer``, changes ``editor``.
"""

# No "from __future__ import annotations" here: FastAPI reads route signatures
# at runtime, and their dependency aliases are local to the router factory.

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field, field_validator, model_validator

from herald.runtime import Runtime
from herald.services import templates
from herald.services.auth import Principal
from herald.web.api.fields import NO_EXTRA, refuse_nulls, single_line
from herald.web.api.security import requires


class TemplateIn(BaseModel):
    model_config = NO_EXTRA
    name: str = Field(min_length=1, max_length=255)
    subject: str = Field(min_length=1, max_length=998)
    html: str = Field(min_length=1, max_length=1_000_000)
    text: str | None = Field(None, max_length=1_000_000)

    _one_line = field_validator("name", "subject")(single_line)


class TemplateChange(BaseModel):
    model_config = NO_EXTRA
    name: str | None = Field(None, min_length=1, max_length=255)
    subject: str | None = Field(None, min_length=1, max_length=998)
    html: str | None = Field(None, min_length=1, max_length=1_000_000)
    text: str | None = Field(None, max_length=1_000_000)

    _one_line = field_validator("name", "subject")(single_line)

    @model_validator(mode="after")
    def _no_nulls(self) -> "TemplateChange":
        refuse_nulls(self, ("name", "subject", "html"))
        return self


def template_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(tags=["templates"])
    engine = runtime.engine
    viewer = Annotated[Principal, Depends(requires(runtime, "viewer"))]
    editor = Annotated[Principal, Depends(requires(runtime, "editor"))]

    @router.get("/templates")
    def get_templates(_: viewer) -> list[dict[str, Any]]:
        """Every template by name (without bodies)."""
        return templates.list_templates(engine)

    @router.post("/templates", status_code=201)
    def create_template(body: TemplateIn, _: editor) -> dict[str, Any]:
        """Store a template after compiling it in the sandbox (422 with the reason if not)."""
        return templates.create_template(
            engine, body.name, subject=body.subject, html=body.html, text=body.text
        )

    @router.get("/templates/{template_id}")
    def get_template(template_id: int, _: viewer) -> dict[str, Any]:
        return templates.get_template(engine, template_id)

    @router.patch("/templates/{template_id}")
    def change_template(template_id: int, body: TemplateChange, _: editor) -> dict[str, Any]:
        """Change a template (campaigns made from it keep their copy)."""
        changes = body.model_dump(exclude_unset=True)
        return templates.update_template(engine, template_id, changes)

    @router.delete("/templates/{template_id}", status_code=204)
    def delete_template(template_id: int, _: editor) -> Response:
        templates.delete_template(engine, template_id)
        return Response(status_code=204)

    return router
