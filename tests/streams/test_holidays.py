"""A public holiday through the worker's engine on real Redis: with ``detect.holidays`` its quiet
day is learned and judged in the Sunday slot, and the weekday's slot keeps its weekday level."""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors.demo import _poisson
from contract.records import Signal
from infra.settings import load_settings
from models.detect import CountState
from models.seasons import hour_of_week
from streams.detection import DetectionEngine, _catch_up
from streams.state import RedisState
from streams.windows import RedisWindows

from .test_detect_scale import _mention

pytestmark = pytest.mark.integration

T0 = datetime(2025, 12, 1, tzinfo=UTC)  # a Monday; no US holiday until Christmas
XMAS = datetime(2025, 12, 25, tzinfo=UTC)  # a Thursday
DAYS = 25  # through Christmas; the first hour of the 26th closes its last bucket
THU_14 = hour_of_week(int((XMAS + timedelta(hours=14)).timestamp()))
SUN_14 = 6 * 24 + 14


def _rate(day: datetime, hour: int) -> float:
    """Mentions an hour: busy weekdays, quiet weekends and Christmas, a daily cycle on both."""
    quiet = day.weekday() >= 5 or day.date() == XMAS.date()
    busy = 8 <= hour < 21
    return (8.0 if busy else 3.0) if quiet else (40.0 if busy else 10.0)


async def _run(aredis: Any, prefix: str, holidays: list[str]) -> tuple[list[Signal], dict[str, CountState]]:
    """Every signal, and the volume state before Christmas and after it."""
    s = load_settings(
        None,
        entities=[{"name": "acme"}],
        redis={"key_prefix": prefix},
        windows={"bucket_seconds": 3600, "allowed_lateness_seconds": 0, "rollups_seconds": [3600, 86400]},
        detect={"warmup_buckets": 48, "holidays": holidays},
    )
    windows, state = RedisWindows(aredis, s, partitions=1), RedisState(aredis, s.redis.key_prefix)
    signals: list[Signal] = []

    async def on_signal(x: Any) -> None:
        signals.append(x)

    eng = DetectionEngine(s, windows, state, emit_signal=on_signal)
    rng = random.Random(11)
    seen: dict[str, CountState] = {}
    for d in range(DAYS + 1):
        day = T0 + timedelta(days=d)
        batch = []
        for h in range(1 if d == DAYS else 24):
            for i in range(_poisson(rng, _rate(day, h))):
                at = day + timedelta(hours=h, seconds=rng.uniform(0, 3599))
                batch.append((_mention("acme", at, f"{d}:{h}:{i}"), 0))
        await windows.add_batch(batch)
        while await eng.tick():  # every bucket closed so far
            pass
        if d in (DAYS - 2, DAYS):  # Christmas Eve has closed (but its last hour), then Christmas
            closed = int(await state.pointer("closed") or 0)
            assert closed < XMAS.timestamp() if d < DAYS else closed == XMAS.timestamp() + 23 * 3600, (d, closed)
            lead = await eng._leader(closed)
            _catch_up(lead.dets["acme"], lead.at, "acme", closed, eng.B, eng.calendars["acme"])
            vol = lead.dets["acme"].signals["volume"]
            assert isinstance(vol, CountState)
            seen["before" if d < DAYS else "after"] = copy.deepcopy(vol)
    return signals, seen


async def test_a_holiday_is_judged_and_learned_as_a_sunday(aredis: Any, unique: str) -> None:
    try:
        runs = {"us": await _run(aredis, f"hol{unique}us", ["US"]), "none": await _run(aredis, f"hol{unique}no", [])}
    finally:
        keys = [k async for k in aredis.scan_iter(f"hol{unique}*", count=1000)]
        if keys:
            await aredis.delete(*keys)
    for signals, _ in runs.values():
        on_xmas = [x for x in signals if x.bucket_start.date() == XMAS.date()]
        assert not on_xmas  # a quiet day never pages (volume is bad upwards only), calendar or not
    (_, us), (_, none) = runs["us"], runs["none"]
    assert us["before"].week[str(THU_14)] == none["before"].week[str(THU_14)]  # the same three Thursdays
    # with the calendar the Thursday slot never saw Christmas; Sunday's slot learned it
    assert us["after"].week[str(THU_14)] == us["before"].week[str(THU_14)]
    assert us["after"].week[str(SUN_14)][1] == us["before"].week[str(SUN_14)][1] + 1
    # without it Christmas taught the Thursday its Sunday level: the next Thursday's 14h expects far less
    weekday = us["before"].week[str(THU_14)][0]
    assert none["after"].week[str(THU_14)][0] < weekday - 0.3, (none["after"].week[str(THU_14)], weekday)
    assert none["after"].week[str(SUN_14)] == none["before"].week[str(SUN_14)]
    ph = 1.0  # hour buckets
    assert none["after"].expect(THU_14, ph) < 0.8 * us["after"].expect(THU_14, ph)
