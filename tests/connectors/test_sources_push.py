"""Push kinds: each platform's signature scheme (valid, wrong secret, stale, replayed) and mapping,
through the push server and the runtime into real Kafka, dedupe in real Redis."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from connectors.base import DeliveryError, KafkaSink, ListSink, Sink
from connectors.push import PushServer, PushSource
from connectors.registry import get
from connectors.runtime import CursorStore, Runtime
from contract.records import parse_raw
from infra.kafka import ensure_topics
from streams.runtime import validation_reason
from tests.connectors.srckit import fixture, ids_of, read_topic, spec

pytestmark = pytest.mark.integration

SECRET = "whsec_test_4f1c"
API_KEY = "sm-client-id"
ENV = {"PUSH_SECRET": SECRET, "SM_KEY": API_KEY}


def b64(key: bytes, body: bytes, algo: Any = hashlib.sha256) -> str:
    return base64.b64encode(hmac.new(key, body, algo).digest()).decode()


def t_v1(header: str) -> Callable[[bytes, str, int], dict[str, str]]:
    def sign(body: bytes, secret: str, t: int) -> dict[str, str]:
        mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        return {header: f"t={t},v1={mac}"}

    return sign


SIGNERS: dict[str, Callable[[bytes, str, int], dict[str, str]]] = {
    "stripe": t_v1("Stripe-Signature"),
    "webhook": t_v1("X-Repmon-Signature"),
    "shopify": lambda body, secret, t: {"X-Shopify-Hmac-Sha256": b64(secret.encode(), body)},
    "typeform": lambda body, secret, t: {"Typeform-Signature": "sha256=" + b64(secret.encode(), body)},
    "surveymonkey": lambda body, secret, t: {
        "Sm-Signature": b64(f"{API_KEY}&{secret}".encode(), body, hashlib.sha1),
        "Sm-Apikey": API_KEY,
    },
    "trustpilot": lambda body, secret, t: {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()},
}
TIMED = {"stripe", "webhook"}  # schemes that sign a timestamp (the others refuse replays by event id)


def deliveries(kind: str) -> list[tuple[dict[str, str], bytes]]:
    """(extra headers, raw body) of each delivery a platform would send, from the fixtures."""
    if kind == "stripe":
        return [({}, orjson.dumps(e)) for e in fixture("stripe_events.json")["events"]]
    if kind == "shopify":
        return [
            (
                {
                    "X-Shopify-Topic": d["topic"],
                    "X-Shopify-Webhook-Id": d["webhook_id"],
                    "X-Shopify-Shop-Domain": "northwind.myshopify.com",
                },
                orjson.dumps(d["body"]),
            )
            for d in fixture("shopify_webhooks.json")["deliveries"]
        ]
    if kind == "trustpilot":
        data = fixture("trustpilot_events.json")
        return [({}, orjson.dumps({"events": data["events"]}))]
    if kind == "webhook":
        rec = {
            "kind": "review",
            "event_id": "shop:r-1",
            "source": "shop",
            "occurred_at": "2026-12-03T04:00:00+00:00",
            "rating": 2,
            "text": "slow delivery",
        }
        return [({}, orjson.dumps([rec, {**rec, "event_id": "shop:r-2", "rating": 5}]))]
    name = {"typeform": "typeform_response.json", "surveymonkey": "surveymonkey_event.json"}[kind]
    body = (Path(__file__).parent / "fixtures" / name).read_bytes()
    return [({}, body)]


EXPECTED: dict[str, list[dict[str, Any]]] = {
    "stripe": [
        {
            "event_id": "stripe:evt_3QaB1cDeFgHiJkLm0aBcDeFg",
            "kind": "purchase",
            "status": "paid",
            "amount": 129.99,
            "currency": "USD",
            "order_id": "pi_3QaB1cDeFgHiJkLm0pQr",
            "customer_key": "cus_R1a2b3c4",
            "occurred_at": "2026-12-03T04:30:00+00:00",
        },
        {
            "event_id": "stripe:evt_3QaB1cDeFgHiJkLm1aBcDeFg",
            "status": "refunded",
            "amount": 40.0,
            "order_id": "pi_3QaB1cDeFgHiJkLm0pQr",
        },
        {
            "event_id": "stripe:evt_3QaB1cDeFgHiJkLm2aBcDeFg",
            "status": "chargeback",
            "amount": 129.99,
            "order_id": "pi_3QaB1cDeFgHiJkLm0pQr",
        },
    ],
    "shopify": [
        {
            "event_id": "shopify:b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
            "status": "placed",
            "amount": 199.0,
            "order_id": "820982911946154508",
            "currency": "USD",
            "occurred_at": "2026-12-03T09:00:00+00:00",
            "customer_key": "115310627314723954",
        },
        {
            "event_id": "shopify:0f5b3a66-8b1d-4a0b-9d0e-4b2f0e0d9a11",
            "status": "cancelled",
            "occurred_at": "2026-12-03T11:00:00+00:00",
        },
        {
            "event_id": "shopify:6c1d2a6f-3e2a-4c59-a3a0-8f0b6a9c2e77",
            "status": "refunded",
            "amount": 159.5,
            "order_id": "820982911946154508",
            "currency": "USD",
        },
    ],
    "typeform": [
        {
            "event_id": "typeform:a3a12ec67a1365927098a606107fac15",
            "kind": "feedback",
            "metric": "nps",
            "score": 3,
            "comment": "The app logged me out twice during booking.",
            "customer_key": "c-4412",
        },
    ],
    "surveymonkey": [
        {
            "event_id": "surveymonkey:10000000123",
            "kind": "feedback",
            "score": 9,
            "comment": "Crew were lovely",
            "customer_key": "11885744032",
        },
    ],
    "trustpilot": [
        {
            "event_id": "trustpilot:service-review-created:6750f0c1e2b3a4d5e6f70812",
            "kind": "review",
            "rating": 1,
            "text": "Lost luggage, no reply. Northwind lost my suitcase and support never answered.",
            "author": "Maria K.",
            "lang": "en",
            "platform": "trustpilot",
        },
        {"event_id": "trustpilot:service-review-created:6750f0c1e2b3a4d5e6f70813", "rating": 5, "lang": "de"},
    ],
    "webhook": [{"event_id": "shop:r-1", "rating": 2}, {"event_id": "shop:r-2", "rating": 5}],
}
MALFORMED = {"trustpilot": 1}


@contextlib.asynccontextmanager
async def serving(sources: list[PushSource], sink: Sink, aredis: Any, prefix: str, **server: Any) -> AsyncIterator[str]:
    rt = Runtime(sources, sink, CursorStore(aredis, prefix), first_retry_seconds=0.05, grace_seconds=0.5)
    push = PushServer(sources, **server)
    port = await push.start("127.0.0.1", 0)
    task = asyncio.create_task(rt.run())
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        rt.stop()
        await task
        await push.stop()


def push_source(kind: str, name: str, **kw: Any) -> PushSource:
    creds = {"secret": "PUSH_SECRET", **({"api_key": "SM_KEY"} if kind == "surveymonkey" else {})}
    cls = get(kind)
    src = cls(spec(kind, name=name, credentials=creds, **kw), env=ENV)
    assert isinstance(src, PushSource)
    return src


@pytest.mark.parametrize("kind", sorted(SIGNERS))
async def test_signature_vectors_and_mapping_per_push_scheme(
    kind: str, aredis: Any, unique: str, kafka_bootstrap: str
) -> None:
    topic = f"push-{kind}-{unique}"
    ensure_topics(kafka_bootstrap, [topic], 1)
    sink = KafkaSink(kafka_bootstrap, topic)
    sign = SIGNERS[kind]
    now = int(time.time())
    try:
        async with serving([push_source(kind, f"{kind}-in")], sink, aredis, unique) as url:
            hook = f"{url}/hooks/{kind}-in"
            async with httpx.AsyncClient(timeout=30) as c:
                outs = []
                for extra, body in deliveries(kind):
                    r = await c.post(hook, content=body, headers={**extra, **sign(body, SECRET, now)})
                    assert r.status_code in (200, 202), r.text
                    outs.append(r.json())
                assert sum(o["accepted"] for o in outs) == len(EXPECTED[kind])
                extra, body = deliveries(kind)[0]
                # replayed: the same delivery again is accepted once
                again = await c.post(hook, content=body, headers={**extra, **sign(body, SECRET, now)})
                assert again.status_code == 200 and again.json()["duplicate"] is True and again.json()["accepted"] == 0
                # wrong secret
                bad = await c.post(hook, content=body, headers={**extra, **sign(body, "not-the-secret", now)})
                assert bad.status_code == 401 and "does not match" in bad.json()["error"]
                if kind != "trustpilot":  # HTTP Basic authenticates the sender, it signs no body
                    tampered = body[:-1] + b" }"  # still JSON, not what was signed
                    bad = await c.post(hook, content=tampered, headers={**extra, **sign(body, SECRET, now)})
                    assert bad.status_code == 401
                # unsigned
                assert (await c.post(hook, content=body, headers=extra)).status_code == 401
                if kind in TIMED:  # stale: signed 301 s ago, past the 300 s tolerance
                    stale = await c.post(hook, content=body, headers={**extra, **sign(body, SECRET, now - 301)})
                    assert stale.status_code == 401 and "too old" in stale.json()["error"]
    finally:
        sink.close()
    got = [orjson.loads(v) for v in read_topic(kafka_bootstrap, topic)]
    good = [g for g in got if "_error" not in g]
    assert len(good) == len(EXPECTED[kind]) and len({g["event_id"] for g in good}) == len(good)
    by_id = {g["event_id"]: g for g in good}
    for want in EXPECTED[kind]:
        rec = by_id[want["event_id"]]
        assert {k: rec.get(k) for k in want} == want
    assert sum("_error" in g for g in got) == MALFORMED.get(kind, 0)


async def raw_post(url: str, path: str, headers: dict[str, str], body: bytes, *, wait: float = 10.0) -> int:
    """POST over a bare socket (a sender that announces more body than it sends, or a header no
    HTTP client would send) -> the status the server answers within ``wait`` seconds."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(head.encode() + b"\r\n" + body)
        await writer.drain()
        async with asyncio.timeout(wait):
            line = await reader.readline()
        return int(line.split()[1])
    finally:
        writer.close()


@pytest.mark.parametrize("kind", sorted(SIGNERS))
async def test_a_delivery_is_refused_before_its_body_is_read(kind: str, aredis: Any, unique: str) -> None:
    """Unsigned, oversized by its Content-Length, or with a non-ASCII signature: refused from the
    headers alone; a signed body that trickles in is cut at the read timeout."""
    sink = ListSink()
    extra, body = deliveries(kind)[0]
    signed = {**extra, **SIGNERS[kind](body, SECRET, int(time.time()))}
    sig_header = next(k for k in SIGNERS[kind](body, SECRET, 0) if k != "Sm-Apikey")
    # the body would take 60 s to be given up on: a refusal within 10 s was made without it
    async with serving([push_source(kind, "p")], sink, aredis, unique, max_body=4096, read_timeout=60) as url:
        announced = {**extra, "Content-Length": str(len(body))}
        assert await raw_post(url, "/hooks/p", announced, body[:5]) == 401
        assert await raw_post(url, "/hooks/p", {**signed, "Content-Length": "4097"}, b"") == 413
        odd = {**signed, sig_header: signed[sig_header][:-2] + "é", "Content-Length": str(len(body))}
        assert await raw_post(url, "/hooks/p", odd, body) == 401
    async with serving([push_source(kind, "p")], sink, aredis, unique, max_body=4096, read_timeout=0.5) as url:
        announced = {**signed, "Content-Length": str(len(body))}
        assert await raw_post(url, "/hooks/p", announced, body[: len(body) // 2]) == 408
        assert await raw_post(url, "/hooks/p", announced, body) in (200, 202)  # the same, in full, passes
    assert sink.items  # the delivery sent in full reached the sink


async def test_trustpilot_dead_letters_an_out_of_range_rating_with_the_reason(aredis: Any, unique: str) -> None:
    sink = ListSink()
    async with serving([push_source("trustpilot", "tp")], sink, aredis, unique) as url:
        _, body = deliveries("trustpilot")[0]
        async with httpx.AsyncClient() as c:
            r = await c.post(f"{url}/hooks/tp", content=body, headers=SIGNERS["trustpilot"](body, SECRET, 0))
    assert r.status_code == 202 and r.json() == {"accepted": 2, "invalid": 1, "duplicates": 0, "skipped": 1}
    bad = [orjson.loads(v) for _, v in sink.items if b"_error" in v]
    assert len(bad) == 1 and "rating" in bad[0]["_error"] and bad[0]["eventData"]["stars"] == 9


def unmappable(kind: str) -> tuple[dict[str, str], bytes, str, str]:
    """A signed-to-be delivery of ``kind`` holding one item its mapping cannot make a record of (a
    required field missing, or of the wrong type): (extra headers, body, what the reason must
    name, a value of the item its dead letter must keep)."""
    extra, body = deliveries(kind)[0]
    d = orjson.loads(body)
    if kind == "stripe":  # an event time that is not epoch seconds
        d["created"] = "yesterday"
        return (
            extra,
            orjson.dumps(d),
            "occurred_at (from 'created'): could not convert string to float: 'yesterday'",
            d["id"],
        )
    if kind == "shopify":  # an order with no time at all
        del d["created_at"], d["updated_at"]
        return extra, orjson.dumps(d), "occurred_at", extra["X-Shopify-Webhook-Id"]
    if kind == "typeform":  # a response without submitted_at
        del d["form_response"]["submitted_at"]
        return extra, orjson.dumps(d), "occurred_at", d["form_response"]["token"]
    if kind == "surveymonkey":  # a score that is not a number
        d["answers"]["nps"] = "ten"
        return extra, orjson.dumps(d), "score (from 'answers.nps || answers.score')", d["event_id"]
    if kind == "trustpilot":  # one review without createdAt
        event = d["events"][0]
        del event["eventData"]["createdAt"]
        return extra, orjson.dumps({"events": [event]}), "occurred_at", event["eventData"]["id"]
    assert kind == "webhook"  # a record in the raw contract whose rating is a word
    rec = d[0]
    rec["rating"] = "two"
    return extra, orjson.dumps([rec]), "rating", rec["event_id"]


NOT_JSON = b'{"id": "evt_cut", "type": "charge.succ'  # a delivery cut short: signed, but not JSON


@pytest.mark.parametrize("kind", sorted(SIGNERS))
async def test_a_signed_delivery_that_is_not_json_or_not_mappable_is_dead_lettered_and_the_next_accepted(
    kind: str, aredis: Any, unique: str
) -> None:
    """Per push kind: a correctly signed body that is not JSON, then one whose item cannot be
    mapped, are each answered 202 with ``invalid: 1`` (never a 5xx) and reach the sink to be
    dead-lettered: the first byte for byte (the worker's dead letter names the JSON error), the
    second as its row plus ``_error`` with the reason. The source keeps running: the platform's
    good deliveries that follow are accepted."""
    sign = SIGNERS[kind]
    src = push_source(kind, f"{kind}-bad")
    sink = ListSink()
    extra, _ = deliveries(kind)[0]
    bad_extra, bad_body, names, keeps = unmappable(kind)
    async with serving([src], sink, aredis, unique) as url, httpx.AsyncClient(timeout=30) as c:
        hook = f"{url}/hooks/{kind}-bad"
        now = int(time.time())
        cut = await c.post(hook, content=NOT_JSON, headers={**extra, **sign(NOT_JSON, SECRET, now)})
        assert cut.status_code == 202, cut.text
        assert cut.json() == {"accepted": 0, "invalid": 1, "duplicates": 0, "skipped": 0}
        bad = await c.post(hook, content=bad_body, headers={**bad_extra, **sign(bad_body, SECRET, now)})
        assert bad.status_code == 202, bad.text
        assert bad.json() == {"accepted": 0, "invalid": 1, "duplicates": 0, "skipped": 0}
        outs = []
        for more, body in deliveries(kind):
            r = await c.post(hook, content=body, headers={**more, **sign(body, SECRET, now)})
            assert r.status_code in (200, 202), r.text  # 200: only event types the kind skips
            outs.append(r.json())
        health = (await c.get(f"{url}/healthz")).json()["push"][f"{kind}-bad"]
    assert sum(o["accepted"] for o in outs) == len(EXPECTED[kind])
    assert health["accepted"] == len(EXPECTED[kind])
    assert health["invalid"] == 2 + MALFORMED.get(kind, 0) and health["rejected"] == 0
    values = [v for _, v in sink.items]
    # the body that is not JSON, as it came: the worker cannot parse it and says so in its dead letter
    assert values[0] == NOT_JSON
    with pytest.raises(ValueError) as raised:
        parse_raw(values[0])
    assert "Invalid JSON" in validation_reason(raised.value)
    # the item that cannot be mapped: its row, plus the reason
    dead = orjson.loads(values[1])
    assert names in dead["_error"], dead["_error"]
    assert keeps in values[1].decode()
    good = ids_of(values[2:])
    assert sorted(i for i in good if i != "<malformed>") == sorted(e["event_id"] for e in EXPECTED[kind])
    assert len(values) == 2 + len(EXPECTED[kind]) + MALFORMED.get(kind, 0)


class FailsOnce(ListSink):
    """A broker that does not acknowledge the first flush."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1
        if self.flushes == 1:
            self.items.clear()
            raise DeliveryError(1, 1, "127.0.0.1:9", "no answer")


async def test_a_delivery_kafka_did_not_acknowledge_is_503_and_its_retry_is_accepted(aredis: Any, unique: str) -> None:
    sink = FailsOnce()
    body = orjson.dumps(fixture("stripe_events.json")["events"][0])
    async with serving([push_source("stripe", "st")], sink, aredis, unique) as url, httpx.AsyncClient() as c:
        h = SIGNERS["stripe"](body, SECRET, int(time.time()))
        first = await c.post(f"{url}/hooks/st", content=body, headers=h)
        assert first.status_code == 503 and first.headers["Retry-After"]
        retry = await c.post(f"{url}/hooks/st", content=body, headers=h)
    assert retry.status_code == 202 and retry.json()["accepted"] == 1
    assert ids_of([v for _, v in sink.items]) == ["stripe:evt_3QaB1cDeFgHiJkLm0aBcDeFg"]


async def test_a_new_payload_shape_needs_a_mapping_file_not_code(aredis: Any, unique: str, tmp_path: Path) -> None:
    mapping = tmp_path / "judge.toml"
    mapping.write_text(
        """
kind = "review"
source = "judgeme"
when = "event == 'review/created'"
[columns]
native_id = "review.id"
occurred_at = "review.created_at"
rating = "review.rating"
text = "join(' ', [review.title, review.body][?@])"
author = "review.reviewer.name"
product = "review.product.handle"
"""
    )
    sink = ListSink()
    payload = {
        "event": "review/created",
        "review": {
            "id": 991,
            "rating": 2,
            "title": "Strap broke",
            "body": "after a week",
            "created_at": "2026-12-03T04:00:00Z",
            "reviewer": {"name": "Kim"},
            "product": {"handle": "go-backpack"},
        },
    }
    other = {"event": "review/deleted", "review": {"id": 990}}
    async with serving([push_source("webhook", "judge", mapping=str(mapping))], sink, aredis, unique) as url:
        body = orjson.dumps([payload, other])
        async with httpx.AsyncClient() as c:
            r = await c.post(
                f"{url}/hooks/judge", content=body, headers=SIGNERS["webhook"](body, SECRET, int(time.time()))
            )
    assert r.status_code == 202 and r.json()["skipped"] == 1
    (rec,) = [orjson.loads(v) for _, v in sink.items]
    assert {k: rec[k] for k in ("event_id", "rating", "text", "author", "product")} == {
        "event_id": "judgeme:991",
        "rating": 2,
        "text": "Strap broke after a week",
        "author": "Kim",
        "product": "go-backpack",
    }


async def test_a_push_source_without_its_secret_stops_and_answers_503_at_once(aredis: Any, unique: str) -> None:
    src = get("stripe")(spec("stripe", name="st-unset", credentials={"secret": "UNSET_STRIPE_SECRET"}), env={})
    assert isinstance(src, PushSource)
    sink = ListSink()
    async with serving([src], sink, aredis, unique) as url, httpx.AsyncClient(timeout=5) as c:
        r = await c.post(f"{url}/hooks/st-unset", content=b"{}", headers={"Stripe-Signature": "t=1,v1=" + "0" * 64})
    assert r.status_code == 503
    assert r.json()["error"] == (
        "source st-unset is stopped: environment variable UNSET_STRIPE_SECRET (credentials.secret) "
        "is empty or not set: export it"
    )
    assert sink.items == []


async def test_shopify_one_event_delivered_to_two_subscriptions_is_accepted_once(
    aredis: Any, unique: str, kafka_bootstrap: str
) -> None:
    """Two subscriptions to a topic get one webhook each for an event, with their own
    ``X-Shopify-Webhook-Id`` and the same ``X-Shopify-Event-Id``
    (https://shopify.dev/docs/apps/build/webhooks/ignore-duplicates): the second is a duplicate.
    Another topic the same event triggers is its own record."""
    topic = f"push-shopify-event-{unique}"
    ensure_topics(kafka_bootstrap, [topic], 1)
    sink = KafkaSink(kafka_bootstrap, topic)
    headers, body = deliveries("shopify")[0]
    event = "5f0e2c3a-7d41-4e8b-9a65-2b1f0c9d8e74"
    try:
        async with (
            serving([push_source("shopify", "shop-in")], sink, aredis, unique) as url,
            httpx.AsyncClient(timeout=30) as c,
        ):

            async def post(extra: dict[str, str]) -> httpx.Response:
                h = {**headers, "X-Shopify-Event-Id": event, **extra, **SIGNERS["shopify"](body, SECRET, 0)}
                return await c.post(f"{url}/hooks/shop-in", content=body, headers=h)

            first = await post({})
            second = await post({"X-Shopify-Webhook-Id": "c0a4d7e2-1b9f-4f6a-8e3d-5a7b9c1d2e3f"})
            paid = await post(
                {"X-Shopify-Webhook-Id": "d1b5e8f3-2c0a-4a7b-9f4e-6b8c0d2e3f40", "X-Shopify-Topic": "orders/paid"}
            )
    finally:
        sink.close()
    assert first.status_code == 202 and first.json()["accepted"] == 1, first.text
    assert second.status_code == 200 and second.json()["duplicate"] is True, second.text
    assert paid.status_code == 202 and paid.json()["accepted"] == 1, paid.text
    got = [orjson.loads(v) for v in read_topic(kafka_bootstrap, topic)]
    assert sorted((g["event_id"], g["status"]) for g in got) == [
        (f"shopify:orders/create:{event}", "placed"),
        (f"shopify:orders/paid:{event}", "paid"),
    ]
