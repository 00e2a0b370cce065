"""Detection -> incidents -> Apprise, through real Redis and a real local HTTP receiver.

The stream here is bucket counters written straight into the Redis windows (the enrichment is
tested elsewhere), so each scenario controls exactly what the detectors see.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aredis

from alerts.dispatch import Dispatcher
from contract.records import EnrichedEvent, EntityMatch, Incident, Sentiment, Signal
from infra.settings import Settings, load_settings
from streams.detection import DetectionEngine
from streams.state import RedisState
from streams.windows import RedisWindows
from tools.receiver import HttpReceiver

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def settings_for(unique: str, receiver: HttpReceiver, **alerts: object) -> Settings:
    return load_settings(
        None,
        redis={"key_prefix": f"al{unique}"},
        detect={"warmup_buckets": 30, "resolve_after_quiet_buckets": 10},
        alerts={
            "console": False,
            "cooldown_seconds": 3600,
            "retry_backoff_seconds": 0.05,
            "routes": [
                {"name": "cx", "urls": [receiver.apprise_url("/cx")], "min_severity": "warning", "rate_per_second": 20},
                {
                    "name": "sms",
                    "urls": [receiver.apprise_url("/sms", "form")],
                    "min_severity": "critical",
                    "sms": True,
                    "rate_per_second": 20,
                },
            ],
            **alerts,
        },
    )


def stream(minutes: int, crisis: range | None, seed: int = 1, *, hot_negative: float = 0.8) -> list[EnrichedEvent]:
    """Minutes of mentions; in ``crisis`` volume rises fivefold and ``hot_negative`` of it is negative
    (0.12 keeps the quiet mix: a burst of good news)."""
    rng = random.Random(seed)
    out = []
    for m in range(minutes):
        hot = crisis is not None and m in crisis
        early = hot and crisis is not None and m < crisis.start + 2  # it starts mild, then escalates
        n = rng.randint(8, 14) * (2 if early else 5 if hot else 1)
        for i in range(n):
            neg = rng.random() < (min(0.45, hot_negative) if early else hot_negative if hot else 0.12)
            score = -0.7 if neg else 0.4
            out.append(
                EnrichedEvent(
                    event_id=f"s:{m}:{i}",
                    kind="mention",
                    source="t",
                    occurred_at=T0 + timedelta(minutes=m, seconds=rng.uniform(0, 59)),
                    ingested_at=T0,
                    entity="northwind",
                    entities=[EntityMatch(key="northwind", kind="brand", text="Northwind", start=0, end=9)],
                    sentiment=Sentiment(
                        score=score, label="negative" if neg else "positive", confidence=0.9, model_version="t"
                    ),
                    text_redacted="the app is down and support is useless" if neg else "nice flight",
                )
            )
    return out


HARNESSES: list[Harness] = []


class Clock:
    """The dispatcher's clock, stopped at its start; a test moves it forward (a cooldown passes
    without waiting for it, and never passes by itself on a slow machine)."""

    def __init__(self) -> None:
        self.start, self.offset = time.time(), 0.0

    def __call__(self) -> float:
        return self.start + self.offset


class Harness:
    def __init__(self, settings: Settings, r: aredis.Redis, clock: Callable[[], float] = time.time) -> None:
        self.store = RedisWindows(r, settings)
        self.dispatcher = Dispatcher(settings.alerts, r, key_prefix=settings.redis.key_prefix, clock=clock)
        HARNESSES.append(self)  # the r fixture stops its route senders
        self.incidents: list[Incident] = []
        self.signals: list[Signal] = []

        async def on_signal(s: Signal) -> None:
            self.signals.append(s)

        async def on_incident(i: Incident) -> None:
            self.incidents.append(i)
            await self.dispatcher.dispatch(i)

        self.engine = DetectionEngine(
            settings,
            self.store,
            RedisState(r, settings.redis.key_prefix),
            emit_signal=on_signal,
            emit_incident=on_incident,
        )

    async def feed(self, events: list[EnrichedEvent], batch: int = 200) -> None:
        for i in range(0, len(events), batch):
            await self.store.add_batch([(e, 0) for e in events[i : i + batch]])
            while await self.engine.tick() > 0:
                pass


@pytest.fixture
async def r(redis_url: str, unique: str) -> AsyncIterator[aredis.Redis]:
    client = aredis.Redis.from_url(redis_url)
    yield client
    while HARNESSES:
        await HARNESSES.pop().dispatcher.aclose()
    keys = [k async for k in client.scan_iter(f"al{unique}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_scripted_crisis_is_one_thread_with_the_expected_messages(r: aredis.Redis, unique: str) -> None:
    with HttpReceiver() as rx:
        h = Harness(settings_for(unique, rx), r)
        await h.feed(stream(150, crisis=range(100, 112)))
        threads = {i.incident_id for i in h.incidents}
        assert len(threads) == 1, [i.title for i in h.incidents]
        statuses = [i.status for i in h.incidents]
        assert statuses[0] == "open" and statuses[-1] == "resolved" and "escalated" in statuses
        opened = h.incidents[0].opened_at
        assert T0 + timedelta(minutes=100) <= opened <= T0 + timedelta(minutes=101)
        got = await asyncio.to_thread(rx.wait_for, lambda rs: any("RESOLVED" in x.title for x in rs if x.path == "/cx"))
        cx = [x for x in got if x.path == "/cx"]
        # open + escalated + resolved go out; updates inside the cooldown are held, not flooded
        assert [x.title.split(":")[0].split("] ")[1] for x in cx] == ["OPEN", "ESCALATED", "RESOLVED"]
        assert "negative share" in cx[0].message and "vs baseline" in cx[0].message and "since" in cx[0].message
        assert "the app is down" in cx[0].message
        sms = [x for x in got if x.path == "/sms"]
        assert sms and all(len(x.form["message"]) <= 160 for x in sms)
        # a redelivered incident is not sent again
        before = len(rx.requests)
        for inc in h.incidents:
            await h.dispatcher.dispatch(inc)
        assert len(rx.requests) == before


async def test_quiet_stream_pages_no_one(r: aredis.Redis, unique: str) -> None:
    with HttpReceiver() as rx:
        h = Harness(settings_for(unique, rx), r)
        await h.feed(stream(240, crisis=None, seed=5))
        assert h.incidents == [] and rx.requests == []


async def test_failing_channel_gets_each_message_once(r: aredis.Redis, unique: str) -> None:
    with HttpReceiver(status_sequence=[500, 503, 500]) as rx:
        h = Harness(settings_for(unique, rx, routes=[{"name": "cx", "urls": [rx.apprise_url("/cx")]}]), r)
        await h.feed(stream(150, crisis=range(100, 112)))
        delivered = await asyncio.to_thread(rx.wait_for, 3, 10)
        titles = [x.title for x in delivered]
        assert len(titles) == len(set(titles)) == 3  # open, escalated, resolved: each once
        assert len(rx.attempts) == 6  # three failures were retried
        stats = await h.dispatcher.stats()
        assert stats.get("retrying") == 3 and "dead" not in stats


async def test_a_burst_of_good_news_pages_nobody_and_reaches_only_a_trending_route(
    r: aredis.Redis, unique: str
) -> None:
    burst = stream(150, crisis=range(100, 112), hot_negative=0.12)
    with HttpReceiver() as rx:
        h = Harness(settings_for(unique, rx), r)
        await h.feed(burst)
        assert any(s.signal == "trending" and s.severity == "info" for s in h.signals)
        assert h.incidents == [] and rx.requests == []
    await h.dispatcher.aclose()
    await r.delete(*[k async for k in r.scan_iter(f"al{unique}:*")])  # the same stream again, from scratch
    with HttpReceiver() as rx:
        routes = [
            {"name": "cx", "urls": [rx.apprise_url("/cx")], "rate_per_second": 20},
            {"name": "trend", "urls": [rx.apprise_url("/trend")], "trending": True, "rate_per_second": 20},
        ]
        h = Harness(settings_for(unique, rx, routes=routes), r)
        await h.feed(burst)
        assert h.incidents and {i.severity for i in h.incidents} == {"info"}
        assert h.incidents[0].status == "open" and h.incidents[-1].status == "resolved"
        got = await asyncio.to_thread(rx.wait_for, lambda rs: any("RESOLVED" in x.title for x in rs), 10)
        assert {x.path for x in got} == {"/trend"}  # the warning and critical routes got nothing


async def test_held_update_is_flushed_after_cooldown_and_rate_limit_holds(r: aredis.Redis, unique: str) -> None:
    with HttpReceiver() as rx:
        s = settings_for(
            unique,
            rx,
            cooldown_seconds=0.5,
            routes=[{"name": "cx", "urls": [rx.apprise_url("/cx")], "rate_per_second": 5}],
        )
        clock = Clock()
        h = Harness(s, r, clock)
        await h.feed(stream(112, crisis=range(100, 112)))
        held = [i for i in h.incidents if i.status == "update"]
        assert held, "the crisis should produce updates"
        first = len([i for i in h.incidents if i.status != "update"])
        await asyncio.to_thread(rx.wait_for, first, 5)
        assert await h.dispatcher.flush_due() == []  # still inside the cooldown: held
        clock.offset += 0.6  # the cooldown passes
        flushed = await h.dispatcher.flush_due()
        assert [d.status for d in flushed] == ["queued"]
        got = await asyncio.to_thread(rx.wait_for, first + 1, 5)
        assert "UPDATE" in got[-1].title and f"#{held[-1].seq}" in got[-1].title  # the latest update only
        gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
        # 5 messages/s at most: sends are spaced 0.2 s apart; arrival times carry the loopback's jitter
        # under load, so a gap may look shorter, but never near the milliseconds an unlimited route takes
        assert all(g >= 0.12 for g in gaps), gaps


def minute_of(m: int, n: int, negatives: int) -> list[EnrichedEvent]:
    """One minute of mentions with exactly ``negatives`` negative ones among ``n``."""
    return [
        EnrichedEvent(
            event_id=f"x:{m}:{i}",
            kind="mention",
            source="t",
            occurred_at=T0 + timedelta(minutes=m, seconds=i * 59 / n),
            ingested_at=T0,
            entity="northwind",
            entities=[EntityMatch(key="northwind", kind="brand", text="Northwind", start=0, end=9)],
            sentiment=Sentiment(
                score=-0.7 if i < negatives else 0.4,
                label="negative" if i < negatives else "positive",
                confidence=0.9,
                model_version="t",
            ),
            text_redacted="so slow today, not happy" if i < negatives else "nice flight",
        )
        for i in range(n)
    ]


async def test_river_anomaly_flags_a_mix_no_single_detector_fires_on(r: aredis.Redis, unique: str) -> None:
    """Volume and negative share both about 3.5 sigma up: below every per-signal threshold (5),
    rare as a pair. River's HalfSpaceTrees on the standardised inputs reports it once, as
    ``info`` evidence: no incident, nothing at the receiver. The calm stream before it: nothing."""
    with HttpReceiver() as rx:
        h = Harness(settings_for(unique, rx), r)
        calm = [e for e in stream(300, crisis=None, seed=5)]
        odd = minute_of(300, 23, 9)
        after = [e for e in stream(312, crisis=None, seed=6) if e.occurred_at >= T0 + timedelta(minutes=301)]
        await h.feed(calm + odd + after)
        hits = [s for s in h.signals if s.signal == "anomaly"]
        assert [s.bucket_start for s in hits] == [T0 + timedelta(minutes=300)], [
            (s.bucket_start, s.aspect, s.z) for s in hits
        ]
        hit = hits[0]
        assert hit.severity == "info" and hit.detector.startswith("river-hst")
        assert hit.aspect in {"volume", "negative_share"} and 3.0 <= hit.z < 5.0
        assert hit.value >= hit.baseline > 0
        assert not [s for s in h.signals if s.severity != "info"]
        assert h.incidents == [] and rx.requests == []


async def test_a_new_leader_continues_the_river_state(r: aredis.Redis, unique: str) -> None:
    """River watches live in the leader's memory and in Redis: a second engine (a new leader
    after a rebalance) picks up what the first saved, and the first reloads when it leads again."""
    with HttpReceiver() as rx:
        settings = settings_for(unique, rx)
        a, b = Harness(settings, r), Harness(settings, r)  # two workers' engines on the same Redis
        events = stream(200, crisis=None, seed=8)
        half = [e for e in events if e.occurred_at < T0 + timedelta(minutes=100)]
        await a.feed(half)
        await a.engine.save_river()  # what a leader does every 10 s and at shutdown
        seen_a = a.engine._river[1]["northwind"].seen  # type: ignore[index]
        assert seen_a > 30
        await b.feed([e for e in events if e.occurred_at >= T0 + timedelta(minutes=100)])
        seen_b = b.engine._river[1]["northwind"].seen  # type: ignore[index]
        assert seen_b > seen_a + 50  # continued from a's state, not from scratch
        await b.engine.save_river()
        drifts, anoms = await a.engine._river_state()  # a leads again: b's token, so it reloads
        assert "northwind" not in anoms  # its own copy is dropped; b's is read when a bucket needs it
        await drifts.need(["northwind"])
        await anoms.need(["northwind"])
        assert anoms["northwind"].seen == seen_b
        assert drifts["northwind"].seen == b.engine._river[0]["northwind"].seen > 0  # type: ignore[index]
