"""The API's templates and campaign editing, preview, test sends and report."""

from __future__ import annotations

from email import message_from_bytes
from email.header import decode_header, make_header
from typing import Any

from sqlalchemy import insert, select

from herald.domain.clock import utcnow
from herald.services import relays
from herald.store.tables import deliveries, subscribers
from tests.apiclient import Api, assert_problem
from tests.factories import add_subscribers, make_list
from tests.sinks import Sink, ok, refuse

GOOD = {"name": "Welcome", "subject": "Hi {{ subscriber.name }}", "html": "<p>Hello</p>"}


async def _campaign(api: Api, *, subscribers: int = 0, **fields: Any) -> dict[str, Any]:
    """A draft campaign to a new list "News" of ``subscribers`` user{n}@example.com."""
    news = make_list(api.runtime.engine, "News")
    if subscribers:
        add_subscribers(api.runtime.engine, news, subscribers)
    body = {"name": "Launch", "from": "News <news@example.com>", "lists": [news], **fields}
    created = await api.send("POST", "/campaigns", body)
    assert created.status_code == 201, created.text
    return dict(created.json())


async def test_it_stores_templates_that_compile_and_refuses_broken_or_hostile_ones(
    api: Api,
) -> None:
    created = await api.send("POST", "/templates", GOOD)
    assert created.status_code == 201, created.text
    template_id = created.json()["id"]
    broken = await api.send("POST", "/templates", {**GOOD, "name": "B", "html": "{% if %}"})
    assert_problem(broken, 422, "HTML template, line 1")
    hostile = {**GOOD, "name": "H", "html": "{{ ''.__class__.__mro__[1].__subclasses__() }}"}
    assert_problem(await api.send("POST", "/templates", hostile), 422, "unsafe")
    looping = {
        **GOOD,
        "name": "L",
        "html": "{% for i in range(99999) %}{{ 'x' * 99999 }}{% endfor %}",
    }
    assert_problem(await api.send("POST", "/templates", looping), 422, "")
    injected = await api.send("POST", "/templates", {**GOOD, "name": "I", "subject": "a\r\nBcc: x"})
    assert_problem(injected, 422, "single line")
    assert [t["name"] for t in (await api.get("/templates")).json()] == ["Welcome"]
    taken = await api.send("POST", "/templates", GOOD)
    assert_problem(taken, 409, "already exists")
    changed = await api.send("PATCH", f"/templates/{template_id}", {"html": "<p>New</p>"})
    assert changed.json()["html"] == "<p>New</p>" and changed.json()["subject"] == GOOD["subject"]
    bad_change = await api.send("PATCH", f"/templates/{template_id}", {"html": "{{ x.y( }}"})
    assert_problem(bad_change, 422, "HTML template")
    assert_problem(
        await api.send("PATCH", f"/templates/{template_id}", {"html": None}), 422, "null"
    )
    assert (await api.get(f"/templates/{template_id}")).json()["html"] == "<p>New</p>"
    assert (await api.send("DELETE", f"/templates/{template_id}")).status_code == 204
    assert_problem(await api.get(f"/templates/{template_id}"), 404, "no template")


async def test_it_creates_a_campaign_from_a_copy_of_a_template(api: Api) -> None:
    template = (await api.send("POST", "/templates", GOOD)).json()
    campaign = await _campaign(api, template_id=template["id"])
    assert campaign["subject"] == GOOD["subject"]
    await api.send("PATCH", f"/templates/{template['id']}", {"subject": "Changed"})
    assert (await api.get(f"/campaigns/{campaign['id']}")).json()["subject"] == GOOD["subject"]
    missing = await api.send(
        "POST", "/campaigns", {"name": "X", "from": "a@example.com", "lists": [1]}
    )
    assert_problem(missing, 422, "subject and html, or a template_id")


async def test_it_changes_a_campaign_only_while_it_is_a_draft(api: Api) -> None:
    campaign = await _campaign(api, subject="Old", html="<p>x</p>")
    path = f"/campaigns/{campaign['id']}"
    changed = await api.send("PATCH", path, {"subject": "New {{ subscriber.name }}"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["subject"] == "New {{ subscriber.name }}"
    assert_problem(await api.send("PATCH", path, {"html": "{% for %}"}), 422, "line 1")
    assert_problem(await api.send("PATCH", path, {"subject": "a\nb"}), 422, "single line")
    injected = await api.send("PATCH", path, {"from": "a@example.com\r\nBcc: x@example.com"})
    assert_problem(injected, 422, "single line")
    assert_problem(await api.send("PATCH", path, {"lists": [999]}), 404, "no list 999")
    await api.send("POST", f"{path}/start")
    late = await api.send("PATCH", path, {"subject": "Too late"})
    assert_problem(late, 409, "only a draft can be changed")
    assert (await api.get(path)).json()["subject"] == "New {{ subscriber.name }}"


async def test_it_previews_a_campaign_for_one_subscriber_without_side_effects(api: Api) -> None:
    campaign = await _campaign(
        api,
        subscribers=1,
        subject="Hi {{ subscriber.name }}",
        html='<p>From {{ subscriber.attribs.city }}</p><a href="https://example.org/">x</a>',
    )
    found = (await api.get("/subscribers", params={"email": "user1@"})).json()["items"][0]
    path = f"/campaigns/{campaign['id']}/preview"
    shown = await api.send("POST", path, {"subscriber_id": found["id"]}, role="viewer")
    assert shown.status_code == 200, shown.text
    assert shown.json()["subject"] == "Hi User 1"
    assert "From City1" in shown.json()["html"] and "From City1" in shown.json()["text"]
    assert (await api.get(f"/campaigns/{campaign['id']}")).json()["total"] == 0
    nobody = await api.send("POST", path, {"subscriber_id": 999})
    assert_problem(nobody, 404, "no subscriber 999")


async def test_it_sends_a_marked_test_to_given_addresses_through_a_relay(api: Api) -> None:
    campaign = await _campaign(api, subscribers=3, subject="Launch day", html="<p>Hi</p>")
    path = f"/campaigns/{campaign['id']}/test"
    assert_problem(await api.send("POST", path, {"addresses": ["a@example.com"]}), 409, "no relay")
    with Sink(refuse()) as dead:
        relays.add_relay(api.runtime.engine, api.runtime.secret, "dead", dead.url)
        down = await api.send("POST", path, {"addresses": ["a@example.com"]})
        assert_problem(down, 503, "no relay could be reached")
    with Sink(ok()) as sink:
        relays.add_relay(api.runtime.engine, api.runtime.secret, "sink", sink.url)
        sent = await api.send("POST", path, {"addresses": ["a@example.com", "B@example.com"]})
        assert sent.status_code == 200, sent.text
        results = sent.json()["results"]
        assert [(r["address"], r["ok"], r["relay"]) for r in results] == [
            ("a@example.com", True, "sink"),
            ("b@example.com", True, "sink"),
        ]
        assert sorted(m.rcpts[0] for m in sink.messages) == ["a@example.com", "b@example.com"]
        subject = message_from_bytes(sink.messages[0].data)["Subject"]
        assert str(make_header(decode_header(subject))) == "[Test] Launch day"
    too_many = [f"x{n}@example.com" for n in range(11)]
    assert_problem(await api.send("POST", path, {"addresses": too_many}), 422, "addresses")
    assert_problem(await api.send("POST", path, {"addresses": ["a@b\r\nc"]}), 422, "single line")
    report = (await api.get(f"/campaigns/{campaign['id']}")).json()
    assert report["total"] == 0 and report["status"] == "draft"


async def test_it_reports_counts_complaints_and_rates(api: Api) -> None:
    campaign = await _campaign(api, subscribers=4, subject="S", html="<p>x</p>")
    engine, now = api.runtime.engine, utcnow()
    statuses = ["sent", "sent", "sent", "bounced"]
    with engine.begin() as conn:
        subs = conn.execute(select(subscribers.c.id).order_by(subscribers.c.id)).scalars().all()
        conn.execute(
            insert(deliveries),
            [
                {
                    "campaign_id": campaign["id"],
                    "subscriber_id": sid,
                    "status": status,
                    "due_at": now,
                    "created_at": now,
                    "updated_at": now,
                    "sent_at": now if status == "sent" else None,
                }
                for sid, status in zip(subs, statuses, strict=True)
            ],
        )
        first = conn.scalar(select(deliveries.c.id).order_by(deliveries.c.id))
    complained = await api.send("POST", "/complaints", {"delivery_id": first})
    assert complained.status_code == 200, complained.text
    report = (await api.get(f"/campaigns/{campaign['id']}/report")).json()
    assert report["counts"]["sent"] == 3 and report["counts"]["bounced"] == 1
    assert report["complaints"] == 1
    assert report["rates"]["complaint"] == round(1 / 3, 4)
    assert report["rates"]["bounce"] == 0.25
    assert report["rates"]["open"] == 0.0
    assert report["unsubscribes"] == 0 and report["rates"]["unsubscribe"] == 0.0
