"""``repmon bench --entities`` on the test Redis: it judges a closed bucket for every entity
(enough of them that the work goes off the event loop) and reports what it measured."""

from __future__ import annotations

import pytest
import redis

from models.anomaly import AnomalyWatch
from streams.detection import OFFLOAD_ENTITIES, _Lazy
from streams.state import MemoryState
from tools.bench_detect import bench_detection_scale

pytestmark = pytest.mark.integration


def test_the_entities_bench_judges_every_size_and_leaves_nothing_behind(redis_url: str) -> None:
    n = OFFLOAD_ENTITIES + 10
    report = bench_detection_scale((n,), redis_url=redis_url)
    (row,) = report["sizes"]
    assert row["entities"] == n and 1 <= row["active_in_bucket"] <= n
    assert row["cold_tick_s"] > 0 and row["closed_bucket_tick_s"] > 0 and row["idle_tick_s"] > 0
    sizes = row["redis_bytes_per_entity"]
    assert sizes["detector"] > 1000 and sizes["river_anomaly"] > 1000  # a day of state was there
    assert row["redis_bytes_counters_of_one_active_entity_minute"] > 0
    r = redis.Redis.from_url(redis_url)
    try:
        assert not list(r.scan_iter(f"bd{n}x*", count=1000))  # its keys are gone
    finally:
        r.close()


async def test_river_watches_are_read_and_decoded_only_when_needed() -> None:
    state = MemoryState()
    await state.save_blob("anom:b", AnomalyWatch().to_dict())
    watches = _Lazy(state, "anom:", AnomalyWatch.from_dict)
    assert len(watches) == 0
    await watches.need(["a"])
    assert watches["a"].seen == 0 and list(watches) == ["a"]  # b is never read, so never saved
    with pytest.raises(KeyError):
        watches["b"]  # not needed yet: never started over unseen
    await watches.need(["a", "b"])
    assert sorted(watches) == ["a", "b"]
