"""Signed HTTP pushes -> the raw topic of a real Kafka broker (``repmon webhook``'s app)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from aiohttp import web
from kafka import KafkaConsumer

from connectors.base import KafkaSink
from connectors.replay import load_mapping
from connectors.webhook import HEADER, WebhookApp, sign
from infra.kafka import ensure_topics

pytestmark = pytest.mark.integration

SECRET = b"test-webhook-secret"
ROOT = Path(__file__).resolve().parents[2]


def read_all(bootstrap: str, topic: str, expect: int) -> list[bytes]:
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=3000)
    try:
        out = [m.value for m in c]
    finally:
        c.close()
    assert len(out) >= expect or not expect
    return out


@pytest.fixture
async def hook(kafka_bootstrap: str, unique: str) -> AsyncIterator[tuple[str, str, WebhookApp]]:
    topic = f"wh{unique}.raw"
    ensure_topics(kafka_bootstrap, [topic], 1)
    sink = KafkaSink(kafka_bootstrap, topic)
    app = WebhookApp(sink, [b"old-secret", SECRET], tolerance=300)
    runner = web.AppRunner(app.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", topic, app
    finally:
        await runner.cleanup()
        sink.close()


async def test_signed_pushes_reach_the_raw_topic_and_bad_ones_are_kept_for_the_dead_letters(
    hook: tuple[str, str, WebhookApp], kafka_bootstrap: str
) -> None:
    url, topic, app = hook
    good = {
        "kind": "review",
        "event_id": "shop:r-1",
        "source": "shop",
        "occurred_at": "2026-11-20T10:00:00+00:00",
        "brand": "Northwind",
        "rating": 1,
        "text": "Package arrived broken and support never answered.",
    }
    bad = {"kind": "review", "event_id": "shop:r-2", "rating": 9}  # no time, rating out of range
    body = orjson.dumps([good, bad])
    async with httpx.AsyncClient() as client:
        ok = await client.post(f"{url}/v1/events", content=body, headers={HEADER: sign(body, SECRET)})
        assert ok.status_code == 202 and ok.json() == {"accepted": 1, "invalid": 1}
        # not signed, signed with another key, or tampered: 401 and nothing produced
        for headers, payload in [
            ({}, body),
            ({HEADER: sign(body, b"guess")}, body),
            ({HEADER: sign(body, SECRET)}, body.replace(b"broken", b"great!")),
        ]:
            r = await client.post(f"{url}/v1/events", content=payload, headers=headers)
            assert r.status_code == 401 and r.json()["error"]
        junk = b"this is not json"
        r = await client.post(f"{url}/v1/events", content=junk, headers={HEADER: sign(junk, SECRET)})
        assert r.status_code == 400 and r.json()["invalid"] == 1
    values = read_all(kafka_bootstrap, topic, 3)
    assert len(values) == 3
    assert orjson.loads(values[0])["event_id"] == "shop:r-1"
    assert orjson.loads(values[1])["_error"]  # the invalid record, with the reason, for the worker's DLQ
    assert values[2] == junk
    assert app.stats == {"accepted": 1, "invalid": 2, "rejected": 3, "duplicate": 0, "failed": 0}


async def test_a_mapping_turns_any_shape_into_records(kafka_bootstrap: str, unique: str) -> None:
    topic = f"wh{unique}.raw"
    ensure_topics(kafka_bootstrap, [topic], 1)
    sink = KafkaSink(kafka_bootstrap, topic)
    mapping = load_mapping(ROOT / "infra/config/replay/airline_tweets.toml")
    app = WebhookApp(sink, [SECRET], mapping=mapping)
    runner = web.AppRunner(app.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    row = {
        "tweet_id": "570306133677760513",
        "airline": "Virgin America",
        "text": "@VirginAmerica what a flight",
        "tweet_created": "2015-02-24 11:35:52 -0800",
        "name": "cairdin",
        "retweet_count": "0",
    }
    body = b"\n".join(orjson.dumps(x) for x in [row, {**row, "tweet_id": "570306133677760514"}])  # NDJSON
    try:
        async with httpx.AsyncClient() as client:
            r = await client.post(f"{url}/v1/events", content=body, headers={HEADER: sign(body, SECRET)})
        assert r.status_code == 202 and r.json() == {"accepted": 2, "invalid": 0}, r.text
    finally:
        await runner.cleanup()
        sink.close()
    recs = [orjson.loads(v) for v in read_all(kafka_bootstrap, topic, 2)]
    assert [x["event_id"] for x in recs] == ["twitter:570306133677760513", "twitter:570306133677760514"]
    assert all(x["kind"] == "mention" and x["occurred_at"].startswith("2015-02-24T19:35:52") for x in recs)
