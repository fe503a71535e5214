"""Public pages for people joining lists: subscribe form, confirm, preferences.

Plain server-rendered HTML, no JavaScript, no third-party assets; everything
shown is escaped. A GET only shows a page (mail scanners follow links); a
POST changes things. A forged or altered token gets 404.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.exc import OperationalError

from herald.errors import DatabaseUnavailable, NotFound, TooManyAttempts
from herald.runtime import Runtime
from herald.services import signups as svc
from herald.services.tracking import anonymise_ip
from herald.web.public import not_found, page

HONEYPOT = "website"  # hidden from people by the page's style; bots fill it in
_HIDE = "position:absolute;left:-10000px;width:1px;height:1px;overflow:hidden"


async def _form(request: Request) -> dict[str, list[str]]:
    """The urlencoded body (what a plain HTML form posts)."""
    body = (await request.body())[:65_536].decode("utf-8", "replace")
    return parse_qs(body, keep_blank_values=True)


def _first(form: dict[str, list[str]], name: str) -> str:
    return form.get(name, [""])[0]


async def _guarded(call: Callable[[], Awaitable[HTMLResponse]]) -> HTMLResponse:
    """Map a bad link to 404, a throttle to 429 and a database outage to 503 pages."""
    try:
        return await call()
    except NotFound:
        return not_found()
    except TooManyAttempts as exc:
        slow = page("Please wait", "<p>Too many attempts from your address. Try later.</p>", 429)
        slow.headers["Retry-After"] = str(int(exc.retry_after) + 1)
        return slow
    except (DatabaseUnavailable, OperationalError):
        busy = page("Please try again", "<p>We could not record this right now.</p>", 503)
        busy.headers["Retry-After"] = "5"
        return busy


def _subscribe_form(
    list_id: int, found: dict[str, Any], *, email: str = "", name: str = "", error: str = ""
) -> str:
    e = html.escape
    problem = f'<p role="alert"><strong>{e(error)}</strong></p>' if error else ""
    about = f"<p>{e(str(found['description']))}</p>" if found.get("description") else ""
    return (
        f"{about}{problem}"
        f'<form method="post" action="/subscribe/{list_id}">'
        f'<p><label>Email<br><input type="email" name="email" required value="{e(email)}">'
        "</label></p>"
        f'<p><label>Name<br><input type="text" name="name" value="{e(name)}"></label></p>'
        f'<div style="{_HIDE}" aria-hidden="true"><label>Leave this empty '
        f'<input type="text" name="{HONEYPOT}" tabindex="-1" autocomplete="off"></label></div>'
        '<button type="submit">Subscribe</button></form>'
    )


def signup_router(runtime: Runtime) -> APIRouter:
    router = APIRouter()
    engine, secret, settings = runtime.engine, runtime.secret, runtime.settings
    policy = svc.SignupPolicy(
        secret=secret,
        base_url=settings.base_url.rstrip("/"),
        from_addr=settings.from_addr,
        ip_mode=settings.tracking_ip,
    )

    def client_ip(request: Request) -> tuple[str, str | None]:
        """(the full address, for throttling; what a consent record may keep)."""
        address = request.client.host if request.client else "unknown"
        return address, anonymise_ip(address, settings.tracking_ip)

    @router.get("/subscribe/{list_id}", response_class=HTMLResponse)
    async def subscribe_page(list_id: int) -> HTMLResponse:
        """The subscribe form of a public list (404 for any other list)."""

        async def show() -> HTMLResponse:
            found = await asyncio.to_thread(svc.public_list, engine, list_id)
            return page(f"Subscribe to {found['name']}", _subscribe_form(list_id, found))

        return await _guarded(show)

    @router.post("/subscribe/{list_id}", response_class=HTMLResponse)
    async def subscribe(list_id: int, request: Request) -> HTMLResponse:
        """Subscribe, or send a confirmation; the answer never tells who is on the list."""
        fields = await _form(request)
        address, kept = client_ip(request)
        form = svc.SignupForm(
            list_id=list_id,
            email=_first(fields, "email")[:320],
            name=" ".join(_first(fields, "name").split())[:255],
            honeypot=_first(fields, HONEYPOT),
            ip=kept,
        )

        async def post() -> HTMLResponse:
            found = await asyncio.to_thread(svc.public_list, engine, list_id)
            error = await asyncio.to_thread(svc.subscribe, engine, form, policy, client=address)
            title = f"Subscribe to {found['name']}"
            if error:
                body = _subscribe_form(
                    list_id, found, email=form.email, name=form.name, error=error
                )
                return page(title, body, 400)
            if found["optin"] == "double":
                return page(
                    "Check your inbox",
                    "<p>We sent you an email with a link to confirm your subscription.</p>",
                )
            return page("You are subscribed", f"<p>Welcome to {html.escape(found['name'])}.</p>")

        return await _guarded(post)

    @router.get("/confirm/{token}", response_class=HTMLResponse)
    async def confirm_page(token: str) -> HTMLResponse:
        """A button to confirm; changes nothing (mail scanners follow links)."""

        async def show() -> HTMLResponse:
            view = await asyncio.to_thread(svc.read_confirm, engine, secret, token)
            return _confirm_body(token, view)

        return await _guarded(show)

    @router.post("/confirm/{token}", response_class=HTMLResponse)
    async def confirm(token: str, request: Request) -> HTMLResponse:
        """Confirm the subscription; idempotent."""
        await request.body()
        _, kept = client_ip(request)

        async def post() -> HTMLResponse:
            view = await asyncio.to_thread(svc.confirm, engine, secret, token, ip=kept)
            return _confirm_body(token, view)

        return await _guarded(post)

    @router.get("/preferences/{token}", response_class=HTMLResponse)
    async def preferences_page(token: str) -> HTMLResponse:
        """The public lists, with this subscriber's choices ticked."""

        async def show() -> HTMLResponse:
            view = await asyncio.to_thread(svc.preferences, engine, secret, token)
            return _preferences_body(token, view, saved=False)

        return await _guarded(show)

    @router.post("/preferences/{token}", response_class=HTMLResponse)
    async def save_preferences(token: str, request: Request) -> HTMLResponse:
        """Save the ticked lists (subscribe) and the others (unsubscribe)."""
        fields = await _form(request)
        chosen = {int(v) for v in fields.get("list", []) if v.isdigit() and len(v) < 19}
        _, kept = client_ip(request)

        async def post() -> HTMLResponse:
            view = await asyncio.to_thread(
                svc.save_preferences, engine, secret, token, chosen, ip=kept
            )
            return _preferences_body(token, view, saved=True)

        return await _guarded(post)

    return router


def _confirm_body(token: str, view: dict[str, Any]) -> HTMLResponse:
    e = html.escape
    what = f"<b>{e(str(view['list']))}</b> for {e(str(view['email']))}"
    if view["status"] == "confirmed":
        return page("Subscription confirmed", f"<p>You are subscribed to {what}.</p>")
    if view["status"] == "unsubscribed":
        return page("Not subscribed", f"<p>You are not subscribed to {what}.</p>")
    form = (
        f'<form method="post" action="/confirm/{e(token)}">'
        f"<p>Confirm your subscription to {what}?</p>"
        '<button type="submit">Confirm my subscription</button></form>'
    )
    return page("Confirm your subscription", form)


def _preferences_body(token: str, view: dict[str, Any], *, saved: bool) -> HTMLResponse:
    e = html.escape
    items = []
    for item in view["lists"]:
        checked = " checked" if item["subscribed"] else ""
        about = f"<br><small>{e(item['description'])}</small>" if item["description"] else ""
        items.append(
            f'<p><label><input type="checkbox" name="list" value="{int(item["id"])}"{checked}> '
            f"{e(item['name'])}</label>{about}</p>"
        )
    note = '<p role="status"><strong>Your choices are saved.</strong></p>' if saved else ""
    body = (
        f"{note}<p>Emails to {e(str(view['email']))}:</p>"
        f'<form method="post" action="/preferences/{e(token)}">'
        + ("".join(items) or "<p>There are no lists to choose from.</p>")
        + '<button type="submit">Save</button></form>'
    )
    return page("Your email preferences", body)
