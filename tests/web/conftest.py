"""The war room on the real Kafka and Redis of `make test`: a uvicorn server in a thread, a topic
prefix and a Redis key prefix of its own per test, helpers to publish incidents and events."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer

from contract.records import TOPICS, EnrichedEvent, Incident, Sentiment, Signal, TopMention, dumps
from infra.kafka import ensure_topics
from infra.settings import Settings, load_settings
from web.auth import Tokens
from web.serve import WebThread

READ_TOKEN = "read-token-0123456789abcdef"
WRITE_TOKEN = "write-token-0123456789abcdef"
ONSET = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


def wait_for(cond: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``cond`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def make_incident(
    entity: str = "northwind",
    *,
    seq: int = 1,
    status: str = "open",
    severity: str = "critical",
    iid: str | None = None,
    signal: str = "negative_share",
    onset: datetime = ONSET,
) -> Incident:
    t = onset + timedelta(minutes=seq - 1)
    sig = Signal(
        signal_id=f"s-{entity}-{seq}",
        entity=entity,
        signal=signal,  # type: ignore[arg-type]
        bucket_start=t,
        bucket_seconds=60,
        value=0.62,
        baseline=0.14,
        scale=0.05,
        z=9.6,
        support=80,
        severity=severity,  # type: ignore[arg-type]
        detector="EntityDetector",
    )
    return Incident(
        incident_id=iid or f"inc-{entity.replace('/', '-')}-{onset:%H%M}",
        entity=entity,
        status=status,  # type: ignore[arg-type]
        seq=seq,
        severity=severity,  # type: ignore[arg-type]
        opened_at=onset,
        updated_at=t + timedelta(minutes=1),
        resolved_at=t + timedelta(minutes=1) if status == "resolved" else None,
        title=f"{entity} - negative share" if status != "resolved" else f"{entity} is back to normal",
        summary="negative share 62% vs baseline 14% (z=9.6, n=80)",
        signals=[] if status == "resolved" else [sig],
        top_mentions=[
            TopMention(
                event_id="demo:1",
                text="the app ate my order again",
                sentiment=-0.8,
                impact=2.0,
                url="https://example.invalid/1",
            )
        ],
        top_aspects=[("delivery", 12)],
        top_terms=[("refund", 9)],
        evidence={"detectors": ["EntityDetector"], "model_version": "lexicon-v1", "team": None},
    )


def make_event(
    n: int, entity: str, label: str, at: datetime, *, lang: str = "en", source: str = "twitter"
) -> EnrichedEvent:
    score = {"negative": -0.7, "neutral": 0.0, "positive": 0.7}[label]
    return EnrichedEvent(
        event_id=f"{source}:{entity}-{n}",
        kind="mention",
        source=source,
        occurred_at=at,
        ingested_at=at,
        entity=entity,
        sentiment=Sentiment(score=score, label=label, confidence=0.9, model_version="test"),  # type: ignore[arg-type]
        lang=lang,
        text_redacted=f"{label} words about {entity} number {n}",
    )


@dataclass
class WarRoom:
    settings: Settings
    url: str
    producer: KafkaProducer
    topics: dict[str, str]
    redis_url: str
    prefix: str
    _consumers: list[KafkaConsumer] = field(default_factory=list)

    def client(self, token: str | None = WRITE_TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def publish(self, topic: str, record: Any, key: str) -> None:
        self.producer.send(self.topics[topic], dumps(record), key=key.encode()).get(timeout=10)

    def topic_records(self, topic: str) -> list[dict[str, Any]]:
        """Everything on a topic so far (a fresh consumer from the beginning)."""
        c = KafkaConsumer(
            self.topics[topic],
            bootstrap_servers=self.settings.kafka.bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            consumer_timeout_ms=1500,
        )
        try:
            return [orjson.loads(m.value) for m in c]
        finally:
            c.close()


@pytest.fixture
def war_room(kafka_bootstrap: str, redis_url: str, unique: str) -> Iterator[WarRoom]:
    prefix = f"web{unique}"
    settings = load_settings(
        None,
        kafka={"bootstrap": kafka_bootstrap, "topic_prefix": prefix, "partitions": 2},
        redis={"url": redis_url, "key_prefix": prefix},
        # a test pace: no cooldown between updates, fast outbox polls
        # the route names the tests' dispatchers use: a silence must name a configured route (the
        # web view records silences, it sends nothing, so these URLs are never called)
        alerts={
            "cooldown_seconds": 0,
            "outbox_poll_seconds": 0.2,
            "console": False,
            "routes": [{"name": n, "urls": [f"json://127.0.0.1:9/{n}"]} for n in ("hook", "chat", "pager")],
        },
    )
    topics = {t: settings.topic(t) for t in TOPICS}
    ensure_topics(kafka_bootstrap, topics.values(), 2)
    tokens = Tokens({READ_TOKEN: "reader"}, {WRITE_TOKEN: "alice"})
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        with WebThread(settings, redis_url=redis_url, bootstrap=kafka_bootstrap, tokens=tokens, port=0) as web:
            yield WarRoom(settings, web.url, producer, topics, redis_url, prefix)
    finally:
        producer.close(timeout=5)
