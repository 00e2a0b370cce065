"""The fleet's model in Redis: fenced, numbered snapshots, and a learner that survives bad ones."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
import redis.asyncio as aredis
from kafka import KafkaProducer

from contract.records import TOPICS
from infra.kafka import ensure_topics
from infra.settings import Settings, load_settings
from models.sentiment import SentimentModel
from streams.enrich import EnrichStage
from streams.learning import FleetLearner, ModelSnapshots
from streams.metrics import Metrics

from ..conftest import free_port

pytestmark = pytest.mark.integration


async def test_only_the_lease_holder_publishes_and_old_versions_are_trimmed(aredis: aredis.Redis) -> None:
    snaps = ModelSnapshots(aredis, f"ls{uuid.uuid4().hex[:8]}", keep=3)
    assert await snaps.acquire("a", 5) and not await snaps.acquire("b", 5)
    assert await snaps.publish("b", b"{}") is None  # fenced: b does not hold the lease
    versions = [await snaps.publish("a", orjson.dumps({"n": i})) for i in range(4)]
    assert versions == [1, 2, 3, 4] and await snaps.latest() == 4
    assert await snaps.get(1) is None and await snaps.get(2) == b'{"n":1}'
    await snaps.release("b")  # not b's to release
    assert not await snaps.acquire("b", 5)
    await snaps.release("a")
    assert await snaps.acquire("b", 5)
    assert await snaps.publish("a", b"{}") is None


def fleet(kafka_bootstrap: str, redis_url: str, partitions: int, **sentiment: object) -> tuple[Settings, EnrichStage]:
    """Settings of a fleet of its own (topics, keys) and a worker's stage that scores, never learns."""
    prefix = f"lf{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        None,
        app_id=prefix,
        kafka={"bootstrap": kafka_bootstrap, "topic_prefix": prefix, "partitions": partitions},
        redis={"url": redis_url, "key_prefix": prefix},
        sentiment={"snapshot_interval_seconds": 0.01, **sentiment},
    )
    ensure_topics(kafka_bootstrap, [settings.topic(t) for t in TOPICS], partitions)
    stage = EnrichStage(settings)
    stage.learn_inline = False
    stage.load_models()
    return settings, stage


def learner(settings, stage, redis_url: str) -> FleetLearner:  # type: ignore[no-untyped-def]
    r = aredis.Redis.from_url(redis_url)
    snaps = ModelSnapshots(r, settings.redis.key_prefix, keep=3)
    return FleetLearner(settings, stage, ThreadPoolExecutor(1), snaps, Metrics())


async def test_a_bad_snapshot_is_skipped_and_an_outage_is_survived(kafka_bootstrap: str, redis_url: str) -> None:
    settings, stage = fleet(kafka_bootstrap, redis_url, 2)
    prod = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for i in range(10):
        prod.send(settings.topic("labels"), orjson.dumps({"text": f"the blorft was late {i}", "label": "negative"}))
    prod.flush()
    prod.close()

    a = learner(settings, stage, redis_url)
    learned = 0
    while learned < 10:
        learned += await a.step()
    while a.unsaved or await a.snaps.latest() is None:  # every label in a published snapshot
        await a.step()
    v = await a.snaps.latest()
    assert v is not None and await a.refresh() == v
    assert stage.sentiment is not None and stage.sentiment.version.endswith(f":v{v}")
    await a.stop()  # hands the lease over

    # someone wrote garbage as the newest snapshot: workers keep scoring with v, the next learner
    # resumes from v (and its offsets: nothing is learned twice)
    await a.snaps.r.set(a.snaps.k_latest, v + 1)
    await a.snaps.r.set(f"{a.snaps.k_snap}{v + 1}", b"\x80\x04not json")
    assert await a.refresh() == v
    assert a.metrics.dependency_errors.labels("snapshot")._value.get() == 1
    b = learner(settings, stage, redis_url)
    await b.step()
    assert b.is_owner and b.model is not None and b.model.n_learned == 10
    assert sum(b.offsets.values()) == 10
    await b.stop()

    # Redis gone: a step and a refresh are skipped and counted, never raised into the timer
    c = learner(settings, stage, f"redis://127.0.0.1:{free_port()}/0")
    assert await c.step() == 0 and await c.refresh() is None
    assert c.metrics.dependency_errors.labels("redis")._value.get() == 2
    assert isinstance(stage.sentiment, SentimentModel) and stage.sentiment.version.endswith(f":v{v}")


async def test_a_frozen_fleet_takes_no_lease_and_learns_nothing(kafka_bootstrap: str, redis_url: str) -> None:
    settings, stage = fleet(kafka_bootstrap, redis_url, 1, frozen=True)
    prod = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    prod.send(settings.topic("labels"), orjson.dumps({"text": "the blorft was late", "label": "negative"})).get(10)
    prod.close()
    frozen = learner(settings, stage, redis_url)
    for _ in range(3):
        assert await frozen.step() == 0
    assert not frozen.is_owner and await frozen.snaps.latest() is None
    # the same fleet unfrozen: the lease is free and the label is there to be learned
    live = learner(
        settings.model_copy(update={"sentiment": settings.sentiment.model_copy(update={"frozen": False})}),
        stage,
        redis_url,
    )
    learned = 0
    for _ in range(50):
        learned += await live.step()
        if learned:
            break
    assert learned == 1 and live.is_owner
    await live.stop()
