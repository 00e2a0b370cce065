"""A bucket is judged only when every raw partition has counted past it or is caught up with the
broker: a partition that has not reported yet, or whose worker died, holds the watermark back."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from contract.records import EnrichedEvent, EntityMatch, Incident, Sentiment, Signal
from infra.settings import Settings, load_settings
from streams.detection import DetectionEngine
from streams.runtime import Runtime
from streams.state import MemoryState
from streams.windows import MemoryWindows, RedisWindows, Windows

from .test_runtime import ListOutbox

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def ev(entity: str, minute: float, i: int, negative: bool = False) -> EnrichedEvent:
    return EnrichedEvent(
        event_id=f"{entity}:{minute}:{i}",
        kind="mention",
        source="t",
        occurred_at=T0 + timedelta(minutes=minute),
        ingested_at=T0,
        entity=entity,
        entities=[EntityMatch(key=entity, kind="brand", text=entity, start=0, end=len(entity))],
        sentiment=Sentiment(
            score=-0.6 if negative else 0.5,
            label="negative" if negative else "positive",
            confidence=0.9,
            model_version="t",
        ),
        text_redacted="fine",
    )


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.integration), "memory"])
async def windows(request, unique):  # type: ignore[no-untyped-def]
    s = load_settings(None, redis={"key_prefix": f"wm{unique}"})
    clock = Clock()
    if request.param == "memory":
        yield MemoryWindows(s, partitions=2, clock=clock)
        return
    import redis.asyncio

    r = redis.asyncio.Redis.from_url(request.getfixturevalue("redis_url"))
    yield RedisWindows(r, s, partitions=2, clock=clock)
    keys = [k async for k in r.scan_iter(f"wm{unique}:*")]
    if keys:
        await r.delete(*keys)
    await r.aclose()


async def test_a_partition_not_yet_reporting_holds_every_bucket(windows: Windows) -> None:
    await windows.add_batch([(ev("acme", 10, 0), 0)])
    assert await windows.watermark() is None  # partition 1 may still hold events of any bucket
    await windows.add_batch([(ev("zeta", 3, 0), 1)])
    assert await windows.watermark() == (T0 + timedelta(minutes=3)).timestamp()
    assert await windows.watermark(high=True) == (T0 + timedelta(minutes=10)).timestamp()


async def test_a_caught_up_partition_lets_the_others_through_while_its_report_is_fresh(windows: Windows) -> None:
    clock = windows.clock
    assert isinstance(clock, Clock)
    await windows.add_batch([(ev("acme", 10, 0), 0)])
    await windows.report_partitions({1: True}, clock.now)  # empty partition, caught up with the broker
    assert await windows.watermark() == (T0 + timedelta(minutes=10)).timestamp()
    clock.now += windows.idle_report_seconds + 1  # its worker stopped reporting (dead, or rebalancing)
    assert await windows.watermark() is None
    await windows.report_partitions({1: True, 0: False}, clock.now)
    await windows.report_partitions({1: False}, clock.now)  # new events arrived on partition 1
    assert await windows.watermark() is None


async def test_a_caught_up_report_holds_again_once_its_partition_was_written_to(windows: Windows) -> None:
    """A worker reports partition 1 caught up at offset 40, then stalls; events are written to
    partition 1 after that: with the broker's end offsets, the report no longer lets partition 0's
    buckets through (they would be judged without partition 1's new events)."""
    clock = windows.clock
    assert isinstance(clock, Clock)
    await windows.add_batch([(ev("acme", 10, 0), 0), (ev("zeta", 2, 0), 1)])
    await windows.report_partitions({1: 40}, clock.now)
    assert await windows.watermark(ends={0: 7, 1: 40}) == (T0 + timedelta(minutes=10)).timestamp()
    assert await windows.watermark(ends={0: 7, 1: 41}) == (T0 + timedelta(minutes=2)).timestamp()
    assert await windows.watermark() == (T0 + timedelta(minutes=10)).timestamp()  # reports taken as they are


async def test_a_detection_tick_without_end_offsets_judges_nothing() -> None:
    s = settings_two_partitions()
    windows = MemoryWindows(s, partitions=2)
    engine = DetectionEngine(s, windows, MemoryState())
    await windows.add_batch([(e, 0) for e in traffic("northwind", range(0, 40), 1)])
    await windows.report_partitions({1: 0}, windows.clock())

    async def down() -> dict[int, int]:
        raise OSError("broker unreachable")

    engine.end_offsets = down
    assert await engine.tick() == 0 and engine.watermark is None

    async def ends() -> dict[int, int]:
        return {0: 800, 1: 0}

    engine.end_offsets = ends
    assert await engine.tick() > 0


async def test_the_end_offsets_are_asked_only_when_a_caught_up_report_would_hold_the_watermark() -> None:
    """Every partition counting events: the watermark rests on counts, not on a report, so the
    broker is not asked (and a broker that cannot answer does not stop detection); once a
    partition reports itself caught up, its report is checked against the broker."""
    s = settings_two_partitions()
    windows = MemoryWindows(s, partitions=2)
    engine = DetectionEngine(s, windows, MemoryState())
    asked: list[int] = []

    async def down() -> dict[int, int]:
        asked.append(1)
        raise OSError("broker unreachable")

    engine.end_offsets = down
    events = traffic("northwind", range(0, 40), 1)
    await windows.add_batch([(e, i % 2) for i, e in enumerate(events)])
    assert await engine.tick() > 0 and asked == []
    await windows.report_partitions({1: 0}, windows.clock())
    assert await engine.tick() == 0 and asked == [1]


def settings_two_partitions() -> Settings:
    return load_settings(
        None,
        kafka={"partitions": 2},
        detect={"warmup_buckets": 30, "min_volume": 5},
        windows={"allowed_lateness_seconds": 0, "backfill_since": T0},
    )


def traffic(entity: str, minutes: range, seed: int, crisis: range = range(0)) -> list[EnrichedEvent]:
    """Steady mentions, 10% negative; during ``crisis`` five times as many, 80% negative."""
    rng = random.Random(seed)
    out = []
    for m in minutes:
        hot = m in crisis
        for i in range(rng.randint(14, 22) * (5 if hot else 1)):
            out.append(ev(entity, m + rng.random() * 0.98, i, rng.random() < (0.8 if hot else 0.1)))
    return out


async def cold_start(partitions: int | None) -> tuple[list[Signal], list[Incident]]:
    """Two brands on two partitions; partition 1's worker starts 150 minutes of event time late,
    and skyline, on partition 1, has a crisis at minutes 100-120."""
    s = settings_two_partitions()
    windows, state = MemoryWindows(s, partitions=partitions), MemoryState()
    out = ListOutbox()
    engine = DetectionEngine(s, windows, state)

    async def on_incident(i: Incident) -> None:
        await out.send("incidents", None, i.model_dump_json().encode())

    async def on_signal(sig: Signal) -> None:
        signals.append(sig)

    signals: list[Signal] = []
    engine.emit_incident, engine.emit_signal = on_incident, on_signal
    a, b = traffic("northwind", range(0, 180), 1), traffic("skyline", range(0, 180), 2, range(100, 120))
    await windows.add_batch([(e, 0) for e in a if e.occurred_at < T0 + timedelta(minutes=150)])
    await windows.report_partitions({0: False}, windows.clock())
    while await engine.tick() > 0:
        pass
    await windows.add_batch([(e, 1) for e in b])  # partition 1 catches up
    await windows.add_batch([(e, 0) for e in a if e.occurred_at >= T0 + timedelta(minutes=150)])
    while await engine.tick() > 0:
        pass
    return signals, [Incident.model_validate_json(v) for v in out.values("incidents")]


async def test_cold_start_with_one_partition_first_judges_each_bucket_whole() -> None:
    signals, incidents = await cold_start(partitions=2)
    # the late partition's crisis is seen, once; the steady brand on the early partition pages no one
    assert [(i.entity, i.status) for i in incidents if i.status == "open"] == [("skyline", "open")]
    assert not [s for s in signals if s.entity == "northwind" and s.severity != "info"]


async def test_the_cold_start_crisis_is_missed_when_partitions_are_not_all_awaited() -> None:
    # the same stream judged on the partitions that happened to report (the behaviour this fixes):
    # skyline's buckets were judged empty before its partition counted them
    _, incidents = await cold_start(partitions=None)
    assert not [i for i in incidents if i.entity == "skyline"]


async def test_runtime_reports_caught_up_only_when_everything_below_the_high_water_mark_was_processed() -> None:
    s = settings_two_partitions()
    c_windows = MemoryWindows(s, partitions=2)
    from streams.compose import build

    c = build(s, memory=True)
    c.windows = c_windows
    rt = Runtime(c, ListOutbox())
    commits: dict[int, int | None] = {0: None, 1: 40}
    asked: list[list[int]] = []

    async def committed(partitions: list[int]) -> dict[int, int | None]:
        asked.append(partitions)
        return {p: commits[p] for p in partitions}

    rt.committed = committed
    await rt.report_partitions({0: 0, 1: 120})  # 0 empty; 1 has 80 messages to go
    assert set(c_windows.idle) == {"0"} and asked == [[1]]
    rt.done[1] = 120
    await rt.report_partitions({0: 0, 1: 120})
    assert set(c_windows.idle) == {"0", "1"} and asked == [[1]]  # processed here: nothing to ask
    await rt.report_partitions({0: 5})  # partition 1 revoked; 0 got 5 new messages
    assert set(c_windows.idle) == {"1"} and 1 not in rt.done  # 1 is reported by its new owner from now on
    # 1 is back with 10 more messages, all fetched: the fetch position says nothing of the agent
    await rt.report_partitions({0: 5, 1: 130})
    assert set(c_windows.idle) == set()
    await rt.report_partitions({0: 5, 1: 130})  # still so however long they stay fetched
    assert set(c_windows.idle) == set()
    commits.update({0: 5, 1: 130})  # whoever held them committed everything: caught up
    await rt.report_partitions({0: 5, 1: 130})
    assert set(c_windows.idle) == {"0", "1"}
    n = len(asked)
    await rt.report_partitions({0: 5, 1: 130})  # nothing new since: the answer stands, no request
    assert set(c_windows.idle) == {"0", "1"} and len(asked) == n

    async def down(partitions: list[int]) -> dict[int, int | None]:
        raise RuntimeError("coordinator not available")

    rt.committed = down
    await rt.report_partitions({0: 5, 1: 131})  # one more on 1, and the group cannot be asked
    assert set(c_windows.idle) == {"0"}
