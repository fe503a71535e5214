"""Routes for lists, subscribers and campaigns.

Handlers are plain functions (FastAPI runs them in its thread pool) that
validate the body with a model refusing unknown fields and call one service.
Reads need the ``viewer`` role, changes ``editor``.
"""

# No "from __future__ import annotations" here: FastAPI reads route signatures
# at runtime, and their dependency aliases are local to the router factory.

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from herald.runtime import Runtime
from herald.services import campaigns, lists, subscribers
from herald.services.auth import Principal
from herald.web.api.security import requires

_NO_EXTRA = ConfigDict(extra="forbid")


def _single_line(value: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise ValueError("must be a single line (no CR, LF or NUL)")
    return value


class ListIn(BaseModel):
    model_config = _NO_EXTRA
    name: str = Field(min_length=1, max_length=255)
    description: str = Field("", max_length=10_000)
    double_optin: bool = False


class ListChange(BaseModel):
    model_config = _NO_EXTRA
    name: str | None = Field(None, min_length=1, max_length=255)
    description: str | None = Field(None, max_length=10_000)
    double_optin: bool | None = None


class SubscriberIn(BaseModel):
    model_config = _NO_EXTRA
    email: str = Field(max_length=320)
    name: str = Field("", max_length=255)
    attribs: dict[str, Any] = Field(default_factory=dict)
    status: str = "enabled"
    lists: dict[int, str] = Field(default_factory=dict, description="list id → status")

    _one_line = field_validator("email", "name")(_single_line)


class SubscriberChange(BaseModel):
    model_config = _NO_EXTRA
    name: str | None = Field(None, max_length=255)
    attribs: dict[str, Any] | None = None
    status: str | None = None
    lists: dict[int, str] | None = None

    _one_line = field_validator("name")(_single_line)


class CampaignIn(BaseModel):
    model_config = _NO_EXTRA
    name: str = Field(min_length=1, max_length=255)
    subject: str = Field(min_length=1, max_length=998)
    html: str = Field(min_length=1, max_length=2_000_000)
    text: str | None = Field(None, max_length=2_000_000)
    from_addr: str = Field(max_length=998, alias="from")
    lists: list[int] = Field(min_length=1)
    rate_limit: float | None = Field(None, gt=0)
    track: bool = Field(True, description="open pixel and click redirects")

    _one_line = field_validator("name", "subject", "from_addr")(_single_line)


class ScheduleIn(BaseModel):
    model_config = _NO_EXTRA
    at: datetime


def resource_router(runtime: Runtime) -> APIRouter:
    router = APIRouter()
    engine = runtime.engine
    viewer = Annotated[Principal, Depends(requires(runtime, "viewer"))]
    editor = Annotated[Principal, Depends(requires(runtime, "editor"))]

    @router.get("/lists", tags=["lists"])
    def get_lists(_: viewer) -> list[dict[str, Any]]:
        """Every list with its subscription counts per status."""
        return lists.list_lists(engine)

    @router.post("/lists", tags=["lists"], status_code=201)
    def create_list(body: ListIn, _: editor) -> dict[str, Any]:
        """Create a list."""
        list_id = lists.create_list(
            engine, body.name, double_optin=body.double_optin, description=body.description
        )
        return lists.get_list(engine, list_id)

    @router.get("/lists/{list_id}", tags=["lists"])
    def get_list(list_id: int, _: viewer) -> dict[str, Any]:
        return lists.get_list(engine, list_id)

    @router.patch("/lists/{list_id}", tags=["lists"])
    def change_list(list_id: int, body: ListChange, _: editor) -> dict[str, Any]:
        return lists.update_list(engine, list_id, body.model_dump(exclude_unset=True))

    @router.delete("/lists/{list_id}", tags=["lists"], status_code=204)
    def delete_list(list_id: int, _: editor) -> Response:
        """Delete a list and its subscriptions (the subscribers stay)."""
        lists.delete_list(engine, list_id)
        return Response(status_code=204)

    @router.get("/subscribers", tags=["subscribers"])
    def search(
        _: viewer,
        email: str | None = None,
        status: str | None = None,
        list_id: int | None = None,
        attribute: Annotated[str | None, Query(description="key=value")] = None,
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        """Search and page: pass ``next`` back as ``after``."""
        return subscribers.search_subscribers(
            engine,
            email=email,
            status=status,
            list_id=list_id,
            attribute=attribute,
            after=after,
            limit=limit,
        )

    @router.post("/subscribers", tags=["subscribers"], status_code=201)
    def create_subscriber(body: SubscriberIn, _: editor) -> dict[str, Any]:
        return subscribers.create_subscriber(
            engine,
            body.email,
            name=body.name,
            attribs=body.attribs,
            status=body.status,
            lists=body.lists,
        )

    @router.get("/subscribers/{subscriber_id}", tags=["subscribers"])
    def get_subscriber(subscriber_id: int, _: viewer) -> dict[str, Any]:
        return subscribers.get_subscriber(engine, subscriber_id)

    @router.patch("/subscribers/{subscriber_id}", tags=["subscribers"])
    def change_subscriber(subscriber_id: int, body: SubscriberChange, _: editor) -> dict[str, Any]:
        changes = body.model_dump(exclude_unset=True)
        return subscribers.update_subscriber(engine, subscriber_id, changes)

    @router.delete("/subscribers/{subscriber_id}", tags=["subscribers"], status_code=204)
    def delete_subscriber(subscriber_id: int, _: editor) -> Response:
        subscribers.delete_subscriber(engine, subscriber_id)
        return Response(status_code=204)

    @router.get("/campaigns", tags=["campaigns"])
    def get_campaigns(_: viewer) -> list[dict[str, Any]]:
        return campaigns.list_campaigns(engine)

    @router.post("/campaigns", tags=["campaigns"], status_code=201)
    def create_campaign(body: CampaignIn, _: editor) -> dict[str, Any]:
        """Create a draft campaign for the given list ids."""
        names = tuple(lists.get_list(engine, list_id)["name"] for list_id in body.lists)
        draft = campaigns.CampaignDraft(
            name=body.name,
            subject=body.subject,
            html=body.html,
            text=body.text,
            from_addr=body.from_addr,
            list_names=names,
            rate_limit=body.rate_limit,
            track=body.track,
        )
        return campaigns.campaign_report(engine, campaigns.create_campaign(engine, draft))

    @router.get("/campaigns/{campaign_id}", tags=["campaigns"])
    def get_campaign(campaign_id: int, _: viewer) -> dict[str, Any]:
        """The campaign with its counts per delivery status."""
        return campaigns.campaign_report(engine, campaign_id)

    @router.post("/campaigns/{campaign_id}/schedule", tags=["campaigns"])
    def schedule(campaign_id: int, body: ScheduleIn, _: editor) -> dict[str, Any]:
        campaigns.schedule_campaign(engine, campaign_id, body.at)
        return campaigns.campaign_report(engine, campaign_id)

    for action in ("start", "pause", "resume", "cancel"):
        router.add_api_route(
            f"/campaigns/{{campaign_id}}/{action}",
            _status_route(runtime, action),
            methods=["POST"],
            tags=["campaigns"],
            name=f"{action}_campaign",
            summary=f"{action.capitalize()} a campaign",
        )
    return router


def _status_route(runtime: Runtime, action: str) -> Any:
    editor = Annotated[Principal, Depends(requires(runtime, "editor"))]

    def route(campaign_id: int, _: editor) -> dict[str, Any]:
        campaigns.change_status(runtime.engine, campaign_id, action)
        return campaigns.campaign_report(runtime.engine, campaign_id)

    return route
