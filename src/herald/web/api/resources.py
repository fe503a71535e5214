"""Routes for lists, subscribers and subscriptions (campaigns: ``campaigns.py``).

Handlers are plain functions (FastAPI runs them in its thread pool) that
validate the body with a model refusing unknown fields and call one service.
Reads need the ``viewer`` role, changes ``editor``.
"""

# No "from __future__ import annotations" here: FastAPI reads route signatures
# at runtime, and their dependency aliases are local to the router factory.

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from herald.runtime import Runtime
from herald.services import lists, subscribers
from herald.services.auth import Principal
from herald.web.api.fields import refuse_nulls, single_line
from herald.web.api.security import requires

_NO_EXTRA = ConfigDict(extra="forbid")


_single_line = single_line


class ListIn(BaseModel):
    model_config = _NO_EXTRA
    name: str = Field(min_length=1, max_length=255)
    description: str = Field("", max_length=10_000)
    double_optin: bool = False
    public: bool = Field(False, description="anyone may subscribe at /subscribe/{id}")


class ListChange(BaseModel):
    model_config = _NO_EXTRA
    name: str | None = Field(None, min_length=1, max_length=255)
    description: str | None = Field(None, max_length=10_000)
    double_optin: bool | None = None
    public: bool | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> "ListChange":
        refuse_nulls(self, ("name", "description", "double_optin", "public"))
        return self


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

    @model_validator(mode="after")
    def _no_nulls(self) -> "SubscriberChange":
        refuse_nulls(self, ("name", "attribs", "status", "lists"))
        return self


class SubscriptionIn(BaseModel):
    model_config = _NO_EXTRA
    status: str = Field(description="unconfirmed, confirmed or unsubscribed")


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
            engine,
            body.name,
            double_optin=body.double_optin,
            description=body.description,
            public=body.public,
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

    @router.get("/lists/{list_id}/subscribers", tags=["subscriptions"])
    def members(
        list_id: int,
        _: viewer,
        status: str | None = None,
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        """A page of the list's subscribers with their subscription status."""
        return lists.list_members(engine, list_id, status=status, after=after, limit=limit)

    @router.put("/lists/{list_id}/subscribers/{subscriber_id}", tags=["subscriptions"])
    def subscribe(
        list_id: int, subscriber_id: int, body: SubscriptionIn, _: editor
    ) -> dict[str, Any]:
        """Subscribe, or set the status of the subscription."""
        return lists.set_subscription(engine, list_id, subscriber_id, body.status)

    @router.delete(
        "/lists/{list_id}/subscribers/{subscriber_id}", tags=["subscriptions"], status_code=204
    )
    def remove(list_id: int, subscriber_id: int, _: editor) -> Response:
        """Delete the subscription (to keep a record of consent, PUT unsubscribed instead)."""
        lists.remove_subscription(engine, list_id, subscriber_id)
        return Response(status_code=204)

    return router
