"""Unsubscribing through the signed link every campaign message carries."""

from __future__ import annotations

from sqlalchemy import Connection, Engine

from herald.domain import tokens
from herald.domain.clock import utcnow
from herald.errors import InvalidInput, NotFound
from herald.store import subscriptions
from herald.store.retry import run_in_transaction


def read_token(secret: str, token: str) -> tuple[int, int]:
    """(subscriber id, campaign id) inside a valid unsubscribe token.

    Raises NotFound for a forged, altered or foreign token (the page answers 404).
    """
    try:
        subscriber_id, campaign_id = tokens.verify(secret, tokens.UNSUBSCRIBE, token, count=2)
    except InvalidInput as exc:
        raise NotFound("no such unsubscribe link") from exc
    return subscriber_id, campaign_id


def unsubscribe(engine: Engine, secret: str, token: str) -> int:
    """Unsubscribe the token's subscriber from the lists of the token's campaign.

    Committed before this returns (RFC 8058: the reply means it is done).
    Idempotent; returns how many subscriptions changed. Raises NotFound.
    """
    subscriber_id, campaign_id = read_token(secret, token)

    def change(conn: Connection) -> int:
        lists = subscriptions.campaign_list_ids(conn, campaign_id)
        return subscriptions.unsubscribe(conn, subscriber_id, lists, now=utcnow())

    return run_in_transaction(engine, change)
