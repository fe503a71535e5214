"""Unsubscribing through the signed link every campaign message carries."""

from __future__ import annotations

from sqlalchemy import Connection, Engine

from herald.domain import tokens
from herald.domain.clock import utcnow
from herald.errors import InvalidInput, NotFound
from herald.store import subscriptions, unsubscribes
from herald.store.retry import run_in_transaction

# What the unsubscribe page offers; anything else is stored as "other".
REASONS = {
    "too_many": "Too many emails",
    "not_relevant": "The content is not relevant to me",
    "never_signed_up": "I never signed up",
    "other": "Another reason",
}


def read_token(secret: str, token: str) -> tuple[int, int]:
    """(subscriber id, campaign id) inside a valid unsubscribe token.

    Raises NotFound for a forged, altered or foreign token (the page answers 404).
    """
    try:
        subscriber_id, campaign_id = tokens.verify(secret, tokens.UNSUBSCRIBE, token, count=2)
    except InvalidInput as exc:
        raise NotFound("no such unsubscribe link") from exc
    return subscriber_id, campaign_id


def unsubscribe(
    engine: Engine, secret: str, token: str, *, reason: str = "", comment: str = ""
) -> int:
    """Unsubscribe the token's subscriber from the lists of the token's campaign.

    Committed before this returns (RFC 8058: the reply means it is done).
    Idempotent; returns how many subscriptions changed. Raises NotFound.
    Side effect: an ``unsubscribes`` record (with the reason from the page,
    none for one-click) when something changed or a reason was given.
    """
    subscriber_id, campaign_id = read_token(secret, token)
    if reason and reason not in REASONS:
        reason = "other"
    comment = " ".join(comment.split())[:1000]

    def change(conn: Connection) -> int:
        now = utcnow()
        lists = subscriptions.campaign_list_ids(conn, campaign_id)
        changed = subscriptions.unsubscribe(conn, subscriber_id, lists, now=now)
        if changed or reason or comment:
            unsubscribes.record(
                conn, subscriber_id, campaign_id, reason=reason, comment=comment, now=now
            )
        return changed

    return run_in_transaction(engine, change)
