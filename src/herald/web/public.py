"""Pages subscribers reach from their mail: unsubscribe (RFC 8058 one-click).

Plain server-rendered HTML, no JavaScript, no third-party assets. A GET only
shows a page (mail scanners follow links); a POST unsubscribes, durably,
before the reply.
"""

from __future__ import annotations

import asyncio
import html
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from herald.errors import DatabaseUnavailable, NotFound
from herald.runtime import Runtime
from herald.services import unsubscribe as svc

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;
color:#222}}button{{font-size:1rem;padding:.5rem 1rem}}</style></head>
<body><h1>{title}</h1>{body}</body></html>
"""


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body), status_code=status)


def not_found() -> HTMLResponse:
    return page("Link not found", "<p>This link is not valid.</p>", 404)


def public_router(runtime: Runtime) -> APIRouter:
    router = APIRouter()

    @router.get("/u/{token}", response_class=HTMLResponse)
    async def unsubscribe_page(token: str) -> HTMLResponse:
        """Show the confirmation form; changes nothing."""
        try:
            svc.read_token(runtime.secret, token)
        except NotFound:
            return not_found()
        return page("Unsubscribe", _unsubscribe_form(token))

    @router.post("/u/{token}", response_class=HTMLResponse)
    async def unsubscribe(token: str, request: Request) -> HTMLResponse:
        """One-click (``List-Unsubscribe=One-Click``) or the page's form: unsubscribe now."""
        # The token decides; the page's form may add a reason (one-click has none).
        form = parse_qs((await request.body())[:16_384].decode("utf-8", "replace"))
        reason = form.get("reason", [""])[0][:32]
        comment = form.get("comment", [""])[0]
        try:
            await asyncio.to_thread(
                svc.unsubscribe,
                runtime.engine,
                runtime.secret,
                token,
                reason=reason,
                comment=comment,
            )
        except NotFound:
            return not_found()
        except DatabaseUnavailable:
            busy = page("Please try again", "<p>We could not record this right now.</p>", 503)
            busy.headers["Retry-After"] = "5"
            return busy
        return page("You are unsubscribed", "<p>You will not receive these emails again.</p>")

    return router


def _unsubscribe_form(token: str) -> str:
    """The unsubscribe button, with an optional reason (a select and free text)."""
    options = "".join(
        f'<option value="{html.escape(key)}">{html.escape(label)}</option>'
        for key, label in svc.REASONS.items()
    )
    return (
        f'<form method="post" action="/u/{html.escape(token)}">'
        "<p>Stop receiving these emails?</p>"
        '<p><label>Why are you leaving? (optional)<br><select name="reason">'
        f'<option value="">No reason given</option>{options}</select></label></p>'
        '<p><label>Anything else? (optional)<br><textarea name="comment" rows="3" cols="40" '
        'maxlength="1000"></textarea></label></p>'
        '<button type="submit" name="confirm" value="yes">Unsubscribe</button></form>'
    )
