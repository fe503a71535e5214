"""The ``Idempotency-Key`` header on POST requests (services.idempotency).

Pure ASGI middleware: it identifies the caller the way the routes do, claims
the key, replays a stored response (with ``Idempotent-Replayed: true``), or
runs the request and stores its response. Requests whose response holds a
secret (``/auth/…``, ``/tokens``) are never stored: a retry of those simply
runs again (and a duplicate token name is refused).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from herald.errors import HeraldError
from herald.runtime import Runtime
from herald.services import idempotency
from herald.web.api.problems import herald_error_response
from herald.web.api.security import identify

HEADER = b"idempotency-key"
_NOT_STORED = ("/auth/", "/tokens")


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _key(scope)
        path = scope.get("path", "")
        if key is None or scope["method"] != "POST" or any(p in path for p in _NOT_STORED):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        request = Request(scope)
        try:
            principal = await asyncio.to_thread(identify, self.runtime, request)
        except HeraldError:
            await self.app(scope, _replaying(body), send)  # the route refuses it
            return
        scope.setdefault("state", {})["principal"] = principal  # the route need not ask again
        digest = hashlib.sha256(f"{path}?{scope.get('query_string', b'').decode()}\n".encode())
        digest.update(body)
        try:
            replay = await asyncio.to_thread(
                idempotency.begin,
                self.runtime.engine,
                principal.key,
                key,
                method="POST",
                path=path,
                request_hash=digest.hexdigest(),
            )
        except HeraldError as exc:
            await herald_error_response(exc)(scope, receive, send)
            return
        if replay is not None:
            await _send_replay(send, replay)
            return
        await self._run(scope, body, send, principal.key, key)

    async def _run(self, scope: Scope, body: bytes, send: Send, who: str, key: str) -> None:
        status = 500
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        engine = self.runtime.engine
        try:
            await self.app(scope, _replaying(body), capture)
        except BaseException:
            await asyncio.to_thread(idempotency.abandon, engine, who, key)
            raise
        text = b"".join(chunks).decode("utf-8", "replace")
        await asyncio.to_thread(idempotency.finish, engine, who, key, status_code=status, body=text)


def _key(scope: Scope) -> str | None:
    if scope["type"] != "http":
        return None
    for name, value in scope.get("headers", []):
        if name == HEADER:
            return str(value.decode("latin-1"))
    return None


async def _read_body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


def _replaying(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _send_replay(send: Send, replay: idempotency.Replay) -> None:
    body = replay.body.encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"idempotent-replayed", b"true"),
    ]
    await send({"type": "http.response.start", "status": replay.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
