"""The worker consumer's eager hand-off (``streams.consumer``): same semantics as Faust's, no tasks
when the callback does not suspend. The worker tests (``test_faults``, ``test_fleet``, the CLI's)
consume every event through it on Apache Kafka."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from faust.transport.consumer import Consumer as FaustConsumer
from kafka import KafkaProducer

from infra.kafka import ensure_topics
from infra.settings import load_settings
from streams import consumer
from streams.app import _faust_app

from . import backpressure_worker, dropped_fetch_worker

# faust-streaming 0.15.3's fetch loop, which streams.consumer.Consumer._drain_messages copies
FAUST_DRAIN_SHA256 = "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417"


def test_the_copied_fetch_loop_is_the_pinned_faust_one() -> None:
    src = inspect.getsource(FaustConsumer._drain_messages)
    assert hashlib.sha256(src.encode()).hexdigest() == FAUST_DRAIN_SHA256, (
        "faust-streaming's Consumer._drain_messages changed: port the change into "
        "streams/consumer.py (keep the eager hand-off), then update FAUST_DRAIN_SHA256"
    )


def test_the_worker_app_consumes_with_the_eager_consumer() -> None:
    app = _faust_app(load_settings(None, kafka={"bootstrap": "127.0.0.1:9"}), None)
    assert type(app.consumer) is consumer.Consumer


async def _start(coro: Any) -> asyncio.Future[Any] | None:
    """What the fetch loop does: the first step eagerly, the rest (if any) in a task."""
    try:
        first = coro.send(None)
    except StopIteration:
        return None
    return asyncio.ensure_future(consumer.resume(coro, first))


async def test_a_hand_off_that_does_not_suspend_needs_no_task() -> None:
    q: asyncio.Queue[int] = asyncio.Queue(maxsize=10)
    lock = asyncio.Lock()

    async def on_message(m: int) -> None:
        async with lock:
            await q.put(m)

    tasks = len(asyncio.all_tasks())
    for i in range(5):
        assert await _start(on_message(i)) is None
    assert len(asyncio.all_tasks()) == tasks
    assert [q.get_nowait() for _ in range(5)] == [0, 1, 2, 3, 4]


async def test_a_hand_off_on_a_full_queue_waits_and_then_completes_with_its_value() -> None:
    q: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    q.put_nowait(-1)

    async def on_message(m: int) -> int:
        await q.put(m)
        return m * 10

    task = await _start(on_message(7))
    assert task is not None
    await asyncio.sleep(0.01)
    assert not task.done()  # still blocked: backpressure holds
    assert q.get_nowait() == -1
    assert await asyncio.wait_for(task, 5) == 70
    assert q.get_nowait() == 7


async def test_a_cancelled_hand_off_is_cancelled_inside_the_callback() -> None:
    q: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    q.put_nowait(-1)
    seen: list[str] = []

    async def on_message(m: int) -> None:
        try:
            await q.put(m)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    task = await _start(on_message(1))
    assert task is not None
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]
    assert q.qsize() == 1  # the message was not put


async def test_an_error_of_what_the_callback_awaits_reaches_the_callback() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def on_message() -> str:
        try:
            await fut
        except KeyError as exc:
            return f"handled {exc.args[0]}"
        return "no error"

    task = await _start(on_message())
    assert task is not None
    fut.set_exception(KeyError("x"))
    assert await asyncio.wait_for(task, 5) == "handled x"


async def test_a_callback_that_fails_at_once_raises_at_once() -> None:
    async def on_message() -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        await _start(on_message())


def _run_worker(script: Path, bootstrap: str, topic: str, n: int, tmp_path: Path, timeout: float) -> dict[str, Any]:
    """Write ``0..n-1`` to a new one-partition ``topic``, run a test worker ``script`` over it in
    its own process, and return what it wrote once its agent had ``n`` messages."""
    ensure_topics(bootstrap, [topic], partitions=1)
    prod = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for i in range(n):
        prod.send(topic, str(i).encode())
    prod.flush()
    prod.close()
    out = tmp_path / "out.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    try:
        proc = subprocess.run(
            [sys.executable, str(script), bootstrap, topic, topic, str(n), str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the agent never had all {n} messages within {timeout:.0f} s")
    assert out.exists(), f"the worker stopped before it had {n} messages (rc {proc.returncode}): {proc.stderr[-2000:]}"
    got: dict[str, Any] = orjson.loads(out.read_bytes())
    return got


@pytest.mark.integration
def test_a_real_worker_behind_a_full_stream_buffer_loses_and_reorders_nothing(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """Through Apache Kafka and a Faust worker built by ``_faust_app``: with a stream buffer of a
    few messages and an agent slow at first, hand-offs must suspend (the slow path), the fetch
    loop must wait for room, and every message still reaches the agent once, in offset order."""
    n = 300
    got = _run_worker(Path(backpressure_worker.__file__), kafka_bootstrap, f"bp-{unique}", n, tmp_path, 120)
    assert got["values"] == [str(i) for i in range(n)]
    assert got["resumed"] > 0, "no hand-off met a full buffer: the slow path was not exercised"
    # backpressure: the fetch loop waits for room, so it is never more than the buffer ahead of
    # the agent (a hand-off that did not wait lets it run through the whole topic at once)
    assert got["ahead"] <= backpressure_worker.BUFFER + 1, got["ahead"]


@pytest.mark.integration
def test_records_a_suspended_flow_dropped_are_read_again_on_a_partition_never_committed(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """Through Apache Kafka and a Faust worker built by ``_faust_app``: its first fetch comes back
    while the flow is suspended (a fetch in flight across a rebalance), so Faust drops it and seeks
    back to the committed offsets. Nothing is committed on the topic yet; every message must still
    reach the agent, once, in order (aiokafka alone leaves the position past the dropped ones, and
    the agent waits forever)."""
    n = 50
    got = _run_worker(Path(dropped_fetch_worker.__file__), kafka_bootstrap, f"df-{unique}", n, tmp_path, 60)
    assert got["dropped"] > 0, "no fetch came back while the flow was suspended: the drop was not exercised"
    assert got["values"] == [str(i) for i in range(n)]


class _Thread:
    """The consumer thread's two seeks, as aiokafka answers them: only offsets above 0 move."""

    def __init__(self, committed: dict[Any, int | None]) -> None:
        self.committed, self.to_beginning = committed, []  # type: list[Any]

    async def seek_to_committed(self) -> dict[Any, int | None]:
        return dict(self.committed)

    async def seek_to_beginning(self, *tps: Any) -> None:
        self.to_beginning.extend(tps)


@pytest.mark.parametrize("reset, sought", [("earliest", ["p-none", "p-minus", "p-zero"]), ("latest", [])])
async def test_a_partition_never_committed_is_sought_to_its_beginning_with_the_others(
    reset: str, sought: list[str]
) -> None:
    """What a fetch returned while the flow was suspended is dropped and fetched again from the
    committed offsets; a partition with no commit has to go back to its first offset too, or the
    records dropped there are never read (the worker's reset policy is earliest)."""
    app = _faust_app(load_settings(None, kafka={"bootstrap": "127.0.0.1:9"}), None)
    app.conf.consumer_auto_offset_reset = reset
    c = app.consumer
    thread = _Thread({"p-none": None, "p-minus": -1, "p-zero": 0, "p-seven": 7})
    c._thread = thread  # type: ignore[attr-defined]
    assert await c.seek_to_committed() == thread.committed
    assert sorted(thread.to_beginning) == sorted(sought)
