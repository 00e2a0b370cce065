"""Trust windows, in Redis and in memory alike: event-time buckets, idempotent under redelivery,
watermark per partition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contract.records import AspectHit, EnrichedEvent, EntityMatch, Sentiment
from infra.settings import load_settings
from streams.windows import MemoryWindows, RedisWindows, Windows, bucket_of, contributions

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def ev(i: int, entity: str, minute: float, label: str = "negative", impact: float = 1.0) -> EnrichedEvent:
    score = {"negative": -0.7, "neutral": 0.0, "positive": 0.6}[label]
    return EnrichedEvent(
        event_id=f"t:{i}",
        kind="mention",
        source="t",
        occurred_at=T0 + timedelta(minutes=minute),
        ingested_at=T0,
        entity=entity,
        entities=[EntityMatch(key=entity, kind="brand", text=entity, start=0, end=len(entity))],
        aspects=[AspectHit(aspect="delivery", term="delivery", start=0, end=8, sentiment=score)],
        sentiment=Sentiment(score=score, label=label, confidence=0.9, model_version="t"),
        text_redacted=f"the delivery was late again {i}",
        impact=impact,
    )


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.integration), "memory"])
async def store(request, unique):  # type: ignore[no-untyped-def]
    s = load_settings(None, redis={"key_prefix": f"t{unique}"})
    if request.param == "memory":
        yield MemoryWindows(s)
        return
    import redis.asyncio

    aredis = redis.asyncio.Redis.from_url(request.getfixturevalue("redis_url"))
    yield RedisWindows(aredis, s)
    keys = [k async for k in aredis.scan_iter(f"t{unique}:*")]
    if keys:
        await aredis.delete(*keys)
    await aredis.aclose()


async def test_counts_equal_and_redelivery_not_counted_twice(store: Windows) -> None:
    events = [ev(i, "northwind", i * 0.25, "negative" if i % 3 == 0 else "positive") for i in range(40)]
    items = [(e, i % 2) for i, e in enumerate(events)]
    first = await store.add_batch(items)
    assert first.counted == 40 and first.duplicates == 0
    again = await store.add_batch(items[:25])  # a redelivered batch
    assert again.counted == 0 and again.duplicates == 25
    B = store.B
    t0 = bucket_of(T0.timestamp(), B)
    total = await store.window_stats("northwind", t0, t0 + 11 * B)
    assert total["events"] == 40 and total["n"] == 40
    assert total["neg"] == sum(1 for e in events if e.sentiment and e.sentiment.label == "negative")
    assert total["asp:delivery:n"] == 40 and total["asp:delivery:neg"] == total["neg"]
    per_bucket = await store.bucket_stats(["northwind"], t0)
    assert per_bucket["northwind"]["events"] == sum(1 for e in events if e.occurred_at < T0 + timedelta(seconds=B))


async def test_late_event_updates_its_bucket_and_watermark_is_min_of_partitions(store: Windows) -> None:
    await store.add_batch([(ev(1, "northwind", 10), 0), (ev(2, "northwind", 3), 1)])
    assert await store.watermark() == (T0 + timedelta(minutes=3)).timestamp()  # partition 1 lags
    await store.add_batch([(ev(3, "northwind", 12), 1)])
    assert await store.watermark() == (T0 + timedelta(minutes=10)).timestamp()
    late = ev(4, "northwind", 2)
    await store.add_batch([(late, 0)])
    t = bucket_of(late.occurred_at.timestamp(), store.B)
    assert (await store.bucket_stats(["northwind"], t))["northwind"]["events"] == 1
    assert await store.first_event_ts() == late.occurred_at.timestamp()


async def test_top_mentions_and_terms(store: Windows) -> None:
    await store.add_batch([(ev(i, "northwind", 0, impact=1.0 + i), 0) for i in range(15)])
    t = bucket_of(T0.timestamp(), store.B)
    top = await store.top_mentions("northwind", [t], k=3)
    assert [m["id"] for m in top] == ["t:14", "t:13", "t:12"]
    terms = dict(await store.top_terms("northwind", [t]))
    assert terms["delivery"] == 15 and terms["late"] == 15 and "the" not in terms


async def test_trust_score_from_the_windows(store: Windows) -> None:
    base = [ev(i, "northwind", -360 + i * 0.5, "positive" if i % 5 else "negative") for i in range(600)]
    now = [ev(1000 + i, "northwind", i * 0.5, "negative" if i % 2 else "positive") for i in range(40)]
    await store.add_batch([(e, 0) for e in base + now])
    at = (T0 + timedelta(minutes=20)).timestamp()
    t = await store.trust("northwind", 3600, at)
    comps = {c["name"]: c for c in t["components"]}
    assert comps["negative_share"]["value"] == 0.5 and comps["negative_share"]["baseline"] == 0.2
    assert t["score"] is not None and t["baseline_score"] is not None and t["score"] < t["baseline_score"]
    assert abs(sum(c["weight"] for c in t["components"]) - sum(comps[k]["weight"] for k in comps)) < 1e-9


def test_the_model_error_is_judged_by_the_configured_rating_map() -> None:
    review = EnrichedEvent(
        event_id="r:1",
        kind="review",
        source="t",
        occurred_at=T0,
        ingested_at=T0,
        entity="northwind",
        rating=3,
        sentiment=Sentiment(score=0.0, label="neutral", confidence=0.9, model_version="t"),
    )
    assert "model_err" not in contributions(review)  # 3 stars is neutral by default
    strict = {"1": "negative", "2": "negative", "3": "negative", "4": "positive", "5": "positive"}
    assert contributions(review, rating_labels=strict)["model_err"] == 1.0  # a team that reads 3 stars as a complaint


async def test_each_entity_counts_its_own_sentiment_in_a_multi_entity_text(store: Windows) -> None:
    """ "Skyline is better than Northwind": one event, a positive for skyline and a negative for northwind."""
    pos = Sentiment(score=0.8, label="positive", confidence=0.8, model_version="t+comparison")
    neg = Sentiment(score=-0.8, label="negative", confidence=0.8, model_version="t+comparison")
    e = EnrichedEvent(
        event_id="t:cmp",
        kind="mention",
        source="t",
        occurred_at=T0,
        ingested_at=T0,
        entity="skyline",
        entities=[
            EntityMatch(key="skyline", kind="competitor", text="Skyline", start=0, end=7, sentiment=pos),
            EntityMatch(key="northwind", kind="brand", text="Northwind", start=27, end=36, sentiment=neg),
        ],
        sentiment=Sentiment(score=0.9, label="positive", confidence=0.9, model_version="t"),
        text_redacted="Skyline is way better than Northwind, pésimo servicio",
    )
    assert (await store.add_batch([(e, 0)])).counted == 2
    t0 = bucket_of(T0.timestamp(), store.B)
    got = await store.bucket_stats(["skyline", "northwind"], t0)
    assert got["skyline"]["pos"] == 1 and "neg" not in got["skyline"]
    assert got["northwind"]["neg"] == 1 and got["northwind"]["sent_sum"] == pytest.approx(-0.8)
    # a negative mention of Northwind (its top mentions and terms), not of Skyline
    assert [m["id"] for m in await store.top_mentions("northwind", [t0])] == ["t:cmp"]
    assert await store.top_mentions("skyline", [t0]) == [] and await store.top_terms("skyline", [t0]) == []
    assert "pésimo" in dict(await store.top_terms("northwind", [t0]))  # words of any script


async def test_live_claims_last_until_the_event_leaves_the_horizon(store: Windows) -> None:
    """Dedupe memory is bounded by the horizon: an (event, entity) claim expires when its event
    time is ``claim_horizon`` old, and an event already that old is refused, never counted."""
    horizon = 3600.0
    now = datetime.now(UTC)
    fresh = ev(1, "northwind", 0).model_copy(update={"occurred_at": now - timedelta(minutes=10)})
    stale = ev(2, "northwind", 0).model_copy(update={"occurred_at": now - timedelta(seconds=horizon + 5)})
    res = await store.add_batch([(fresh, 0), (stale, 1)], claim_horizon=horizon)
    assert (res.counted, res.duplicates, res.expired) == (1, 0, ["t:2"])
    again = await store.add_batch([(fresh, 0)], claim_horizon=horizon)
    assert (again.counted, again.duplicates) == (0, 1)
    assert await store.watermark() == fresh.occurred_at.timestamp()  # the refused event moved nothing
    if isinstance(store, RedisWindows):
        ttl = await store.r.ttl(f"{store.p}:seen:northwind:t:1")
        assert horizon - 600 - 5 <= ttl <= horizon - 600 + 1  # the event time's horizon, not 7 days
        untimed = await store.add_batch([(ev(3, "northwind", 0), 0)])  # tools and backfill: dedupe_ttl_seconds
        assert untimed.counted == 1
        assert await store.r.ttl(f"{store.p}:seen:northwind:t:3") > store.settings.windows.dedupe_ttl_seconds - 60


async def test_the_entities_with_counts_in_a_bucket_are_known(store: Windows) -> None:
    await store.add_batch([(ev(1, "northwind", 0.5), 0), (ev(2, "acme", 0.7), 1), (ev(3, "acme", 1.5), 0)])
    await store.add_batch([(ev(1, "northwind", 0.5), 0)])  # a redelivery adds no one
    t0 = bucket_of(T0.timestamp(), store.B)
    assert await store.counted_entities(t0) == {"northwind", "acme"}
    assert await store.counted_entities(t0 + store.B) == {"acme"}
    assert await store.counted_entities(t0 + 2 * store.B) == set()
