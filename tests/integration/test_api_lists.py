"""The API's subscriptions, suppression list and spam complaints."""

from __future__ import annotations

from sqlalchemy import Engine, insert, select

from herald.domain.clock import utcnow
from herald.domain.mime import make_message_id
from herald.services import complaints
from herald.store.tables import deliveries, subscribers, subscriptions
from tests.apiclient import Api, assert_problem
from tests.factories import SECRET, add_subscribers, make_campaign, make_list


async def test_it_pages_a_lists_subscribers_and_sets_or_removes_a_subscription(api: Api) -> None:
    engine = api.runtime.engine
    news = make_list(engine, "News")
    add_subscribers(engine, news, 5)
    first = (await api.get(f"/lists/{news}/subscribers", params={"limit": 2})).json()
    assert [s["email"] for s in first["items"]] == ["user1@example.com", "user2@example.com"]
    rest = await api.get(f"/lists/{news}/subscribers", params={"after": first["next"]})
    assert len(rest.json()["items"]) == 3 and rest.json()["next"] is None
    sid = first["items"][0]["id"]
    path = f"/lists/{news}/subscribers/{sid}"
    changed = await api.send("PUT", path, {"status": "unsubscribed"})
    assert changed.json() == {"list_id": news, "subscriber_id": sid, "status": "unsubscribed"}
    only = await api.get(f"/lists/{news}/subscribers", params={"status": "unsubscribed"})
    assert [s["id"] for s in only.json()["items"]] == [sid]
    assert_problem(await api.send("PUT", path, {"status": "maybe"}), 400, "must be one of")
    assert_problem(
        await api.send("PUT", f"/lists/{news}/subscribers/999", {"status": "confirmed"}),
        404,
        "no subscriber",
    )
    assert (await api.send("DELETE", path)).status_code == 204
    assert_problem(await api.send("DELETE", path), 404, "is not on list")
    assert_problem(await api.get("/lists/999/subscribers"), 404, "no list 999")


async def test_it_searches_adds_and_removes_suppressions(api: Api) -> None:
    for email in ("b@example.com", "a@example.com", "c@other.org"):
        created = await api.send("POST", "/suppressions", {"email": email})
        assert created.status_code == 201 and created.json()["reason"] == "manual"
    page = (await api.get("/suppressions", params={"email": "example", "limit": 1})).json()
    assert [s["email"] for s in page["items"]] == ["a@example.com"]
    after = await api.get("/suppressions", params={"email": "example", "after": page["next"]})
    assert [s["email"] for s in after.json()["items"]] == ["b@example.com"]
    assert_problem(await api.send("POST", "/suppressions", {"email": "nope"}), 400, "")
    injected = await api.send("POST", "/suppressions", {"email": "x@example.com\r\nBcc: y"})
    assert_problem(injected, 422, "single line")
    assert (await api.send("DELETE", "/suppressions/A@example.com")).status_code == 204
    assert_problem(await api.send("DELETE", "/suppressions/a@example.com"), 404, "not suppressed")
    left = (await api.get("/suppressions")).json()["items"]
    assert [s["email"] for s in left] == ["b@example.com", "c@other.org"]


def _sent(engine: Engine, campaign_id: int) -> list[int]:
    """Mark a sent delivery for every subscriber; returns the delivery ids."""
    now = utcnow()
    with engine.begin() as conn:
        ids = conn.execute(select(subscribers.c.id).order_by(subscribers.c.id)).scalars().all()
        rows = [
            {
                "campaign_id": campaign_id,
                "subscriber_id": sid,
                "status": "sent",
                "due_at": now,
                "created_at": now,
                "updated_at": now,
                "sent_at": now,
            }
            for sid in ids
        ]
        conn.execute(insert(deliveries), rows)
        return list(conn.execute(select(deliveries.c.id).order_by(deliveries.c.id)).scalars())


async def test_a_complaint_suppresses_unsubscribes_and_counts_once(api: Api) -> None:
    engine = api.runtime.engine
    news = make_list(engine, "News")
    add_subscribers(engine, news, 3)
    campaign_id = make_campaign(engine, start=False)
    before = utcnow()
    first, second, _ = _sent(engine, campaign_id)
    recorded = await api.send("POST", "/complaints", {"delivery_id": first})
    assert recorded.json()["recorded"] is True and recorded.json()["unsubscribed_lists"] == 1
    again = await api.send("POST", "/complaints", {"delivery_id": first})
    assert again.json()["recorded"] is False
    mid = make_message_id(second, campaign_id, SECRET, "herald.test")
    by_id = await api.send("POST", "/complaints", {"message_id": mid})
    assert by_id.json()["email"] == "user2@example.com"
    assert complaints.complaint_rate(engine, since=before) == (2, 3)
    suppressed = (await api.get("/suppressions")).json()["items"]
    assert {(s["email"], s["reason"]) for s in suppressed} == {
        ("user1@example.com", "complaint"),
        ("user2@example.com", "complaint"),
    }
    with engine.begin() as conn:
        left = conn.execute(select(subscriptions.c.status).order_by(subscriptions.c.subscriber_id))
        assert list(left.scalars()) == ["unsubscribed", "unsubscribed", "confirmed"]


async def test_it_takes_a_complaint_as_an_arf_report_and_refuses_forged_ids(api: Api) -> None:
    engine = api.runtime.engine
    add_subscribers(engine, make_list(engine, "News"), 1)
    campaign_id = make_campaign(engine, start=False)
    (delivery,) = _sent(engine, campaign_id)
    mid = make_message_id(delivery, campaign_id, SECRET, "herald.test")
    arf = (
        "From: fbl@isp.example\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n"
        "--b\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nVersion: 1\r\n\r\n"
        "--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: news@herald.test\r\nMessage-ID: {mid}\r\nSubject: Hi\r\n\r\n--b--\r\n"
    )
    taken = await api.send("POST", "/complaints", {"arf": arf})
    assert taken.status_code == 200, taken.text
    assert taken.json()["delivery_id"] == delivery
    forged = f"<{delivery + 1}{mid[1 + len(str(delivery)) :]}"
    assert_problem(
        await api.send("POST", "/complaints", {"message_id": forged}), 404, "not a message"
    )
    both = await api.send("POST", "/complaints", {"delivery_id": 1, "message_id": mid})
    assert_problem(both, 400, "exactly one")
    assert_problem(await api.send("POST", "/complaints", {"delivery_id": 999}), 404, "no delivery")
