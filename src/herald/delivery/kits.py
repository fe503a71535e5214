"""Per-campaign send kits: everything computed once per campaign, reused per recipient."""

from __future__ import annotations

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

    def message_id(self, delivery_id: int) -> str:
        return make_message_id(delivery_id, self.campaign_id, self.secret, self.domain)

    def unsubscribe_url(self, subscriber_id: int) -> str:
        token = tokens.sign(self.secret, tokens.UNSUBSCRIBE, (subscriber_id, self.campaign_id))
        return f"{self.base_url}/u/{token}"

    def build(
        self, *, delivery_id: int, subscriber_id: int, email: str, name: str, attribs: Any
    ) -> tuple[str, bytes]:
        """Render and encode the message for one subscriber: (Message-ID, raw bytes).

        Raises RenderError when the templates fail for this subscriber.
        """
        url = self.unsubscribe_url(subscriber_id)
        context = {
            "subscriber": {"email": email, "name": name, "attribs": attribs},
            "campaign": self.public,
            "unsubscribe_url": url,
        }
        rendered = self.compiled.render(context)
        mid = self.message_id(delivery_id)
        html: str | tuple[str, ...] = rendered.html_parts
        if self.track:
            html = self._tracked(rendered.html, delivery_id)
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

    def _tracked(self, html: str, delivery_id: int) -> str:
        """Links through the click redirect, and an open pixel (domain.tracking)."""
        secret, base, campaign = self.secret, self.base_url, self.campaign_id
        return tracking.track(
            html,
            link=lambda target: tracking.click_url(secret, base, delivery_id, campaign, target),
            pixel=tracking.open_url(secret, base, delivery_id, campaign),
            skip=base + "/",
        )


def make_kit(campaign: dict[str, Any], *, secret: str, base_url: str) -> SendKit:
    """Compile a campaign row into a SendKit. Raises TemplateError, InvalidInput."""
    from_name, from_addr = parse_from(campaign["from_addr"])
    domain = from_addr.rpartition("@")[2]
    builder = MessageBuilder(
        from_name,
        from_addr,
        message_id_domain=domain,
        list_unsubscribe_mailto=f"unsubscribe@{domain}",
    )
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
    )
