"""``repmon webhook`` under faults, on a real Kafka broker (and Redis for the shared replay cache).

Each test targets a fault found with the previous webhook: 202 for records the broker never
acknowledged, a signed body published again on every replay, a 400,000-item array turned into
400,000 dead letters, 500 on a non-ASCII signature, pre-signed future timestamps, no read timeout.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import orjson
import pytest
from aiohttp import web
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from connectors.base import KafkaSink, Sink
from connectors.seen import MemorySeen, RedisSeen
from connectors.webhook import HEADER, WebhookApp, sign
from infra.kafka import end_offsets, ensure_topics

from ..conftest import free_port

pytestmark = pytest.mark.integration

SECRET = b"test-webhook-secret"


def review(i: int, text: str = "Package arrived broken.") -> dict[str, object]:
    return {
        "kind": "review",
        "event_id": f"shop:r-{i}",
        "source": "shop",
        "occurred_at": "2026-11-20T10:00:00+00:00",
        "brand": "Northwind",
        "rating": 1,
        "text": text,
    }


def signed(body: bytes, **kw: int) -> dict[str, str]:
    return {HEADER: sign(body, SECRET, **kw)}


@asynccontextmanager
async def serving(app: WebhookApp) -> AsyncIterator[str]:
    runner = web.AppRunner(app.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1/events"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def webhook(sink: Sink, **kw: object) -> AsyncIterator[tuple[str, WebhookApp]]:
    app = WebhookApp(sink, [SECRET], **kw)  # type: ignore[arg-type]
    try:
        async with serving(app) as url:
            yield url, app
    finally:
        sink.close(timeout=5)  # type: ignore[call-arg]


@pytest.fixture
def topic(kafka_bootstrap: str, unique: str) -> str:
    name = f"whf{unique}.raw"
    ensure_topics(kafka_bootstrap, [name], 1)
    return name


def refusing_topic(bootstrap: str, name: str) -> str:
    """A topic on the live broker that refuses every record over 200 bytes (broker answers, no ack)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, 1, 1, topic_configs={"max.message.bytes": "200"})])
    finally:
        admin.close()
    return name


async def test_202_only_after_the_broker_acknowledged_every_record(kafka_bootstrap: str, topic: str) -> None:
    body = orjson.dumps([review(1), review(2)])
    async with webhook(KafkaSink(kafka_bootstrap, topic)) as (url, _), httpx.AsyncClient() as client:
        r = await client.post(url, content=body, headers=signed(body))
        assert r.status_code == 202 and r.json() == {"accepted": 2, "invalid": 0}
        assert end_offsets(kafka_bootstrap, topic) == 2  # already there when 202 was sent


async def test_records_the_broker_refuses_get_503_and_nothing_is_claimed(kafka_bootstrap: str, unique: str) -> None:
    bad = refusing_topic(kafka_bootstrap, f"whf{unique}.small")
    body = orjson.dumps([review(1, "x" * 400)])
    seen = MemorySeen()
    async with webhook(KafkaSink(kafka_bootstrap, bad), seen=seen) as (url, app), httpx.AsyncClient() as client:
        r = await client.post(url, content=body, headers=(h := signed(body)))
        assert r.status_code == 503, r.text  # was 202: send futures were never checked
        assert r.headers["Retry-After"] and f"not acknowledged by Kafka at {kafka_bootstrap}" in r.json()["error"]
        assert app.stats["accepted"] == 0 and app.stats["failed"] == 1
    # the sender retries the very same signed request once the broker takes it: accepted, not a "duplicate"
    good = f"whf{unique}.raw"
    ensure_topics(kafka_bootstrap, [good], 1)
    async with webhook(KafkaSink(kafka_bootstrap, good), seen=seen) as (url, _), httpx.AsyncClient() as client:
        r = await client.post(url, content=body, headers=h)
        assert r.status_code == 202, r.text
    assert end_offsets(kafka_bootstrap, good) == 1


async def test_an_unreachable_broker_gives_503_with_retry_after_not_202_or_500(topic: str) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens: the broker is down
    sink = KafkaSink(address, topic, api_version=(2, 8), max_block_ms=500, request_timeout_ms=500)
    body = orjson.dumps([review(1), review(2), review(3)])
    async with webhook(sink, ack_timeout=5) as (url, app), httpx.AsyncClient(timeout=30) as client:
        t0 = time.monotonic()
        r = await client.post(url, content=body, headers=signed(body))
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "30" and address in r.json()["error"]
        assert time.monotonic() - t0 < 5  # one metadata wait, not one per record
        assert app.stats["accepted"] == 0
        health = await client.get(url.replace("/v1/events", "/healthz"))
        assert health.json()["failed"] == 1


async def test_a_replayed_signed_body_is_produced_once(kafka_bootstrap: str, topic: str) -> None:
    body = orjson.dumps([review(1), review(2)])
    headers = signed(body)
    async with webhook(KafkaSink(kafka_bootstrap, topic)) as (url, app), httpx.AsyncClient() as client:
        first = await client.post(url, content=body, headers=headers)
        again = await client.post(url, content=body, headers=headers)
        assert first.status_code == 202 and again.status_code == 200 and again.json()["duplicate"] is True
        assert app.stats["duplicate"] == 1
    assert end_offsets(kafka_bootstrap, topic) == 2  # was 4: published again on every replay


async def test_the_redis_replay_cache_is_shared_by_every_webhook_process(
    kafka_bootstrap: str, topic: str, redis_url: str, unique: str
) -> None:
    import redis.asyncio

    body = orjson.dumps([review(7)])
    headers = signed(body)
    clients = [redis.asyncio.Redis.from_url(redis_url) for _ in range(2)]
    try:
        codes = []
        for rc in clients:  # two processes behind one load balancer, each with its own producer
            seen = RedisSeen(rc, prefix=f"test:{unique}:", address=redis_url)
            hook = webhook(KafkaSink(kafka_bootstrap, topic), seen=seen)
            async with hook as (url, _), httpx.AsyncClient() as client:
                codes.append((await client.post(url, content=body, headers=headers)).status_code)
        assert codes == [202, 200]
        ttl = await clients[0].pttl(f"test:{unique}:" + headers[HEADER].split("v1=")[1])
        assert 300_000 < ttl <= 331_000  # kept for the whole validity window (tolerance + skew)
    finally:
        for rc in clients:
            await rc.aclose()
    assert end_offsets(kafka_bootstrap, topic) == 1


async def test_size_and_item_limits_answer_413_and_produce_nothing(kafka_bootstrap: str, topic: str) -> None:
    items = orjson.dumps(list(range(400_000)))  # 2.3 MB here; the field case was 781 KB of [0,0,...]
    small = b"[" + b",".join([b"0"] * 400_000) + b"]"
    assert len(small) < 1 << 20
    async with webhook(KafkaSink(kafka_bootstrap, topic), max_items=1000) as (url, app):
        async with httpx.AsyncClient() as client:
            r = await client.post(url, content=small, headers=signed(small))
            assert r.status_code == 413 and "1000" in r.json()["error"] and "max_items" in r.json()["error"]
            r = await client.post(url, content=items, headers=signed(items))  # Content-Length over max_body
            assert r.status_code == 413 and "max_body" in r.json()["error"]

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: enforced while reading
                for _ in range(40):
                    yield b" " * 65536

            r = await client.post(url, content=chunks(), headers=signed(b"whatever"))
            assert r.status_code == 413
        assert app.stats["accepted"] == app.stats["invalid"] == 0
    assert end_offsets(kafka_bootstrap, topic) == 0  # was 400,000 dead letters


async def test_bad_headers_are_401_before_the_body_is_read(kafka_bootstrap: str, topic: str) -> None:
    body = orjson.dumps([review(1)])
    mac = sign(body, SECRET).split("v1=")[1]
    now = int(time.time())
    async with webhook(KafkaSink(kafka_bootstrap, topic)) as (url, app), httpx.AsyncClient() as client:
        for header in [
            f"t={now},v1={mac[:-1]}é".encode(),  # non-ASCII: was a 500
            f"t={now},v1=é".encode(),
            b"t=abc,v1=00",
            sign(body, SECRET, timestamp=now + 200).encode(),  # pre-signed 200 s ahead: was accepted
        ]:
            r = await client.post(url, content=body, headers={HEADER: header})  # type: ignore[dict-item]
            assert r.status_code == 401, (header, r.status_code, r.text)
            assert r.json()["error"]
        assert app.stats["rejected"] == 4
    assert end_offsets(kafka_bootstrap, topic) == 0


async def test_a_stalled_body_times_out_with_408(kafka_bootstrap: str, topic: str) -> None:
    body = orjson.dumps([review(1)])
    async with webhook(KafkaSink(kafka_bootstrap, topic), read_timeout=0.5) as (url, _):
        port = int(url.split(":")[2].split("/")[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            f"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{HEADER}: {sign(body, SECRET)}\r\n\r\n"
        )
        writer.write(head.encode() + body[:5])  # then nothing more: a slow or dead sender
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout=10)  # used to wait forever
        writer.close()
        assert status.split()[1] == b"408"
    assert end_offsets(kafka_bootstrap, topic) == 0


# -- the `repmon webhook` command --------------------------------------------------------------


def _cli_env(**env: str) -> dict[str, str]:
    import os

    from ..conftest import ROOT

    return {**os.environ, "PYTHONPATH": str(ROOT), "REPMON_WEBHOOK_SECRET": SECRET.decode(), **env}


def test_the_command_names_an_unreachable_broker_or_redis_and_exits_1(kafka_bootstrap: str, unique: str) -> None:
    import subprocess

    from ..conftest import ROOT

    cmd = [sys.executable, "-m", "cli.main", "webhook", "--port", str(free_port())]
    for env, needle in [
        ({"REPMON_KAFKA__BOOTSTRAP": (kafka := f"127.0.0.1:{free_port()}")}, f"Kafka at {kafka} is not reachable"),
        (
            {
                "REPMON_KAFKA__BOOTSTRAP": kafka_bootstrap,
                "REPMON_KAFKA__TOPIC_PREFIX": f"whc{unique}",
                "REPMON_REDIS__URL": (redis := f"redis://127.0.0.1:{free_port()}/0"),
            },
            f"Redis at {redis} is not reachable",
        ),
    ]:
        r = subprocess.run(cmd, env=_cli_env(**env), cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr


async def test_the_command_accepts_a_signed_body_once_with_the_redis_cache(
    kafka_bootstrap: str, redis_url: str, unique: str
) -> None:
    from ..conftest import ROOT

    port = free_port()
    prefix = f"whc{unique}"
    env = {"REPMON_KAFKA__BOOTSTRAP": kafka_bootstrap, "REPMON_KAFKA__TOPIC_PREFIX": prefix}
    env["REPMON_REDIS__URL"] = redis_url
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *["-m", "cli.main", "webhook", "--port", str(port)],
        env=_cli_env(**env),
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient() as client:
            deadline = time.monotonic() + 120
            while True:  # wait until it serves (topics created, Redis checked)
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    assert proc.returncode is None, "repmon webhook exited"
                    assert time.monotonic() < deadline, "repmon webhook did not start in 120 s"
                    await asyncio.sleep(0.2)
            body = orjson.dumps([review(1), review(2)])
            headers = signed(body)
            url = f"http://127.0.0.1:{port}/v1/events"
            codes = [(await client.post(url, content=body, headers=headers)).status_code for _ in range(2)]
        assert codes == [202, 200]
        assert end_offsets(kafka_bootstrap, f"{prefix}.raw") == 2
    finally:
        proc.terminate()
        await proc.wait()
