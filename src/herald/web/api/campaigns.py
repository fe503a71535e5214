"""Routes for campaigns: create, change while draft, preview, test, schedule, act, report.

Reads need the ``viewer`` role, everything else ``editor``.
"""

# No "from __future__ import annotations" here: FastAPI reads route signatures
# at runtime, and their dependency aliases are local to the router factory.

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field, field_validator, model_validator

from herald.runtime import Runtime
from herald.services import campaigns, lists, previews
from herald.services.auth import Principal
from herald.web.api.fields import NO_EXTRA, refuse_nulls, single_line
from herald.web.api.security import requires


class CampaignIn(BaseModel):
    """Either ``subject`` and ``html``, or a ``template_id`` to copy them from."""

    model_config = NO_EXTRA
    name: str = Field(min_length=1, max_length=255)
    subject: str | None = Field(None, min_length=1, max_length=998)
    html: str | None = Field(None, min_length=1, max_length=2_000_000)
    text: str | None = Field(None, max_length=2_000_000)
    template_id: int | None = Field(None, description="copy subject, html and text from it")
    from_addr: str = Field(max_length=998, alias="from")
    lists: list[int] = Field(min_length=1)
    rate_limit: float | None = Field(None, gt=0)
    track: bool = Field(True, description="open pixel and click redirects")

    _one_line = field_validator("name", "subject", "from_addr")(single_line)

    @model_validator(mode="after")
    def _content(self) -> "CampaignIn":
        if self.template_id is None and (self.subject is None or self.html is None):
            raise ValueError("give subject and html, or a template_id")
        return self


class CampaignChange(BaseModel):
    model_config = NO_EXTRA
    name: str | None = Field(None, min_length=1, max_length=255)
    subject: str | None = Field(None, min_length=1, max_length=998)
    html: str | None = Field(None, min_length=1, max_length=2_000_000)
    text: str | None = Field(None, max_length=2_000_000)
    from_addr: str | None = Field(None, max_length=998, alias="from")
    lists: list[int] | None = Field(None, min_length=1)
    rate_limit: float | None = Field(None, gt=0)
    track: bool | None = None

    _one_line = field_validator("name", "subject", "from_addr")(single_line)

    @model_validator(mode="after")
    def _no_nulls(self) -> "CampaignChange":
        refuse_nulls(self, ("name", "subject", "html", "from_addr", "lists", "track"))
        return self


class ScheduleIn(BaseModel):
    model_config = NO_EXTRA
    at: datetime


class PreviewIn(BaseModel):
    model_config = NO_EXTRA
    subscriber_id: int


class TestIn(BaseModel):
    model_config = NO_EXTRA
    addresses: list[Annotated[str, Field(max_length=320)]] = Field(min_length=1, max_length=10)

    @field_validator("addresses")
    @classmethod
    def _one_line_each(cls, values: list[str]) -> list[str]:
        for value in values:
            single_line(value)
        return values


def campaign_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(tags=["campaigns"])
    engine = runtime.engine
    viewer = Annotated[Principal, Depends(requires(runtime, "viewer"))]
    editor = Annotated[Principal, Depends(requires(runtime, "editor"))]
    base_url = runtime.settings.base_url

    @router.get("/campaigns")
    def get_campaigns(_: viewer) -> list[dict[str, Any]]:
        return campaigns.list_campaigns(engine)

    @router.post("/campaigns", status_code=201)
    def create_campaign(body: CampaignIn, _: editor) -> dict[str, Any]:
        """Create a draft campaign for the given list ids."""
        names = tuple(lists.get_list(engine, list_id)["name"] for list_id in body.lists)
        draft = campaigns.CampaignDraft(
            name=body.name,
            subject=body.subject or "",
            html=body.html or "",
            text=body.text,
            from_addr=body.from_addr,
            list_names=names,
            rate_limit=body.rate_limit,
            track=body.track,
            template_id=body.template_id,
        )
        return campaigns.campaign_report(engine, campaigns.create_campaign(engine, draft))

    @router.get("/campaigns/{campaign_id}")
    def get_campaign(campaign_id: int, _: viewer) -> dict[str, Any]:
        """The campaign with its counts per delivery status."""
        return campaigns.campaign_report(engine, campaign_id)

    @router.patch("/campaigns/{campaign_id}")
    def change_campaign(campaign_id: int, body: CampaignChange, _: editor) -> dict[str, Any]:
        """Change a draft (409 once it is scheduled, running or done)."""
        changes = body.model_dump(exclude_unset=True)
        list_ids = changes.pop("lists", None)
        campaigns.update_campaign(engine, campaign_id, changes, list_ids=list_ids)
        return campaigns.campaign_report(engine, campaign_id)

    @router.get("/campaigns/{campaign_id}/report")
    def report(campaign_id: int, _: viewer) -> dict[str, Any]:
        """Sent, bounced, failed, pending, opens, clicks, complaints, and their rates."""
        return campaigns.campaign_report(engine, campaign_id)

    @router.post("/campaigns/{campaign_id}/preview")
    def preview(campaign_id: int, body: PreviewIn, _: viewer) -> dict[str, Any]:
        """The campaign rendered for one subscriber (changes nothing)."""
        return previews.preview_campaign(
            engine, runtime.secret, campaign_id, subscriber_id=body.subscriber_id, base_url=base_url
        )

    @router.post("/campaigns/{campaign_id}/test")
    async def send_test(campaign_id: int, body: TestIn, _: editor) -> dict[str, Any]:
        """Send the campaign now to up to 10 addresses, subject marked "[Test] "."""
        results = await previews.send_test(
            engine,
            runtime.secret,
            campaign_id,
            addresses=body.addresses,
            env_relays=runtime.relays,
            base_url=base_url,
        )
        return {"results": [asdict(r) for r in results]}

    @router.post("/campaigns/{campaign_id}/schedule")
    def schedule(campaign_id: int, body: ScheduleIn, _: editor) -> dict[str, Any]:
        campaigns.schedule_campaign(engine, campaign_id, body.at)
        return campaigns.campaign_report(engine, campaign_id)

    for action in ("start", "pause", "resume", "cancel"):
        router.add_api_route(
            f"/campaigns/{{campaign_id}}/{action}",
            _status_route(runtime, action),
            methods=["POST"],
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
