"""Detection that costs what changed: the leader touches, on a closed bucket, only the entities
with events in it (and the open threads); every other detector learns its empty buckets when next
needed, exactly. These tests hold that to the eager engine (every entity judged on every bucket)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from connectors.demo import _poisson
from contract.records import EnrichedEvent, EntityMatch, Incident, Sentiment, Signal
from infra.settings import Settings, load_settings
from models.detect import EntityDetector
from streams.detection import DetectionEngine, _catch_up
from streams.state import MemoryState, RedisState, StateStore
from streams.windows import MemoryWindows, RedisWindows, Windows

T0 = datetime(2026, 11, 2, tzinfo=UTC)
# mentions a minute of each entity (a daily cycle on top), and its negative burst
RATES = {"dense": (6.0, 300), "sparse": (0.3, 420), "rare": (0.02, 500), "silent": (0.0, None)}
MINUTES = 720


def _settings(prefix: str) -> Settings:
    return load_settings(
        None,
        entities=[{"name": e} for e in RATES],
        redis={"key_prefix": prefix},
        windows={"allowed_lateness_seconds": 0},
        detect={"warmup_buckets": 60},
    )


def _mention(e: str, at: datetime, i: str, neg: bool = False) -> EnrichedEvent:
    return EnrichedEvent(
        event_id=f"s:{e}:{i}",
        kind="mention",
        source="test",
        occurred_at=at,
        ingested_at=T0,
        entity=e,
        entities=[EntityMatch(key=e, kind="brand", text=e, start=0, end=len(e))],
        sentiment=Sentiment(
            score=-0.7 if neg else 0.5, label="negative" if neg else "positive", confidence=0.9, model_version="t"
        ),
        text_redacted=f"words about {e}",
    )


def _events(seed: int = 5) -> list[list[EnrichedEvent]]:
    """Per minute, every entity's mentions; an hour without any (minutes 600-660)."""
    rng = random.Random(seed)
    out: list[list[EnrichedEvent]] = []
    for m in range(MINUTES):
        minute: list[EnrichedEvent] = []
        for e, (rate, burst) in RATES.items():
            hot = burst is not None and burst <= m < burst + 15
            lam = 0.0 if 600 <= m < 660 else rate * (1.5 if (m // 60) % 2 else 0.6) * (10 if hot else 1)
            for i in range(_poisson(rng, lam)):
                at = T0 + timedelta(minutes=m, seconds=rng.uniform(0, 59))
                minute.append(_mention(e, at, f"{m}:{i}", neg=rng.random() < (0.7 if hot else 0.15)))
        out.append(minute)
    return out


class _Every:
    """Windows that cannot tell which entities have counts: every entity is judged every bucket."""

    async def counted_entities(self, t: int) -> set[str] | None:
        return None


class EveryMemory(_Every, MemoryWindows):
    pass


class EveryRedis(_Every, RedisWindows):
    pass


@contextmanager
def _eager_empty_buckets() -> Iterator[None]:
    """The reference: an empty bucket judged and learned by the full update, as before the leader
    deferred them."""
    fast = EntityDetector.empty
    EntityDetector.empty = lambda self, how=None: self.update({}, how) and None  # type: ignore[method-assign]
    try:
        yield
    finally:
        EntityDetector.empty = fast  # type: ignore[method-assign]


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.integration), "memory"])
async def backend(request: pytest.FixtureRequest, unique: str) -> AsyncIterator[Any]:
    """``make(prefix, eager) -> (settings, windows, state)`` on Redis or in memory."""
    clients: list[Any] = []

    def make(prefix: str, eager: bool) -> tuple[Settings, Windows, StateStore]:
        s = _settings(f"ds{unique}{prefix}")
        if request.param == "memory":
            return s, (EveryMemory(s) if eager else MemoryWindows(s)), MemoryState()
        import redis.asyncio

        r = redis.asyncio.Redis.from_url(request.getfixturevalue("redis_url"))
        clients.append(r)
        windows = (EveryRedis if eager else RedisWindows)(r, s, partitions=1)
        return s, windows, RedisState(r, s.redis.key_prefix)

    yield make
    for r in clients:
        keys = [k async for k in r.scan_iter(f"ds{unique}*", count=1000)]
        for i in range(0, len(keys), 1000):
            await r.delete(*keys[i : i + 1000])
        await r.aclose()


async def _run(
    s: Settings,
    windows: Windows,
    state: StateStore,
    *,
    switch_at: int | None = None,
    more: tuple[int, ...] = (),
    idle: int = 0,
) -> tuple[list[Signal], list[Incident], DetectionEngine]:
    """The engine over ``_events``, seven minutes a tick, each followed by ``idle`` ticks that close
    nothing; a new leader takes over at the first tick from ``switch_at`` and from each minute of
    ``more``."""
    signals: list[Signal] = []
    incidents: list[Incident] = []

    async def on_signal(x: Any) -> None:
        signals.append(x)

    async def on_incident(x: Any) -> None:
        incidents.append(x)

    def engine() -> DetectionEngine:
        return DetectionEngine(s, windows, state, emit_signal=on_signal, emit_incident=on_incident)

    eng = engine()
    minutes = _events()
    switches = sorted([*([switch_at] if switch_at is not None else []), *more])
    for m0 in range(0, MINUTES, 7):
        if switches and m0 >= switches[0]:
            await eng.save_river()  # what a leader does at shutdown
            eng = engine()  # a new leader after a rebalance, from what Redis holds
            switches = [m for m in switches if m > m0]
        batch = [(ev, 0) for minute in minutes[m0 : m0 + 7] for ev in minute]
        if batch:
            await windows.add_batch(batch)
        await eng.tick(max_buckets=10_000)
        for _ in range(idle):
            assert await eng.tick() == 0
    return signals, incidents, eng


async def _detectors(eng: DetectionEngine) -> dict[str, Any]:
    """Every detector as of the closed pointer (an entity's deferred empty buckets learned)."""
    closed = int(await eng.state.pointer("closed") or 0)
    lead = await eng._leader(closed)
    await eng._detectors(lead, eng.entities, closed)
    for e in eng.entities:
        _catch_up(lead.dets[e], lead.at, e, closed, eng.B)
    return {e: lead.dets[e].to_dict() for e in eng.entities}


def _threads(incidents: list[Incident]) -> list[tuple[Any, ...]]:
    return [(i.incident_id, i.status, i.seq, i.severity) for i in incidents]


async def test_verdicts_are_those_of_judging_every_entity_on_every_bucket(backend: Any) -> None:
    with _eager_empty_buckets():
        ref_signals, ref_incidents, ref = await _run(*backend("e", eager=True))
    signals, incidents, eng = await _run(*backend("l", eager=False), switch_at=MINUTES // 2)
    assert {s.entity for s in ref_signals if s.severity != "info"} >= {"dense", "sparse"}  # the bursts paged
    assert [s.model_dump(exclude={"emitted_at"}) for s in signals] == [
        s.model_dump(exclude={"emitted_at"}) for s in ref_signals
    ]
    assert _threads(incidents) == _threads(ref_incidents) and ref_incidents
    assert await _detectors(eng) == await _detectors(ref)


@pytest.mark.integration
async def test_a_tick_writes_only_the_entities_that_had_events(aredis: Any, unique: str) -> None:
    s = _settings(f"dw{unique}")
    windows, state = RedisWindows(aredis, s, partitions=1), RedisState(aredis, s.redis.key_prefix)
    eng = DetectionEngine(s, windows, state)
    minutes = _events()[:118]
    try:
        await windows.add_batch([(ev, 0) for minute in minutes for ev in minute])
        at = int(T0.timestamp()) + 118 * 60
        # minute 118: only the dense entity talks; the tick closes it (minute 119 is filling)
        await windows.add_batch(
            [(_mention("dense", T0 + timedelta(minutes=118 + j / 2), f"w{j}"), 0) for j in range(4)]
        )
        assert await eng.tick(max_buckets=10_000) > 0
        key = f"{s.redis.key_prefix}:state:det:"
        before = {e: await aredis.get(key + e) for e in RATES}
        assert before["dense"] is not None and before["sparse"] is not None
        assert orjson.loads(before["dense"])["at"] == at
        # minute 119 closes with events of the dense entity only (120 is filling)
        await windows.add_batch(
            [(_mention("dense", T0 + timedelta(minutes=119 + j / 2), f"x{j}"), 0) for j in range(4)]
        )
        assert await eng.tick() == 1
        after = {e: await aredis.get(key + e) for e in RATES}
        assert after["sparse"] == before["sparse"] and after["rare"] == before["rare"]
        assert after["dense"] != before["dense"] and orjson.loads(after["dense"])["at"] == at + 60
        assert await state.pointer("closed") == at + 60
        # an idle tick learns the quiet entities' buckets in memory and writes none of them
        lead = eng._state
        assert lead is not None and lead.at["sparse"] < at + 60
        assert await eng.tick() == 0
        assert lead.at["sparse"] == at + 60 and lead.at["rare"] == at + 60
        assert {e: await aredis.get(key + e) for e in RATES} == after
    finally:
        keys = [k async for k in aredis.scan_iter(f"dw{unique}*", count=1000)]
        if keys:
            await aredis.delete(*keys)


async def test_idle_ticks_learn_the_quiet_entities_buckets_alike(backend: Any) -> None:
    """The ticks between two closed buckets learn the deferred empty buckets of the entities that
    did not talk (a closed bucket then costs what talked in it): the same signals, threads and
    detectors as the eager engine, with a leader change in the middle, and none left behind."""
    with _eager_empty_buckets():
        ref_signals, ref_incidents, ref = await _run(*backend("e", eager=True))
    signals, incidents, eng = await _run(*backend("i", eager=False), switch_at=MINUTES // 2, idle=2)
    assert [x.model_dump(exclude={"emitted_at"}) for x in signals] == [
        x.model_dump(exclude={"emitted_at"}) for x in ref_signals
    ]
    assert _threads(incidents) == _threads(ref_incidents) and ref_incidents
    lead = eng._state
    assert lead is not None and lead.behind[0] is not None
    closed = lead.behind[0]
    # the rare entity is quiet in most buckets: it was caught up on the idle ticks, not when it talked
    assert {"dense", "sparse", "rare"} <= lead.dets.keys()
    assert all(lead.at[e] >= closed for e in lead.dets if lead.dets[e].buckets)
    assert await _detectors(eng) == await _detectors(ref)


async def test_new_leaders_read_only_the_state_they_need_and_judge_alike(backend: Any) -> None:
    """Leaders that take over inside the dense burst, inside the hour nobody talks and after it
    read each detector and River watch from the store only when a bucket needs it: the same
    signals, threads and detectors as one eager engine, and on Redis
    (whose windows judge every bucket) the entity that never talks is never read at all."""
    with _eager_empty_buckets():
        ref_signals, ref_incidents, ref = await _run(*backend("e", eager=True))
    s, windows, state = backend("n", eager=False)
    signals, incidents, eng = await _run(s, windows, state, more=(301, 610, 665))
    assert {x.entity for x in ref_signals if x.severity != "info"} >= {"dense", "sparse"}  # the bursts paged
    assert [x.model_dump(exclude={"emitted_at"}) for x in signals] == [
        x.model_dump(exclude={"emitted_at"}) for x in ref_signals
    ]
    assert _threads(incidents) == _threads(ref_incidents)
    if isinstance(windows, RedisWindows):
        lead, river = eng._state, eng._river
        assert lead is not None and river is not None
        assert "silent" not in lead.dets and not {"silent"} & (river[0].keys() | river[1].keys())
        assert "dense" in lead.dets
    assert await _detectors(eng) == await _detectors(ref)


def test_decoded_leader_state_is_freed_without_the_cycle_collector() -> None:
    """The leader takes its decoded state out of the cyclic collector (``gc.freeze``): that is
    only safe while detectors and River watches hold no reference cycles, so that a dropped
    state is still freed by reference counting."""
    import gc

    from models.anomaly import AnomalyWatch
    from models.drift import DriftWatch

    s = _settings("gc")
    det, watch, drift = EntityDetector(s.detect), AnomalyWatch(), DriftWatch()
    rng = random.Random(3)
    for i in range(300):
        st = {"n": float(rng.randint(0, 9)), "neg": float(rng.randint(0, 2))}
        det.update_standardized(st, i % 168)
        watch.update({"volume": rng.gauss(0, 1), "negative_share": rng.gauss(0, 1)})
        drift.update(rng.random(), 5.0)
    docs = (det.to_dict(), watch.to_dict(), drift.to_dict())
    gc.collect()
    gc.disable()
    try:
        state = [
            EntityDetector.from_dict(s.detect, docs[0]),
            AnomalyWatch.from_dict(docs[1]),
            DriftWatch.from_dict(docs[2]),
        ]
        assert state[0].buckets == 300 and state[1].seen == 300
        del state
        assert gc.collect() == 0  # nothing was left for the collector to find
    finally:
        gc.enable()


async def test_a_leader_that_decodes_many_entities_freezes_its_heap(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    import streams.detection as detection

    monkeypatch.setattr(detection, "FREEZE_DECODED", 2)
    monkeypatch.setattr(detection, "_unfrozen", [0])
    s = _settings("fz")
    windows, state = MemoryWindows(s), MemoryState()
    eng = DetectionEngine(s, windows, state)
    gc.unfreeze()
    try:
        await windows.add_batch([(ev, 0) for minute in _events()[:5] for ev in minute])
        assert await eng.tick() > 0
        assert eng._state is not None and len(eng._state.dets) >= 2
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
