"""The state seam: the same behaviour in Redis and in memory; only JSON ever comes back."""

from __future__ import annotations

import pickle

import pytest

from streams.state import MemoryState, RedisState, StateStore


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.integration), "memory"])
async def state(request, unique):  # type: ignore[no-untyped-def]
    if request.param == "memory":
        yield MemoryState()
        return
    import redis.asyncio

    aredis = redis.asyncio.Redis.from_url(request.getfixturevalue("redis_url"))
    yield RedisState(aredis, f"st{unique}")
    keys = [k async for k in aredis.scan_iter(f"st{unique}:*")]
    if keys:
        await aredis.delete(*keys)
    await aredis.aclose()


async def test_entity_states_and_pointer_are_saved_together_and_read_back(state: StateStore) -> None:
    assert await state.load("det", ["a", "b"]) == {"a": None, "b": None}
    assert await state.pointer("closed") is None
    await state.save(
        {"det": {"a": {"buckets": 3, "signals": {"volume": [1.5]}}}, "inc": {"a": {"seq": 1}}}, {"closed": 120}
    )
    assert await state.load("det", ["a", "b"]) == {"a": {"buckets": 3, "signals": {"volume": [1.5]}}, "b": None}
    assert (await state.load("inc", ["a"]))["a"] == {"seq": 1}
    assert await state.pointer("closed") == 120.0


async def test_a_loaded_document_is_a_copy(state: StateStore) -> None:
    await state.save({"det": {"a": {"x": [1]}}}, {})
    doc = (await state.load("det", ["a"]))["a"]
    assert doc is not None
    doc["x"].append(2)
    assert (await state.load("det", ["a"]))["a"] == {"x": [1]}


async def test_blobs_round_trip_as_json(state: StateStore) -> None:
    assert await state.load_blob("anom:a") is None
    await state.save_blob("anom:a", {"v": 1, "masses": [[[1, 0], [0, 2]]]})
    assert await state.load_blob("anom:a") == {"v": 1, "masses": [[[1, 0], [0, 2]]]}


class Boom:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (pytest.fail, ("a pickle read back from Redis was executed",))


@pytest.mark.integration
async def test_a_pickle_written_into_redis_is_never_unpickled(aredis, unique: str) -> None:  # type: ignore[no-untyped-def]
    st = RedisState(aredis, f"st{unique}")
    try:
        await aredis.set(f"st{unique}:blob:anom:a", pickle.dumps(Boom()))
        await aredis.set(f"st{unique}:state:det:a", pickle.dumps(Boom()))
        assert await st.load_blob("anom:a") is None
        assert await st.load("det", ["a"]) == {"a": None}
    finally:
        await aredis.delete(f"st{unique}:blob:anom:a", f"st{unique}:state:det:a")


async def test_a_former_leader_does_not_overwrite_newer_river_watches() -> None:
    from infra.settings import load_settings
    from streams.detection import MODEL, DetectionEngine
    from streams.windows import MemoryWindows

    s = load_settings(None)
    state = MemoryState()
    old, new = (DetectionEngine(s, MemoryWindows(s), state) for _ in range(2))
    drifts, _ = await old._river_state()
    drifts[MODEL].update(0.5, 50)
    await old.save_river()
    # a rebalance: the new leader loads them, learns more, saves; the old one stops afterwards
    newer, _ = await new._river_state()
    for _ in range(3):
        newer[MODEL].update(0.9, 50)
    await new.save_river()
    saved = await state.load_blob(f"drift:{MODEL}")
    await old.save_river()  # at its shutdown
    assert await state.load_blob(f"drift:{MODEL}") == saved
    assert old._river is None  # it reloads them if it leads again
