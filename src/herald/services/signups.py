"""Subscribing through the public pages: the form, double opt-in, preferences.

Every answer to the form is the same whatever the address's history (new,
already subscribed, blocklisted, suppressed), so the form never tells a
stranger who is on a list. Links carry signed tokens (domain.tokens); a
forged or altered one raises NotFound and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from herald.domain import tokens
from herald.domain.addresses import normalise_email
from herald.domain.clock import utcnow
from herald.domain.states import OptIn
from herald.errors import InvalidInput, NotFound, TooManyAttempts
from herald.services import transactional
from herald.store import lists as store_lists
from herald.store import signups as store
from herald.store import suppressions, unsubscribes
from herald.store import transactional as store_tx

CONFIRM_SUBJECT = "Please confirm your subscription to {{ data.list }}"
CONFIRM_HTML = (
    "<p>Hello{% if subscriber.name %} {{ subscriber.name }}{% endif %},</p>"
    "<p>Please confirm that you want to receive <b>{{ data.list }}</b>:</p>"
    '<p><a href="{{ data.confirm_url }}">Confirm my subscription</a></p>'
    "<p>If you did not ask for this, ignore this message: nothing more will be sent.</p>"
)
CONFIRM_TEXT = (
    "Please confirm that you want to receive {{ data.list }}:\n\n{{ data.confirm_url }}\n\n"
    "If you did not ask for this, ignore this message: nothing more will be sent.\n"
)


@dataclass(frozen=True)
class SignupPolicy:
    """What the public pages need from the node's settings."""

    secret: str
    base_url: str
    from_addr: str
    ip_mode: str = "anonymised"  # HERALD_TRACKING_IP: what a consent record keeps
    form_limit: int = 10  # form posts per client address per window
    form_window: timedelta = timedelta(minutes=10)
    confirm_interval: timedelta = timedelta(minutes=10)  # per address and list


@dataclass(frozen=True)
class SignupForm:
    list_id: int
    email: str
    name: str = ""
    honeypot: str = ""  # a field people never see; bots fill it in
    ip: str | None = None  # the client's address, as recorded (already anonymised)
    source: str = "form"


def public_list(engine: Engine, list_id: int) -> dict[str, Any]:
    """The public list's id, name, description and opt-in. Raises NotFound."""
    with engine.begin() as conn:
        return _public_list(conn, list_id)


def subscribe(engine: Engine, form: SignupForm, policy: SignupPolicy, *, client: str) -> str | None:
    """Handle one post of a list's subscribe form; returns an error for the form, or None.

    1. Count the post against ``client`` (TooManyAttempts past the limit).
    2. An invalid address returns its error (the count stays).
    3. A filled honeypot, a blocklisted or suppressed address: nothing more.
    4. Single opt-in: subscription confirmed. Double: unconfirmed, and a
       confirmation message queued unless one went to this address for this
       list within ``confirm_interval``.
    Raises NotFound unless the list is public.
    """
    with engine.begin() as conn:
        _public_list(conn, form.list_id)
        now = utcnow()
        wait = store.hit(
            conn, f"form:{client}", limit=policy.form_limit, window=policy.form_window, now=now
        )
        if wait:
            raise TooManyAttempts(wait, "too many subscriptions from your address; try later")
        try:
            email = normalise_email(form.email)
        except InvalidInput as exc:
            return exc.message
        if form.honeypot or suppressions.is_suppressed(conn, email):
            return None
        person = store_tx.upsert_recipient(conn, email, name=form.name[:255], now=now)
        if person["status"] == "enabled":
            _request(conn, int(person["id"]), email, form, policy)
    return None


def _request(
    conn: Connection, subscriber_id: int, email: str, form: SignupForm, policy: SignupPolicy
) -> None:
    """Subscribe (or ask to confirm) one enabled subscriber; see ``subscribe``."""
    now = utcnow()
    found = _public_list(conn, form.list_id)
    current = store.subscription_status(conn, subscriber_id, form.list_id)
    if current == "confirmed":
        return
    double = found["optin"] == OptIn.DOUBLE
    status = "unconfirmed" if double else "confirmed"
    store.set_subscription(conn, subscriber_id, form.list_id, status=status, now=now)
    store.record_consent(
        conn,
        subscriber_id,
        form.list_id,
        action="subscribe",
        source=form.source,
        ip=form.ip,
        now=now,
    )
    if not double:
        return
    key = f"confirm:{form.list_id}:{subscriber_id}"
    if store.hit(conn, key, limit=1, window=policy.confirm_interval, now=now):
        return  # one went out recently: no flood, and the answer looks the same
    token = tokens.sign(policy.secret, tokens.CONFIRM, (subscriber_id, form.list_id))
    message = transactional.TxMessage(
        to=email,
        from_addr=policy.from_addr,
        data={"list": found["name"], "confirm_url": f"{policy.base_url}/confirm/{token}"},
        subject=CONFIRM_SUBJECT,
        html=CONFIRM_HTML,
        text=CONFIRM_TEXT,
    )
    transactional.enqueue(conn, message)


def read_confirm(engine: Engine, secret: str, token: str) -> dict[str, Any]:
    """What a confirm link is about: ``list`` (name), ``email``, ``status``. Changes nothing.

    Raises NotFound for a bad token, or a subscription that no longer exists.
    """
    subscriber_id, list_id = _verify(secret, tokens.CONFIRM, token, 2)
    with engine.begin() as conn:
        return _confirm_view(conn, subscriber_id, list_id)


def confirm(engine: Engine, secret: str, token: str, *, ip: str | None) -> dict[str, Any]:
    """Confirm the token's subscription (idempotent); returns ``read_confirm``'s view.

    Side effect: a consent record when the subscription changed. Raises NotFound.
    """
    subscriber_id, list_id = _verify(secret, tokens.CONFIRM, token, 2)
    with engine.begin() as conn:
        _confirm_view(conn, subscriber_id, list_id)
        now = utcnow()
        if store.confirm(conn, subscriber_id, list_id, now=now):
            store.record_consent(
                conn, subscriber_id, list_id, action="confirm", source="confirm", ip=ip, now=now
            )
        return _confirm_view(conn, subscriber_id, list_id)


def _confirm_view(conn: Connection, subscriber_id: int, list_id: int) -> dict[str, Any]:
    status = store.subscription_status(conn, subscriber_id, list_id)
    found = store_lists.get_list(conn, list_id)
    person = store.subscriber(conn, subscriber_id)
    if status is None or found is None or person is None:
        raise NotFound("no such subscription")
    return {"list": found["name"], "email": person["email"], "status": status}


def preferences(engine: Engine, secret: str, token: str) -> dict[str, Any]:
    """The subscriber's ``email`` and every public list with ``subscribed`` set.

    Raises NotFound for a bad token or a deleted subscriber.
    """
    (subscriber_id,) = _verify(secret, tokens.PREFERENCES, token, 1)
    with engine.begin() as conn:
        return _preferences(conn, subscriber_id)


def save_preferences(
    engine: Engine, secret: str, token: str, chosen: set[int], *, ip: str | None
) -> dict[str, Any]:
    """Subscribe (confirmed) to the chosen public lists, unsubscribe from the others.

    The token came by email, so it proves the address: no confirmation is
    sent. Side effects: consent records for lists joined, unsubscribe records
    for lists left. Returns the new ``preferences``. Raises NotFound.
    """
    (subscriber_id,) = _verify(secret, tokens.PREFERENCES, token, 1)
    with engine.begin() as conn:
        now = utcnow()
        for item in _preferences(conn, subscriber_id)["lists"]:
            want = item["id"] in chosen
            if want == item["subscribed"]:
                continue
            status = "confirmed" if want else "unsubscribed"
            store.set_subscription(conn, subscriber_id, item["id"], status=status, now=now)
            if want:
                store.record_consent(
                    conn,
                    subscriber_id,
                    item["id"],
                    action="preferences",
                    source="preferences",
                    ip=ip,
                    now=now,
                )
            else:
                unsubscribes.record(
                    conn, subscriber_id, None, reason="preferences", comment="", now=now
                )
        return _preferences(conn, subscriber_id)


def _preferences(conn: Connection, subscriber_id: int) -> dict[str, Any]:
    person = store.subscriber(conn, subscriber_id)
    if person is None:
        raise NotFound("no such subscriber")
    out = []
    for item in store.public_lists(conn):
        status = store.subscription_status(conn, subscriber_id, item["id"])
        subscribed = status == "confirmed" or (
            status == "unconfirmed" and item["optin"] == OptIn.SINGLE
        )
        out.append({**item, "subscribed": subscribed})
    return {"email": person["email"], "lists": out}


def _public_list(conn: Connection, list_id: int) -> dict[str, Any]:
    found = store_lists.get_list(conn, list_id)
    if found is None or not found["public"]:
        raise NotFound("no such list")
    return found


def _verify(secret: str, purpose: str, token: str, count: int) -> tuple[int, ...]:
    try:
        return tokens.verify(secret, purpose, token, count=count)
    except InvalidInput as exc:
        raise NotFound("no such link") from exc
