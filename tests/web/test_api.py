"""The HTTP API through real Kafka and Redis: tokens and scopes, limits, errors, the OpenAPI
document, actions recorded and published, and the dispatcher honouring them."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aredis

from alerts.controls import Controls
from alerts.dispatch import Delivery, Dispatcher
from contract.records import AspectHit, EnrichedEvent, Incident, dumps
from infra.settings import AlertSettings
from streams.windows import RedisWindows
from tests.web.conftest import ONSET, READ_TOKEN, WRITE_TOKEN, WarRoom, make_event, make_incident, wait_for
from tools.bench_web import follow_sse
from tools.receiver import HttpReceiver
from web.app import ACTION_HEADER, window_name
from web.auth import COOKIE

pytestmark = pytest.mark.integration
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def conforms(schema: dict[str, Any], value: Any, doc: dict[str, Any], path: str = "$") -> None:
    """Assert ``value`` fits an OpenAPI 3.1 schema (the subset FastAPI emits: $ref, anyOf, types, required)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        conforms(doc["components"]["schemas"][name], value, doc, path)
        return
    if "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                conforms(option, value, doc, path)
                return
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"{path}: fits no anyOf option: {errors}")
    kinds = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float), "boolean": bool}
    t = schema.get("type")
    if t == "null":
        assert value is None, f"{path}: expected null"
        return
    if t in kinds:
        assert isinstance(value, kinds[t]), f"{path}: expected {t}, got {type(value).__name__}"
    if "enum" in schema:
        assert value in schema["enum"], f"{path}: {value!r} not in {schema['enum']}"
    if t == "object":
        for req in schema.get("required", []):
            assert req in value, f"{path}: missing required {req!r}"
        for k, sub in schema.get("properties", {}).items():
            if k in value:
                conforms(sub, value[k], doc, f"{path}.{k}")
    if t == "array" and "items" in schema:
        for i, item in enumerate(value):
            conforms(schema["items"], item, doc, f"{path}[{i}]")


def response_schema(doc: dict[str, Any], path: str, method: str = "get", status: str = "200") -> dict[str, Any]:
    return doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]


def test_tokens_scopes_limits_and_errors_are_json_with_a_reason(war_room: WarRoom) -> None:
    with war_room.client(None) as anon:
        r = anon.get("/api/v1/incidents")
        assert r.status_code == 401 and r.json()["error"] == "unauthorized" and "Bearer" in r.json()["reason"]
        assert anon.get("/").status_code == 303  # a page sends the browser to sign in
    with war_room.client("not-a-token-at-all-1234") as bad:
        assert bad.get("/api/v1/incidents").status_code == 401
    with war_room.client(READ_TOKEN) as reader:
        assert reader.get("/api/v1/incidents").status_code == 200
        r = reader.post("/api/v1/silences", json={"entity": "northwind", "duration_seconds": 60})
        assert r.status_code == 403 and "write" in r.json()["reason"]
    with war_room.client() as writer:
        r = writer.post("/api/v1/silences", json={"entity": "northwind", "duration_seconds": -5})
        assert r.status_code == 422 and "duration_seconds" in r.json()["reason"]
        r = writer.post("/api/v1/silences", json={"entity": "nobody", "duration_seconds": 60})
        assert r.status_code == 404 and "northwind" in r.json()["reason"]
        r = writer.post("/api/v1/silences", content=b"x" * (war_room.settings.web.max_body_bytes + 1))
        assert r.status_code == 413 and r.json()["error"] == "too_large"
        r = writer.get("/api/v1/incidents/inc-none")
        assert r.status_code == 404 and r.json()["reason"]
        assert writer.get("/docs").status_code == 404  # no docs UI: it would load scripts from a CDN


async def test_incidents_thread_and_acknowledge_through_kafka_and_redis(war_room: WarRoom) -> None:
    inc = make_incident()
    war_room.publish("incidents", inc, inc.entity)
    war_room.publish("incidents", make_incident(seq=2, status="update"), inc.entity)
    with war_room.client(READ_TOKEN) as c:
        doc = c.get("/api/openapi.json").json()
        rows = wait_for(lambda: [r for r in c.get("/api/v1/incidents").json() if r["messages"] == 2], what="the thread")
        conforms(response_schema(doc, "/api/v1/incidents"), rows, doc)
        assert rows[0]["incident_id"] == inc.incident_id and rows[0]["state"] == "open" and rows[0]["owner"] is None
        thread = c.get(f"/api/v1/incidents/{inc.incident_id}").json()
        conforms(response_schema(doc, "/api/v1/incidents/{incident_id}"), thread, doc)
        assert [m["seq"] for m in thread["messages"]] == [1, 2]
    with war_room.client() as w:
        r = w.post(f"/api/v1/incidents/{inc.incident_id}/actions", json={"action": "acknowledge", "why": "on it"})
        assert r.status_code == 200, r.text
        conforms(response_schema(doc, "/api/v1/incidents/{incident_id}/actions", "post"), r.json(), doc)
        r = w.post(f"/api/v1/incidents/{inc.incident_id}/actions", json={"action": "assign", "owner": "bob"})
        assert r.status_code == 200, r.text
        summary = wait_for(
            lambda: (s := w.get(f"/api/v1/incidents/{inc.incident_id}").json())["summary"]["owner"] == "bob" and s,
            what="the owner",
        )
        assert summary["summary"]["state"] == "acknowledged"
        assert [(a["action"], a["who"], a["why"]) for a in summary["actions"]] == [
            ("acknowledge", "alice", "on it"),
            ("assign", "alice", ""),
        ]
    r = aredis.Redis.from_url(war_room.redis_url)
    try:
        state = await r.hgetall(f"{war_room.prefix}:ctl:inc:{inc.incident_id}")
        assert state[b"state"] == b"acknowledged" and state[b"acked_by"] == b"alice" and state[b"owner"] == b"bob"
    finally:
        await r.aclose()
    actions = wait_for(
        lambda: [x for x in war_room.topic_records("incidents") if x.get("kind") == "action"] or None,
        what="the actions on the incidents topic",
    )
    assert [(a["action"], a["who"], a["incident_id"]) for a in actions] == [
        ("acknowledge", "alice", inc.incident_id),
        ("assign", "alice", inc.incident_id),
    ]


def test_a_cookie_write_needs_the_request_header(war_room: WarRoom) -> None:
    """Signed in on /login (the cookie a browser keeps), a write without X-Repmon-Request (what a
    cross-site form sends) is refused with a JSON reason; the same write with it is taken."""
    inc = make_incident("skyline", iid="inc-csrf")
    war_room.publish("incidents", inc, inc.entity)
    with httpx.Client(base_url=war_room.url, timeout=10) as browser:  # no Authorization header, ever
        wrong = browser.post("/login", content=b"token=not-a-token-at-all-1234&next=/", headers=FORM)
        assert wrong.status_code == 303 and "error=" in wrong.headers["location"] and COOKIE not in browser.cookies
        r = browser.post("/login", content=f"token={WRITE_TOKEN}&next=/incidents/inc-csrf".encode(), headers=FORM)
        assert r.status_code == 303 and r.headers["location"] == "/incidents/inc-csrf"
        set_cookie = r.headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=strict" in set_cookie
        assert browser.cookies.get(COOKIE) == WRITE_TOKEN
        wait_for(lambda: browser.get("/api/v1/incidents/inc-csrf").status_code == 200, what="the thread (cookie read)")
        path = "/api/v1/incidents/inc-csrf/actions"
        refused = browser.post(path, json={"action": "acknowledge", "why": "forged"})
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"] == "application/json"
        assert refused.json()["error"] == "forbidden" and ACTION_HEADER in refused.json()["reason"]
        silence = browser.post("/api/v1/silences", json={"entity": "skyline", "duration_seconds": 60})
        assert silence.status_code == 403 and ACTION_HEADER in silence.json()["reason"]
        assert browser.post(path, json={"action": "acknowledge"}, headers={ACTION_HEADER: "0"}).status_code == 403
        thread = browser.get("/api/v1/incidents/inc-csrf").json()
        assert thread["actions"] == [] and thread["summary"]["state"] == "open"  # nothing was recorded
        assert browser.get("/api/v1/silences").json() == []
        taken = browser.post(path, json={"action": "acknowledge", "why": "mine"}, headers={ACTION_HEADER: "1"})
        assert taken.status_code == 200, taken.text
        assert taken.json()["who"] == "alice" and taken.json()["action"] == "acknowledge"
        thread = browser.get("/api/v1/incidents/inc-csrf").json()
        assert [(a["action"], a["who"], a["why"]) for a in thread["actions"]] == [("acknowledge", "alice", "mine")]
    with war_room.client() as api:  # a bearer token is no cookie: no header needed (a service, not a browser)
        assert api.post(path, json={"action": "comment", "why": "from a script"}).status_code == 200


async def test_a_false_positive_queues_the_fired_buckets_for_the_detection_leader(war_room: WarRoom) -> None:
    """What the leader learns as normal (tests/alerts/test_false_positive.py shows it learning)."""
    inc = make_incident("skyline", iid="inc-fp")
    war_room.publish("incidents", inc, inc.entity)
    war_room.publish("incidents", make_incident("skyline", iid="inc-fp", seq=2, status="update"), inc.entity)
    with war_room.client() as w:
        wait_for(lambda: (x := w.get("/api/v1/incidents/inc-fp")).status_code == 200 and len(x.json()["messages"]) == 2)
        r = w.post("/api/v1/incidents/inc-fp/actions", json={"action": "false_positive", "why": "a quiz night"})
        assert r.status_code == 200, r.text
        assert w.get("/api/v1/incidents/inc-fp").json()["summary"]["state"] == "false_positive"
    controls = Controls(aredis.Redis.from_url(war_room.redis_url), war_room.prefix)
    try:
        (queued,) = await controls.feedback()
        assert queued["entity"] == "skyline" and queued["why"] == "a quiz night"
        assert queued["buckets"] == [int(ONSET.timestamp()), int(ONSET.timestamp()) + 60]  # both messages' buckets
        await controls.feedback_done(1)
        assert await controls.feedback() == []
    finally:
        await controls.r.aclose()


async def test_dispatcher_honours_silences_and_acknowledgements(war_room: WarRoom) -> None:
    receiver = HttpReceiver().start()
    r = aredis.Redis.from_url(war_room.redis_url)
    alerts = AlertSettings(
        routes=[{"name": "hook", "urls": [receiver.apprise_url("/hook")], "min_severity": "warning"}],  # type: ignore[list-item]
        cooldown_seconds=0,
        outbox_poll_seconds=0.2,
        console=False,
    )
    d = Dispatcher(alerts, r, key_prefix=war_room.prefix)
    try:
        with war_room.client() as w:
            assert w.post("/api/v1/silences", json={"entity": "northwind", "duration_seconds": 600}).status_code == 201
            sig = w.post(
                "/api/v1/silences", json={"entity": "skyline", "signal": "negative_share", "duration_seconds": 600}
            )
            assert sig.status_code == 201
            doc = w.get("/api/openapi.json").json()
            conforms(response_schema(doc, "/api/v1/silences", "post", "201"), sig.json(), doc)
            listed = w.get("/api/v1/silences").json()
            conforms(response_schema(doc, "/api/v1/silences"), listed, doc)
            assert sorted(x["entity"] for x in listed) == ["northwind", "skyline"]
        silenced = make_incident("northwind/go app", iid="inc-silenced")  # a product of the silenced brand
        out = await d.dispatch(silenced)
        assert out[0].status == "filtered" and "silenced" in (out[0].error or "")
        # the signal silence holds a negative-share page but not a rating one on the same entity
        assert (await d.dispatch(make_incident("skyline", iid="inc-sky")))[0].status == "filtered"
        rating = make_incident("skyline", iid="inc-sky-rating", signal="rating")
        assert (await d.dispatch(rating))[0].status == "queued"
        got = await asyncio.to_thread(receiver.wait_for, 1, 10)
        assert len(got) == 1 and "skyline" in got[0].title
        # acknowledged: the update stops, the resolution still goes out
        with war_room.client() as w:
            war_room.publish("incidents", rating, rating.entity)
            wait_for(lambda: w.get("/api/v1/incidents/inc-sky-rating").status_code == 200, what="the thread")
            ack = w.post("/api/v1/incidents/inc-sky-rating/actions", json={"action": "acknowledge"})
            assert ack.status_code == 200
        upd = make_incident("skyline", iid="inc-sky-rating", signal="rating", seq=2, status="update")
        out = await d.dispatch(upd)
        assert out[0].status == "filtered" and out[0].error == "incident acknowledged"
        res = make_incident("skyline", iid="inc-sky-rating", signal="rating", seq=3, status="resolved")
        assert (await d.dispatch(res))[0].status == "queued"
        got = await asyncio.to_thread(receiver.wait_for, 2, 10)
        assert len(got) == 2 and "normal" in got[1].title
        assert not [x for x in receiver.requests if "go app" in x.title.lower()]
    finally:
        await d.aclose()
        await r.aclose()
        receiver.stop()


async def test_every_worker_honours_route_silences_and_acks_even_for_queued_messages(war_room: WarRoom) -> None:
    """Two dispatchers on one Redis (two workers) and two routes to the real local receiver: a
    route-only silence holds that route on both workers and not the other route; an acknowledge
    stops the ``escalated`` and ``update`` messages on both workers; and an ``escalated`` queued
    before the acknowledge, still pending (the channel is down), is dropped at send time."""
    receiver = HttpReceiver().start()
    alerts = AlertSettings(
        routes=[  # type: ignore[list-item]
            {"name": "chat", "urls": [receiver.apprise_url("/chat")], "min_severity": "warning"},
            {"name": "pager", "urls": [receiver.apprise_url("/pager")], "min_severity": "warning"},
        ],
        cooldown_seconds=0,
        outbox_poll_seconds=0.2,
        retry_backoff_seconds=0.2,
        retry_backoff_max_seconds=0.5,
        console=False,
    )
    outcomes: list[Delivery] = []
    r1, r2 = aredis.Redis.from_url(war_room.redis_url), aredis.Redis.from_url(war_room.redis_url)
    d1 = Dispatcher(alerts, r1, key_prefix=war_room.prefix, on_delivery=outcomes.append)
    d2 = Dispatcher(alerts, r2, key_prefix=war_room.prefix, on_delivery=outcomes.append)

    def refs(path: str) -> list[str]:
        """The thread markers (``<incident id> #<seq>``) of what a route's channel took."""
        return [x.title.rsplit("(thread ", 1)[1].rstrip(")") for x in receiver.requests if x.path == path]

    def status(out: list[Delivery]) -> dict[str, tuple[str, str]]:
        return {x.route: (x.status, x.error or "") for x in out}

    def escalated(entity: str, iid: str, seq: int) -> Incident:
        return make_incident(entity, iid=iid, seq=seq).model_copy(update={"status": "escalated"})

    async def on_both_routes(ref: str) -> None:
        """Wait until both channels took the message ``ref`` (``<incident id> #<seq>``)."""
        await asyncio.to_thread(receiver.wait_for, lambda rs: len([x for x in rs if ref in x.title]) == 2, 10)
        assert ref in refs("/chat") and ref in refs("/pager")

    queued = {"chat": ("queued", ""), "pager": ("queued", "")}

    try:
        with war_room.client() as w:
            # a misspelt route is refused with the configured names: accepted, it would hold nothing
            typo = w.post("/api/v1/silences", json={"route": "pagr", "duration_seconds": 600})
            assert typo.status_code == 404 and "chat, pager" in typo.json()["reason"], typo.text
            assert w.get("/api/v1/silences").json() == []
            sil = w.post("/api/v1/silences", json={"route": "pager", "duration_seconds": 600, "comment": "rota swap"})
            assert sil.status_code == 201, sil.text
        # the route silence, on either worker: chat takes the page, pager does not
        for d, iid in ((d1, "inc-w1"), (d2, "inc-w2")):
            got = status(await d.dispatch(make_incident("northwind", iid=iid)))
            assert got["chat"] == ("queued", "") and got["pager"][0] == "filtered", got
            assert got["pager"][1].startswith(f"silenced by {sil.json()['id']}"), got
        # an escalated of a thread nobody acknowledged goes out (on the route the silence does not hold)
        got = status(await d2.dispatch(escalated("northwind", "inc-w2", 2)))
        assert got["chat"] == ("queued", "") and got["pager"][0] == "filtered", got
        await asyncio.to_thread(receiver.wait_for, 3, 10)  # all three to chat: nothing else is queued
        assert sorted(refs("/chat")) == ["inc-w1 #1", "inc-w2 #1", "inc-w2 #2"]
        assert refs("/pager") == []

        with war_room.client() as w:  # the silence ends: both routes take what comes next
            assert w.delete(f"/api/v1/silences/{sil.json()['id']}").status_code == 200
        # an acknowledged thread: no escalated, no update, from either worker; the resolution still goes out
        opened = make_incident("skyline", iid="inc-ack")
        war_room.publish("incidents", opened, opened.entity)
        assert status(await d1.dispatch(opened)) == queued
        await on_both_routes("inc-ack #1")
        with war_room.client() as w:
            wait_for(lambda: w.get("/api/v1/incidents/inc-ack").status_code == 200, what="the thread")
            assert w.post("/api/v1/incidents/inc-ack/actions", json={"action": "acknowledge"}).status_code == 200
        acked = ("filtered", "incident acknowledged")
        update = make_incident("skyline", iid="inc-ack", seq=3, status="update")
        for d in (d1, d2):
            assert status(await d.dispatch(escalated("skyline", "inc-ack", 2))) == {"chat": acked, "pager": acked}
            assert status(await d.dispatch(update)) == {"chat": acked, "pager": acked}
        resolved = make_incident("skyline", iid="inc-ack", seq=4, status="resolved")
        assert status(await d2.dispatch(resolved)) == queued
        await on_both_routes("inc-ack #4")
        assert not [x for x in receiver.requests if "inc-ack #2" in x.title or "inc-ack #3" in x.title]

        # queued before the acknowledge, still pending at it: dropped when its turn comes, on every route
        first = make_incident("northwind", iid="inc-pend")
        war_room.publish("incidents", first, first.entity)
        await d1.dispatch(first)
        await on_both_routes("inc-pend #1")
        receiver.fail(503)  # the channels are down: the escalated stays in the outbox, retried
        assert status(await d1.dispatch(escalated("northwind", "inc-pend", 2))) == queued
        tried = await asyncio.to_thread(
            receiver.wait_for,
            lambda rs: {x.path for x in rs if "inc-pend #2" in x.title} == {"/chat", "/pager"},
            10,
            attempts=True,
        )
        assert {x.path for x in tried if "inc-pend #2" in x.title} == {"/chat", "/pager"}
        assert (await d2.pending()) == {"chat": 1, "pager": 1}
        with war_room.client() as w:
            wait_for(lambda: w.get("/api/v1/incidents/inc-pend").status_code == 200, what="the thread")
            assert w.post("/api/v1/incidents/inc-pend/actions", json={"action": "acknowledge"}).status_code == 200

        def dropped() -> set[str]:
            return {o.route for o in outcomes if (o.incident_id, o.seq, o.status, o.error) == ("inc-pend", 2, *acked)}

        await _until(lambda: dropped() == {"chat", "pager"})  # while the channels still refuse everything
        assert (await d1.pending()) == {"chat": 0, "pager": 0}
        receiver.recover()
        # the thread goes on: its resolution is delivered, and the escalated never is
        done = make_incident("northwind", iid="inc-pend", seq=3, status="resolved")
        assert status(await d2.dispatch(done)) == queued
        await on_both_routes("inc-pend #3")
        assert not [x for x in receiver.requests if "inc-pend #2" in x.title]
    finally:
        await d1.aclose()
        await d2.aclose()
        await r1.aclose()
        await r2.aclose()
        receiver.stop()


async def test_series_trust_and_mention_search(war_room: WarRoom) -> None:
    r = aredis.Redis.from_url(war_room.redis_url)
    windows = RedisWindows(r, war_room.settings)
    events = [
        make_event(i, "northwind", "negative" if i % 4 == 0 else "positive", ONSET + timedelta(seconds=i))
        for i in range(40)
    ]
    events.append(make_event(99, "skyline", "neutral", ONSET, lang="es", source="forum"))
    try:
        await windows.add_batch([(ev, 0) for ev in events])
    finally:
        await r.aclose()
    for ev in events:
        war_room.publish("enriched", ev, ev.entity or "")
    with war_room.client(READ_TOKEN) as c:
        doc = c.get("/api/openapi.json").json()
        wait_for(lambda: len(c.get("/api/v1/mentions", params={"limit": 100}).json()) == 41, what="the mentions")
        neg = c.get("/api/v1/mentions", params={"entity": "northwind", "sentiment": "negative", "limit": 100}).json()
        assert len(neg) == 10 and all(m["sentiment"] == "negative" for m in neg)
        assert [m["event_id"] for m in c.get("/api/v1/mentions", params={"lang": "es", "source": "forum"}).json()] == [
            "forum:skyline-99"
        ]
        s = c.get("/api/v1/series/northwind", params={"signal": "volume", "step": "bucket", "hours": 1}).json()
        conforms(response_schema(doc, "/api/v1/series/{entity}"), s, doc)
        assert sum(v for _, v in s["points"] if v) == 40  # every counted mention, in its minute
        share = c.get(
            "/api/v1/series/northwind", params={"signal": "negative_share", "step": "bucket", "hours": 1}
        ).json()
        assert max(v for _, v in share["points"] if v is not None) == pytest.approx(0.25)
        trust = c.get("/api/v1/trust/northwind", params={"window": "1h"}).json()
        conforms(response_schema(doc, "/api/v1/trust/{entity}"), trust, doc)
        conforms(response_schema(doc, "/api/v1/mentions"), neg, doc)
        assert [t["entity"] for t in trust] == ["northwind", "skyline"]  # beside the competitor
        comp = {x["name"]: x["value"] for x in trust[0]["components"]}
        assert comp["negative_share"] == pytest.approx(0.25)
        r404 = c.get("/api/v1/series/nobody")
        assert r404.status_code == 404 and "northwind" in r404.json()["reason"]


async def test_live_events_resume_after_a_reconnect_with_last_event_id(war_room: WarRoom) -> None:
    auth = {"Authorization": f"Bearer {READ_TOKEN}"}
    seen: list[tuple[str, str, str]] = []
    async with httpx.AsyncClient(base_url=war_room.url) as client:
        stop, connected = asyncio.Event(), asyncio.Event()

        def on(event: str, data: str, at: float, event_id: str) -> None:
            seen.append((event, orjson.loads(data).get("incident_id", ""), event_id))

        first = asyncio.create_task(follow_sse(client, "/api/v1/events", on, connected, stop, auth))
        await asyncio.wait_for(connected.wait(), 10)
        await asyncio.to_thread(war_room.publish, "incidents", make_incident(iid="inc-a"), "northwind")
        await _until(lambda: any(iid == "inc-a" for _, iid, _ in seen))
        first.cancel()  # the connection drops
        await asyncio.gather(first, return_exceptions=True)
        last_id = seen[-1][2]
        for iid in ("inc-b", "inc-c"):  # published while nobody listens
            await asyncio.to_thread(war_room.publish, "incidents", make_incident(iid=iid), "northwind")
        await _until(lambda: httpx.get(f"{war_room.url}/api/v1/incidents", headers=auth).json().__len__() == 3)
        seen.clear()
        again, connected2 = asyncio.Event(), asyncio.Event()
        resumed = asyncio.create_task(
            follow_sse(client, "/api/v1/events", on, connected2, again, {**auth, "Last-Event-ID": last_id})
        )
        await _until(lambda: len(seen) >= 2)
        again.set()
        resumed.cancel()
        await asyncio.gather(resumed, return_exceptions=True)
    assert [(e, iid) for e, iid, _ in seen] == [("incident", "inc-b"), ("incident", "inc-c")]


async def test_the_mention_stream_counts_everything_and_sends_at_most_its_rate(war_room: WarRoom) -> None:
    frames: list[dict[str, Any]] = []
    k = war_room.settings.web.stream_per_second
    async with httpx.AsyncClient(base_url=war_room.url) as client:
        stop, connected = asyncio.Event(), asyncio.Event()
        path = "/api/v1/stream/mentions?entity=northwind&sentiment=negative"
        auth = {"Authorization": f"Bearer {READ_TOKEN}"}
        task = asyncio.create_task(
            follow_sse(client, path, lambda e, d, at, i: frames.append(orjson.loads(d)), connected, stop, auth)
        )
        await asyncio.wait_for(connected.wait(), 10)
        events = [make_event(i, "northwind", "negative" if i % 2 else "positive", ONSET) for i in range(300)]
        events += [make_event(i, "skyline", "negative", ONSET) for i in range(50)]
        for ev in events:
            war_room.producer.send(war_room.topics["enriched"], dumps(ev), key=(ev.entity or "").encode())
        await asyncio.to_thread(war_room.producer.flush, 10)
        await _until(lambda: sum(f["matched"] for f in frames) >= 150)
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sum(f["matched"] for f in frames) == 150  # every negative northwind mention counted, no other
    assert all(len(f["items"]) <= k for f in frames) and max(f["matched"] for f in frames) > k
    items = [m for f in frames for m in f["items"]]
    assert items and all(m["entity"] == "northwind" and m["sentiment"] == "negative" for m in items)


async def test_the_mention_stream_filters_by_aspect_language_and_source(war_room: WarRoom) -> None:
    """Events that carry aspects, languages and sources: each live stream counts and shows exactly
    the mentions its filter names (all of them: fewer than web.stream_per_second), and the search
    agrees."""

    def hit(aspect: str) -> AspectHit:
        return AspectHit(aspect=aspect, term=aspect, start=0, end=len(aspect), sentiment=-0.5)

    def ev(n: int, entity: str, aspects: list[str], lang: str = "en", source: str = "twitter") -> EnrichedEvent:
        e = make_event(n, entity, "negative", ONSET + timedelta(seconds=n), lang=lang, source=source)
        return e.model_copy(update={"aspects": [hit(a) for a in aspects]})

    events = [ev(n, "northwind", ["delivery"]) for n in range(4)]
    events += [ev(4, "northwind", ["delivery", "price"]), ev(5, "northwind", ["price"]), ev(6, "northwind", [])]
    events += [ev(n, "skyline", ["delivery"], lang="es", source="forum") for n in (7, 8)]
    events += [ev(9, "skyline", [], lang="es", source="forum"), ev(10, "skyline", ["app"], lang="es")]
    events += [ev(11, "northwind", ["delivery"], source="forum")]
    filters = {
        "aspect=delivery": {"twitter:northwind-0", "twitter:northwind-1", "twitter:northwind-2", "twitter:northwind-3"}
        | {"twitter:northwind-4", "forum:skyline-7", "forum:skyline-8", "forum:northwind-11"},
        "aspect=delivery&entity=northwind": {f"twitter:northwind-{n}" for n in range(5)} | {"forum:northwind-11"},
        "lang=es&source=forum": {"forum:skyline-7", "forum:skyline-8", "forum:skyline-9"},
        "aspect=price&lang=en": {"twitter:northwind-4", "twitter:northwind-5"},
    }
    assert all(len(ids) < war_room.settings.web.stream_per_second for ids in filters.values())
    frames: dict[str, list[dict[str, Any]]] = {q: [] for q in filters}
    auth = {"Authorization": f"Bearer {READ_TOKEN}"}
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=war_room.url) as client:
        tasks, ready = [], []
        for q in filters:
            connected = asyncio.Event()
            ready.append(connected)

            def on(e: str, d: str, at: float, i: str, q: str = q) -> None:
                frames[q].append(orjson.loads(d))

            tasks.append(
                asyncio.create_task(follow_sse(client, f"/api/v1/stream/mentions?{q}", on, connected, stop, auth))
            )
        await asyncio.wait_for(asyncio.gather(*(c.wait() for c in ready)), 10)
        for e in events:
            war_room.producer.send(war_room.topics["enriched"], dumps(e), key=(e.entity or "").encode())
        await asyncio.to_thread(war_room.producer.flush, 10)
        with war_room.client(READ_TOKEN) as c:  # the read model has every event ...
            wait_for(lambda: len(c.get("/api/v1/mentions", params={"limit": 100}).json()) == len(events))
            for q, ids in filters.items():  # ... and the search filters the same way
                found = c.get(f"/api/v1/mentions?{q}&limit=100").json()
                assert {m["event_id"] for m in found} == ids, q
        # ... so every stream's next-but-one frame was cut after all of them arrived
        seen = {q: len(f) for q, f in frames.items()}
        await _until(lambda: all(len(frames[q]) >= seen[q] + 2 for q in filters))
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for q, ids in filters.items():
        shown = [m for f in frames[q] for m in f["items"]]
        assert sum(f["matched"] for f in frames[q]) == len(ids), q
        assert sorted(m["event_id"] for m in shown) == sorted(ids), q
    assert all("delivery" in m["aspects"] for f in frames["aspect=delivery"] for m in f["items"])


async def _until(cond: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.05)


async def test_comment_and_resolve_are_recorded_published_and_change_the_list(war_room: WarRoom) -> None:
    inc = make_incident("skyline", iid="inc-cr")
    war_room.publish("incidents", inc, inc.entity)
    with war_room.client() as w:
        wait_for(lambda: w.get("/api/v1/incidents/inc-cr").status_code == 200, what="the thread")
        assert w.post("/api/v1/incidents/inc-cr/actions", json={"action": "comment"}).status_code == 422
        r = w.post("/api/v1/incidents/inc-cr/actions", json={"action": "comment", "why": "vendor says 20 min"})
        assert r.status_code == 200, r.text
        r = w.post("/api/v1/incidents/inc-cr/actions", json={"action": "resolve", "why": "fixed upstream"})
        assert r.status_code == 200, r.text
        row = wait_for(
            lambda: [x for x in w.get("/api/v1/incidents").json() if x["incident_id"] == "inc-cr"],
            what="the incident in the list",
        )[0]
        assert row["state"] == "resolved"
        thread = w.get("/api/v1/incidents/inc-cr").json()
        assert [(a["action"], a["who"], a["why"]) for a in thread["actions"]] == [
            ("comment", "alice", "vendor says 20 min"),
            ("resolve", "alice", "fixed upstream"),
        ]
    r = aredis.Redis.from_url(war_room.redis_url)
    try:
        state = await r.hgetall(f"{war_room.prefix}:ctl:inc:inc-cr")
        assert state[b"state"] == b"resolved" and state[b"resolved_by"] == b"alice" and float(state[b"resolved_at"]) > 0
    finally:
        await r.aclose()
    published = wait_for(
        lambda: (
            [
                (x["action"], x["why"])
                for x in war_room.topic_records("incidents")
                if x.get("kind") == "action" and x.get("incident_id") == "inc-cr"
            ]
            or None
        ),
        what="the actions on the incidents topic",
    )
    assert published == [("comment", "vendor says 20 min"), ("resolve", "fixed upstream")]


async def test_a_silence_ends_at_its_expiry_or_when_deleted(war_room: WarRoom) -> None:
    controls = Controls(aredis.Redis.from_url(war_room.redis_url), war_room.prefix)
    northwind, skyline = make_incident("northwind", iid="inc-s1"), make_incident("skyline", iid="inc-s2")
    try:
        with war_room.client() as w:
            doc = w.get("/api/openapi.json").json()
            short = w.post("/api/v1/silences", json={"entity": "northwind", "duration_seconds": 1.5})
            long = w.post("/api/v1/silences", json={"entity": "skyline", "duration_seconds": 600})
            assert short.status_code == long.status_code == 201
            assert await controls.suppressed("hook", northwind) and await controls.suppressed("hook", skyline)
            # the short one runs out by itself: the dispatcher's question answers None again
            await _until_async(lambda: controls.suppressed("hook", northwind), expect=None, timeout=10)
            assert await controls.suppressed("hook", skyline)  # the long one still holds
            gone = w.delete(f"/api/v1/silences/{long.json()['id']}")
            assert gone.status_code == 200, gone.text
            conforms(response_schema(doc, "/api/v1/silences/{silence_id}", "delete"), gone.json(), doc)
            assert await controls.suppressed("hook", skyline) is None
            assert w.get("/api/v1/silences").json() == []
            ended = w.get("/api/v1/silences", params={"expired": True}).json()
            assert sorted(x["entity"] for x in ended) == ["northwind", "skyline"]
            again = w.delete(f"/api/v1/silences/{long.json()['id']}x")
            assert again.status_code == 404 and again.json()["reason"]
    finally:
        await controls.r.aclose()


async def test_concurrent_silences_each_publish_their_own_action(war_room: WarRoom) -> None:
    """Eight silences added at once, then ended at once: every request publishes the action it
    recorded (the shared action log's newest entry may be another request's)."""
    entities = ["northwind", "skyline"]
    headers = {"Authorization": f"Bearer {WRITE_TOKEN}"}
    async with httpx.AsyncClient(base_url=war_room.url, headers=headers, timeout=10) as w:
        added = await asyncio.gather(
            *(
                w.post("/api/v1/silences", json={"entity": entities[i % 2], "duration_seconds": 600, "comment": str(i)})
                for i in range(8)
            )
        )
        assert all(r.status_code == 201 for r in added), [r.text for r in added]
        ids = {r.json()["id"] for r in added}
        assert len(ids) == 8
        ended = await asyncio.gather(*(w.delete(f"/api/v1/silences/{i}") for i in ids))
        assert all(r.status_code == 200 for r in ended), [r.text for r in ended]

    def published() -> list[tuple[str, str]] | None:
        acts = [
            (x["action"], x["details"]["silence"]["id"])
            for x in war_room.topic_records("incidents")
            if x.get("kind") == "action" and x.get("action") in ("silence", "unsilence")
        ]
        return acts if len(acts) >= 16 else None

    acts = wait_for(published, what="16 silence actions on the incidents topic")
    assert sorted(acts) == sorted([("silence", i) for i in ids] + [("unsilence", i) for i in ids])


async def test_a_corrected_sentiment_reaches_the_labels_topic_and_is_recorded(war_room: WarRoom) -> None:
    ev = make_event(7, "northwind", "positive", ONSET)
    war_room.publish("enriched", ev, "northwind")
    with war_room.client() as w:
        doc = w.get("/api/openapi.json").json()
        wait_for(lambda: w.get("/api/v1/mentions").json(), what="the mention")
        r = w.post(
            f"/api/v1/mentions/{ev.event_id}/sentiment",
            json={"label": "negative", "why": "sarcasm: 'great'"},
        )
        assert r.status_code == 200, r.text
        conforms(response_schema(doc, "/api/v1/mentions/{event_id}/sentiment", "post"), r.json(), doc)
        assert w.post("/api/v1/mentions/none:1/sentiment", json={"label": "negative"}).status_code == 404
        assert w.post(f"/api/v1/mentions/{ev.event_id}/sentiment", json={"label": "angry"}).status_code == 422
    (label,) = wait_for(lambda: war_room.topic_records("labels") or None, what="the label on the labels topic")
    assert label["label"] == "negative" and label["was"] == "positive" and label["by"] == "alice"
    assert label["text"] == ev.text_redacted and label["event_id"] == ev.event_id
    actions = wait_for(
        lambda: [x for x in war_room.topic_records("incidents") if x.get("action") == "relabel"] or None,
        what="the relabel action",
    )
    assert actions[0]["who"] == "alice" and "sarcasm" in actions[0]["why"]


def test_the_incident_list_is_newest_first_with_age_and_owner(war_room: WarRoom) -> None:
    """Published in neither onset nor id order; the list (API and page) goes by onset, newest
    first. Age runs from the onset to the resolution, or to the newest event time seen (11 min past
    ONSET here: the newest thread's message); the owner appears once assigned."""
    threads = [  # (id, onset offset in minutes), in publishing order
        ("inc-b", 0),
        ("inc-c", 10),
        ("inc-a", 5),
    ]
    war_room.publish("incidents", make_incident(iid="inc-b"), "northwind")
    war_room.publish("incidents", make_incident(iid="inc-b", seq=2, status="resolved"), "northwind")
    for iid, minutes in threads[1:]:
        war_room.publish("incidents", make_incident(iid=iid, onset=ONSET + timedelta(minutes=minutes)), "northwind")
    with war_room.client() as w:

        def listed() -> list[dict[str, Any]] | None:
            got = w.get("/api/v1/incidents").json()
            return got if sum(r["messages"] for r in got) == 4 else None  # inc-b's resolution too

        rows = wait_for(listed, what="the three threads")
        assert [r["incident_id"] for r in rows] == ["inc-c", "inc-a", "inc-b"]
        assert [r["age_seconds"] for r in rows] == [60.0, 360.0, 120.0]  # inc-b: onset to its resolution
        assert [r["state"] for r in rows] == ["open", "open", "resolved"]
        assert [r["owner"] for r in rows] == [None, None, None]
        r = w.post("/api/v1/incidents/inc-a/actions", json={"action": "assign", "owner": "carol"})
        assert r.status_code == 200, r.text
        rows = w.get("/api/v1/incidents").json()
        assert [(r["incident_id"], r["owner"]) for r in rows] == [("inc-c", None), ("inc-a", "carol"), ("inc-b", None)]
        page = w.get("/", params={"part": 1}).text
    cells = [
        (row.split('"', 1)[0], [c.strip() for c in re.findall(r"<td>(.*?)</td>", body, re.S)])
        for row, body in (chunk.split(">", 1) for chunk in page.split('data-incident-id="')[1:])
    ]
    assert [iid for iid, _ in cells] == ["inc-c", "inc-a", "inc-b"]
    # the age and owner columns (after opened), as the page prints them
    assert [c[-3:-1] for _, c in cells] == [["1m", ""], ["6m", "carol"], ["2m", ""]]


async def test_trust_is_served_for_every_configured_window(war_room: WarRoom) -> None:
    """Every window of windows.rollups_seconds (15 min .. 30 d) for the entity and its competitor,
    all of them or one by name; the short ones from the fine buckets, the long ones from the hourly
    rollups: both hold the same 40 mentions."""
    events = [
        make_event(i, "northwind", "negative" if i % 4 == 0 else "positive", ONSET + timedelta(seconds=i))
        for i in range(40)
    ]
    r = aredis.Redis.from_url(war_room.redis_url)
    try:
        await RedisWindows(r, war_room.settings).add_batch([(ev, 0) for ev in events])
    finally:
        await r.aclose()
    war_room.publish("enriched", events[-1], "northwind")  # the newest event time: the windows end there
    names = [window_name(s) for s in war_room.settings.windows.rollups_seconds]
    assert names == ["15m", "1h", "24h", "7d", "30d"]
    with war_room.client(READ_TOKEN) as c:
        doc = c.get("/api/openapi.json").json()
        wait_for(lambda: c.get("/api/v1/mentions").json(), what="the newest mention (the windows' end)")
        every = c.get("/api/v1/trust/northwind").json()
        conforms(response_schema(doc, "/api/v1/trust/{entity}"), every, doc)
        assert [(t["entity"], t["window_name"]) for t in every] == [
            (e, n) for e in ("northwind", "skyline") for n in names
        ]
        assert [t["window_seconds"] for t in every[:5]] == war_room.settings.windows.rollups_seconds
        for t in every[:5]:
            assert t["volume"] == 40, t
            comp = {x["name"]: x["value"] for x in t["components"]}
            assert comp["negative_share"] == pytest.approx(0.25), t
            start, end = (datetime.fromisoformat(x) for x in t["window"])
            assert (end - start).total_seconds() == t["window_seconds"] and start <= ONSET < end
        assert all(t["volume"] == 0 for t in every[5:])  # the competitor had nothing
        for n in names:
            one = c.get("/api/v1/trust/northwind", params={"window": n}).json()
            assert [(t["entity"], t["window_name"]) for t in one] == [("northwind", n), ("skyline", n)]
            assert one[0] == next(t for t in every if t["window_name"] == n)
        bad = c.get("/api/v1/trust/northwind", params={"window": "2h"})
        assert bad.status_code == 422 and all(n in bad.json()["reason"] for n in names)
        html = c.get("/entities/northwind", params={"part": 1}).text
    assert all(f">{n}<" in html for n in names), "the entity page shows every window"


def test_signals_list_newest_first_and_fit_the_openapi_document(war_room: WarRoom) -> None:
    for seq, entity in [(1, "northwind"), (2, "northwind"), (1, "skyline")]:
        sig = make_incident(entity, seq=seq).signals[0]
        war_room.publish("signals", sig.model_copy(update={"signal_id": f"sig-{entity}-{seq}"}), entity)
    with war_room.client(READ_TOKEN) as c:
        doc = c.get("/api/openapi.json").json()
        every = wait_for(lambda: len(got := c.get("/api/v1/signals").json()) == 3 and got, what="the signals")
        conforms(response_schema(doc, "/api/v1/signals"), every, doc)
        starts = [s["bucket_start"] for s in every]
        assert starts == sorted(starts, reverse=True)
        mine = c.get("/api/v1/signals", params={"entity": "northwind"}).json()
        assert [s["signal_id"] for s in mine] == ["sig-northwind-2", "sig-northwind-1"]
        assert c.get("/api/v1/signals", params={"signal": "rating"}).json() == []


def test_more_requests_than_the_rate_get_429_with_a_reason_then_pass_again(war_room: WarRoom) -> None:
    rate = war_room.settings.web.requests_per_second
    with war_room.client(READ_TOKEN) as c:
        codes: list[httpx.Response] = []
        while not codes or codes[-1].status_code != 429:  # faster than the rate, whatever this host's pace
            codes.append(c.get("/healthz"))
            assert len(codes) < 50 * rate, "never limited"
        limited = codes[-1:]
        assert all(r.status_code == 200 for r in codes[:-1])
        assert len(codes) - 1 >= 2 * rate  # the burst passes
        body = limited[0].json()
        assert body["error"] == "rate_limited" and "requests/s" in body["reason"]
        assert limited[0].headers.get("retry-after") == "1"
        wait_for(lambda: c.get("/healthz").status_code == 200, timeout=5, what="the rate to pass again")
    with war_room.client() as other:  # another client has its own allowance
        assert other.get("/healthz").status_code == 200


async def _until_async(probe: Any, *, expect: Any, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while await probe() != expect:
            await asyncio.sleep(0.1)


async def test_the_entity_page_band_is_what_the_same_hour_looked_like_the_week_before(war_room: WarRoom) -> None:
    """09:00 brought 2, 4, ... 14 mentions on the seven days before: the band at 09:00 has height."""
    day0 = ONSET.replace(hour=0, minute=0) - timedelta(days=7)
    events = [
        make_event(d * 100 + i, "northwind", "positive", day0 + timedelta(days=d, hours=9, minutes=i))
        for d in range(7)
        for i in range(2 * (d + 1))
    ]
    now = make_event(9999, "northwind", "positive", day0 + timedelta(days=7, hours=12))
    r = aredis.Redis.from_url(war_room.redis_url)
    try:
        await RedisWindows(r, war_room.settings).add_batch([(ev, 0) for ev in [*events, now]])
    finally:
        await r.aclose()
    war_room.publish("enriched", now, "northwind")
    with war_room.client(READ_TOKEN) as c:
        wait_for(lambda: c.get("/api/v1/mentions").json(), what="the newest mention (the page's clock)")
        html = c.get("/entities/northwind", params={"part": 1}).text
    first = html.split('<polygon class="band" points="', 1)[1].split('"', 1)[0]
    ys = [float(p.split(",")[1]) for p in first.split()]
    upper, lower = ys[: len(ys) // 2], ys[len(ys) // 2 :][::-1]
    heights = [b - a for a, b in zip(upper, lower, strict=True)]
    assert max(heights) > 1.0  # the 09:00 hour: 10th to 90th percentile of 2..14
    assert min(heights) == pytest.approx(0.0, abs=1e-6)  # the other hours were always empty
