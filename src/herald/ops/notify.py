"""Alert notifications: the log (always), a webhook, and email straight through the relays.

Nothing here touches the database: a notice about the database being down
must go out while it is down, so email goes over an SMTP session to a relay
(`herald.delivery.smtp`), not through the outbox. Each channel has its own
queue and sender task, so a slow or failing webhook never holds up the
evaluation, and notices of one channel keep their order (a resolved notice
never overtakes its firing notice).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from herald.delivery.smtp import SmtpConnection
from herald.domain.addresses import normalise_email, parse_from
from herald.domain.alertstate import RESOLVED, Notice
from herald.domain.mime import MessageBuilder
from herald.domain.relays import RelayConfig
from herald.errors import HeraldError

log = logging.getLogger(__name__)

WEBHOOK_SECONDS = 10.0


@dataclass(frozen=True)
class NotifyOptions:
    """Where notices go. ``attempts`` per notice and channel, ``backoff`` s doubling."""

    node: str
    webhook: str = ""
    webhook_format: str = "json"  # json | slack
    email: str = ""  # comma-separated addresses
    from_addr: str = "Herald <herald@localhost>"
    attempts: int = 4
    backoff: float = 1.0


def payload(notice: Notice, *, node: str) -> dict[str, Any]:
    """The generic JSON body of a notice."""
    alert = notice.alert
    return {
        "status": RESOLVED if notice.kind == RESOLVED else "firing",
        "repeat": notice.kind == "repeat",
        "rule": alert.rule,
        "key": alert.key,
        "severity": alert.severity,
        "summary": alert.summary,
        "details": alert.details,
        "started_at": alert.started_at.isoformat(),
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        "node": node,
    }


def headline(notice: Notice) -> str:
    """One line for a chat message, a log line or a subject."""
    alert = notice.alert
    tag = {"firing": "FIRING", "repeat": "STILL FIRING", RESOLVED: "RESOLVED"}[notice.kind]
    where = f" [{alert.key}]" if alert.key else ""
    return f"[{tag}] {alert.rule}{where} ({alert.severity}): {alert.summary}"


def slack_payload(notice: Notice, *, node: str) -> dict[str, Any]:
    """A Slack/Mattermost incoming-webhook body."""
    since = notice.alert.started_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    return {"text": f"{headline(notice)} (since {since}, seen by {node})"}


class Notifier:
    """Sends notices on every configured channel, in the background."""

    def __init__(self, options: NotifyOptions, *, relays: Callable[[], list[RelayConfig]]) -> None:
        self.options = options
        self.relays = relays
        self._queues: dict[str, asyncio.Queue[Notice]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def notify(self, notices: list[Notice]) -> None:
        """Log each notice now; queue it for the webhook and email (never blocks)."""
        channels: list[tuple[str, Callable[[Notice], Awaitable[None]]]] = []
        if self.options.webhook:
            channels.append(("webhook", self._post))
        if self.options.email:
            channels.append(("email", self._mail))
        for notice in notices:
            level = logging.INFO if notice.kind == RESOLVED else logging.WARNING
            log.log(level, "alert %s", headline(notice))
            for name, send in channels:
                self._queue(name, send).put_nowait(notice)

    async def flush(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the queued notices to be sent (or given up)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                for queue in self._queues.values():
                    await queue.join()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _queue(self, name: str, send: Callable[[Notice], Awaitable[None]]) -> asyncio.Queue[Notice]:
        if name not in self._queues:
            self._queues[name] = asyncio.Queue()
            self._tasks.append(asyncio.create_task(self._drain(name, send)))
        return self._queues[name]

    async def _drain(self, name: str, send: Callable[[Notice], Awaitable[None]]) -> None:
        queue = self._queues[name]
        while True:
            notice = await queue.get()
            try:
                await self._with_retries(name, send, notice)
            finally:
                queue.task_done()

    async def _with_retries(
        self, name: str, send: Callable[[Notice], Awaitable[None]], notice: Notice
    ) -> None:
        delay = self.options.backoff
        for attempt in range(1, self.options.attempts + 1):
            try:
                await send(notice)
                return
            except Exception as exc:  # a channel that fails must not stop the next notice
                log.warning(
                    "alert %s via %s failed (attempt %d): %s", notice.alert.rule, name, attempt, exc
                )
            if attempt < self.options.attempts:
                await asyncio.sleep(delay)
                delay *= 2
        log.error("alert %s via %s given up: %s", notice.alert.rule, name, headline(notice))

    async def _post(self, notice: Notice) -> None:
        make = slack_payload if self.options.webhook_format == "slack" else payload
        body = json.dumps(make(notice, node=self.options.node)).encode()
        await asyncio.to_thread(_post_json, self.options.webhook, body)

    async def _mail(self, notice: Notice) -> None:
        relays = self.relays()
        if not relays:
            raise HeraldError("no relay to send alert email through")
        from_name, sender = parse_from(self.options.from_addr)
        domain = sender.rpartition("@")[2] or "localhost"
        builder = MessageBuilder(from_name or "Herald", sender, message_id_domain=domain)
        text = _mail_text(notice, node=self.options.node)
        for rcpt in [a.strip() for a in self.options.email.split(",") if a.strip()]:
            to = normalise_email(rcpt, local_domain_ok=True)
            data = builder.build(
                to_addr=to,
                to_name="",
                subject=f"Herald {headline(notice)}"[:200],
                html="<pre>" + _escape(text) + "</pre>",
                text=text,
                message_id=f"<alert.{secrets.token_hex(8)}@{builder.message_id_domain}>",
                unsubscribe_url=None,
            )
            await _send_through(relays, sender, to, data)


async def _send_through(relays: list[RelayConfig], sender: str, rcpt: str, data: bytes) -> None:
    """Try each relay in turn until one accepts. Raises OSError when none does."""
    reasons = []
    for relay in relays:
        connection = SmtpConnection(relay)
        try:
            outcome = await connection.send(sender, rcpt, data, prepared=True)
        finally:
            await connection.close()
        if outcome.ok:
            return
        reasons.append(f"{relay.name}: {outcome.reply}")
    raise OSError("no relay accepted the alert email: " + "; ".join(reasons))


def _post_json(url: str, body: bytes) -> None:
    """POST ``body`` as JSON; raises OSError unless the answer is 2xx."""
    if not url.startswith(("http://", "https://")):
        raise OSError(f"webhook URL must be http:// or https://, not {url!r}")
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    # Straight to the receiver, never through a proxy taken from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=WEBHOOK_SECONDS) as answer:
            answer.read(1000)
    except urllib.error.HTTPError as exc:
        raise OSError(f"webhook answered {exc.code}") from exc


def _mail_text(notice: Notice, *, node: str) -> str:
    body = payload(notice, node=node)
    lines = [headline(notice), ""]
    lines += [f"{k}: {json.dumps(v) if isinstance(v, dict) else v}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
