"""Per-campaign send kits: everything computed once per campaign, reused per recipient."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from herald.domain import tokens, tracking
from herald.domain.addresses import parse_from
from herald.domain.mime import MessageBuilder, make_message_id
from herald.domain.rendering import CompiledCampaign, compile_campaign
from herald.errors import RenderError


@dataclass(frozen=True)
class SendKit:
    """A campaign ready to be rendered for any subscriber."""

    campaign_id: int
    envelope_from: str
    compiled: CompiledCampaign
    builder: MessageBuilder
    public: dict[str, Any]
    domain: str
    secret: str
    base_url: str
    track: bool = True
    # A transactional carrier: no List-Unsubscribe, and no unsubscribe_url.
    transactional: bool = False
    # Only sign a preferences link when the templates use one (it costs an HMAC).
    wants_preferences: bool = False

    def message_id(self, delivery_id: int) -> str:
        return make_message_id(delivery_id, self.campaign_id, self.secret, self.domain)

    def unsubscribe_url(self, subscriber_id: int) -> str:
        token = tokens.sign(self.secret, tokens.UNSUBSCRIBE, (subscriber_id, self.campaign_id))
        return f"{self.base_url}/u/{token}"

    def preferences_url(self, subscriber_id: int) -> str:
        token = tokens.sign(self.secret, tokens.PREFERENCES, (subscriber_id,))
        return f"{self.base_url}/preferences/{token}"

    def build(
        self,
        *,
        delivery_id: int,
        subscriber_id: int,
        email: str,
        name: str,
        attribs: Any,
        data: Any = None,
    ) -> tuple[str, bytes]:
        """Render and encode the message for one subscriber: (Message-ID, raw bytes).

        ``data`` is a transactional message's own values (``{{ data.x }}``).
        Raises RenderError when the templates fail for this subscriber.
        """
        url = None if self.transactional else self.unsubscribe_url(subscriber_id)
        context: dict[str, Any] = {
            "subscriber": {"email": email, "name": name, "attribs": attribs},
            "campaign": self.public,
            "unsubscribe_url": url,
            "data": data or {},
        }
        if self.wants_preferences:
            context["preferences_url"] = self.preferences_url(subscriber_id)
        rendered = self.compiled.render(context)
        mid = self.message_id(delivery_id)
        html: Sequence[str] = rendered.html_parts
        if self.track:
            html = self._tracked(html, delivery_id)
        try:
            raw = self.builder.build(
                to_addr=email,
                to_name=name,
                subject=rendered.subject,
                html=html,
                text=rendered.text_parts,
                message_id=mid,
                unsubscribe_url=url,
            )
        except ValueError as exc:
            raise RenderError(f"cannot build message: {exc}") from exc
        return mid, raw

    def _tracked(self, html: Sequence[str], delivery_id: int) -> list[str]:
        """Links through the click redirect, and an open pixel (domain.tracking)."""
        secret, base, campaign = self.secret, self.base_url, self.campaign_id
        return tracking.track_parts(
            html,
            link=lambda target: tracking.click_url(secret, base, delivery_id, campaign, target),
            pixel=tracking.open_url(secret, base, delivery_id, campaign),
            skip=base + "/",
        )


def make_kit(campaign: dict[str, Any], *, secret: str, base_url: str) -> SendKit:
    """Compile a campaign row into a SendKit. Raises TemplateError, InvalidInput."""
    from_name, from_addr = parse_from(campaign["from_addr"])
    domain = from_addr.rpartition("@")[2]
    transactional = campaign.get("kind") == "tx"
    builder = MessageBuilder(
        from_name,
        from_addr,
        message_id_domain=domain,
        list_unsubscribe_mailto=f"unsubscribe@{domain}",
        list_headers=not transactional,
    )
    sources = (campaign["subject"], campaign["html"], campaign["text"] or "")
    return SendKit(
        campaign_id=int(campaign["id"]),
        envelope_from=from_addr,
        compiled=compile_campaign(campaign["subject"], campaign["html"], campaign["text"]),
        builder=builder,
        public={"id": campaign["id"], "name": campaign["name"], "subject": campaign["subject"]},
        domain=domain,
        secret=secret,
        base_url=base_url.rstrip("/"),
        track=bool(campaign.get("track", True)),
        transactional=transactional,
        wants_preferences=any("preferences_url" in part for part in sources),
    )
