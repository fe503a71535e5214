"""The open pixel and the click redirect (domain.tracking, services.tracking).

Neither touches the database: a genuine event goes to this node's spool (a
buffered append, no fsync, so the handlers run on the event loop) and the
answer is immediate. A forged or altered link records nothing; a click
link that does not verify gets a 404 page rather than a redirect, so Herald
is never an open redirect.
"""

from __future__ import annotations

import base64

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from herald.domain import tracking
from herald.errors import InvalidInput
from herald.runtime import Runtime
from herald.services.tracking import Spool, anonymise_ip
from herald.web.public import not_found

# The smallest transparent GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_NO_STORE = {"Cache-Control": "no-store, private", "Pragma": "no-cache"}


def tracking_router(runtime: Runtime, spool: Spool) -> APIRouter:
    router = APIRouter()
    ip_mode = runtime.settings.tracking_ip

    def who(request: Request) -> dict[str, str | None]:
        address = request.client.host if request.client else None
        return {
            "user_agent": request.headers.get("user-agent"),
            "ip": anonymise_ip(address, ip_mode),
        }

    # Plain Starlette routes: the hot path skips FastAPI's parameter
    # validation, which costs more than everything the handlers do.
    async def opened(request: Request) -> Response:
        """The pixel: always a GIF; recorded only when the token is genuine."""
        try:
            delivery_id, campaign_id = tracking.read_open(
                runtime.secret, request.path_params["token"]
            )
        except InvalidInput:
            pass
        else:
            spool.record("open", delivery_id, campaign_id, **who(request))
        return Response(PIXEL, media_type="image/gif", headers=_NO_STORE)

    async def clicked(request: Request) -> Response:
        """Record the click and redirect to the link's target."""
        target = request.query_params.get("u", "")
        try:
            delivery_id, campaign_id = tracking.read_click(
                runtime.secret, request.path_params["token"], target
            )
        except InvalidInput:
            return not_found()
        spool.record("click", delivery_id, campaign_id, url=target, **who(request))
        return RedirectResponse(target, status_code=302, headers=_NO_STORE)

    router.add_route("/t/o/{token}", opened, methods=["GET"], include_in_schema=False)
    router.add_route("/t/c/{token}", clicked, methods=["GET"], include_in_schema=False)
    return router
