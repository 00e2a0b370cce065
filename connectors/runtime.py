"""The connector runtime: every ``[[sources]]`` entry in one asyncio process (``repmon connect``).

One task per source runs its rounds (:meth:`~connectors.source.Source.fetch`). For every batch:

1. ids already delivered are dropped (the source's set in Redis, and repeats inside the batch);
2. the rest go through the one :class:`SinkWriter`, which group-commits batches of every source
   to Kafka off the event loop (one producer, acks=all, every record checked);
3. only once the broker acknowledged them are the ids and the cursor written to Redis in one
   transaction. A crash between 2 and 3 re-sends records with the same event ids (downstream
   dedupes them); a crash before 2 loses nothing, because the cursor had not moved.

A :class:`~connectors.source.SourceError` stops that source with one line (state ``stopped``) and
the others keep running; :class:`~connectors.source.RetryLater`, network errors and a broker
that did not acknowledge make the source wait (``Retry-After`` when the platform said, else an
exponential backoff) and try again. Push kinds are served on one aiohttp server
(``connect.listen``), ``POST /hooks/<source name>``.

Metrics per source (Prometheus, ``connect.metrics_port``): fetched, sent, duplicates, malformed,
errors, lag behind the source, state; and the event loop's longest block.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from connectors.base import DeliveryError, Malformed, Sink
from connectors.source import Batch, Entry, RetryLater, Source, SourceError, SourceState
from infra.health import dependency_health, probe

__all__ = ["CursorStore", "LoopMonitor", "Runtime", "SinkWriter", "SourceMetrics"]

logger = logging.getLogger(__name__)


class SourceMetrics:
    """Per-source counters (label ``source`` = the configured name); one registry per runtime."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        lbl = ["source", "kind"]
        self.fetched = Counter("repmon_source_fetched", "Items read from the platform.", lbl, registry=r)
        self.sent = Counter("repmon_source_sent", "Records acknowledged by Kafka.", lbl, registry=r)
        self.duplicates = Counter("repmon_source_duplicates", "Items already delivered, dropped.", lbl, registry=r)
        self.malformed = Counter("repmon_source_malformed", "Items sent to be dead-lettered.", lbl, registry=r)
        self.errors = Counter("repmon_source_errors", "Failed rounds, by kind of error.", [*lbl, "error"], registry=r)
        self.lag = Gauge("repmon_source_lag_seconds", "Wall clock minus the newest item's time.", lbl, registry=r)
        self.up = Gauge("repmon_source_up", "1 while the source runs, 0 once stopped.", lbl, registry=r)
        self.loop_block = Gauge("repmon_connect_loop_block_seconds", "Longest event-loop block seen.", registry=r)
        self.dependency_up = Gauge(
            "repmon_dependency_up", "1 while the dependency answers, 0 during an outage.", ["dependency"], registry=r
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, source: str, kind: str) -> float:
        got = self.registry.get_sample_value(name, {"source": source, "kind": kind})
        return got or 0.0


class CursorStore:
    """Cursor (JSON) and delivered ids (a sorted set by time) per source, in Redis."""

    def __init__(self, client: Any, prefix: str, *, keep_seconds: int = 14 * 86400, keep_max: int = 200_000) -> None:
        self.client = client
        self.prefix = prefix
        self.keep_seconds = keep_seconds
        self.keep_max = keep_max

    def _k(self, name: str, what: str) -> str:
        return f"{self.prefix}:src:{name}:{what}"

    async def load(self, name: str) -> SourceState:
        raw = await self.client.get(self._k(name, "cursor"))
        return SourceState(cursor=orjson.loads(raw) if raw else {})

    async def known(self, name: str, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        scores = await self.client.zmscore(self._k(name, "seen"), list(keys))
        return {k for k, s in zip(keys, scores, strict=True) if s is not None}

    async def commit(self, name: str, keys: Sequence[str], cursor: dict[str, Any] | None) -> None:
        now = time.time()
        seen = self._k(name, "seen")
        pipe = self.client.pipeline(transaction=True)
        if keys:
            pipe.zadd(seen, dict.fromkeys(keys, now))
            pipe.zremrangebyscore(seen, "-inf", now - self.keep_seconds)
            pipe.zremrangebyrank(seen, 0, -self.keep_max - 1)
        if cursor is not None:
            pipe.set(self._k(name, "cursor"), orjson.dumps(cursor, default=str))
        await pipe.execute()


class SinkWriter:
    """Group commit: batches of every source share one producer and one flush, off the loop."""

    def __init__(self, sink: Sink, *, ack_timeout: float = 30.0) -> None:
        self.sink = sink
        self.ack_timeout = ack_timeout
        self._queue: asyncio.Queue[tuple[list[Entry], asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def send(self, entries: list[Entry]) -> None:
        """Return once the broker acknowledged every entry; raise :class:`DeliveryError` otherwise."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="sink-writer")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((entries, fut))
        await fut

    def _produce(self, groups: list[list[Entry]]) -> None:
        for entries in groups:
            for e in entries:
                self.sink.send_any(e.item)
        self.sink.flush(self.ack_timeout)

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            work = [first]
            while not self._queue.empty():
                work.append(self._queue.get_nowait())
            try:
                await asyncio.to_thread(self._produce, [w[0] for w in work])
            except Exception as exc:  # DeliveryError, or a sink that broke: every waiter learns it
                for _, fut in work:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                for _, fut in work:
                    if not fut.done():
                        fut.set_result(None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class LoopMonitor:
    """The longest time the event loop did not get to run a 10 ms timer (blocking work on it)."""

    def __init__(self, interval: float = 0.01, on_max: Callable[[float], None] | None = None) -> None:
        self.interval = interval
        self.max_block = 0.0
        self.on_max = on_max  # told of every new longest block, so /metrics shows it while running
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(self.interval)
            block = loop.time() - t0 - self.interval
            if block > self.max_block:
                self.max_block = block
                if self.on_max is not None:
                    self.on_max(block)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Runtime:
    """Runs sources until ``stop`` is set (or each for ``rounds`` rounds)."""

    def __init__(
        self,
        sources: Sequence[Source],
        sink: Sink,
        store: CursorStore,
        *,
        metrics: SourceMetrics | None = None,
        max_retry_seconds: float = 900.0,
        first_retry_seconds: float = 1.0,
        ack_timeout: float = 30.0,
        grace_seconds: float = 5.0,
    ) -> None:
        self.grace_seconds = grace_seconds
        self.sources = list(sources)
        self.store = store
        self.writer = SinkWriter(sink, ack_timeout=ack_timeout)
        self.metrics = metrics or SourceMetrics()
        self.max_retry_seconds = max_retry_seconds
        self.first_retry_seconds = first_retry_seconds
        self.status: dict[str, str] = {s.spec.name: "starting" for s in self.sources}
        self.monitor = LoopMonitor(on_max=self.metrics.loop_block.set)
        self.stop_event = asyncio.Event()
        self._unreachable: set[str] = set()

    def _m(self, src: Source) -> tuple[str, str]:
        return (src.spec.name, src.kind)

    async def deliver(self, src: Source, state: SourceState, batch: Batch) -> dict[str, int]:
        """Dedupe, produce, commit one batch; the counts of what happened."""
        lbl = self._m(src)
        self.metrics.fetched.labels(*lbl).inc(len(batch.entries))
        fresh: list[Entry] = []
        in_batch: set[str] = set()
        for e in batch.entries:
            if e.key not in in_batch:
                in_batch.add(e.key)
                fresh.append(e)
        known = await self.store.known(src.spec.name, [e.key for e in fresh])
        fresh = [e for e in fresh if e.key not in known]
        dups = len(batch.entries) - len(fresh)
        if fresh:
            await self.writer.send(fresh)
        await self.store.commit(src.spec.name, [e.key for e in fresh], batch.cursor)
        if batch.cursor is not None:
            state.cursor = batch.cursor
        bad = sum(isinstance(e.item, Malformed) for e in fresh)
        self.metrics.sent.labels(*lbl).inc(len(fresh))
        self.metrics.duplicates.labels(*lbl).inc(dups)
        self.metrics.malformed.labels(*lbl).inc(bad)
        newest = max((e.occurred_at for e in fresh if e.occurred_at is not None), default=None)
        if newest is not None:
            self.metrics.lag.labels(*lbl).set(max(0.0, (datetime.now(UTC) - newest).total_seconds()))
        return {"accepted": len(fresh) - bad, "invalid": bad, "duplicates": dups}

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), timeout=seconds)

    async def run_source(self, src: Source, rounds: int | None = None) -> None:
        name, lbl = src.spec.name, self._m(src)
        self.metrics.up.labels(*lbl).set(1)
        failures = 0
        try:
            state = await self.store.load(name)
            await src.open(state)
            self.status[name] = "running"
            done = 0
            while not self.stop_event.is_set():
                delay = src.spec.poll_seconds if src.mode == "pull" else self.first_retry_seconds
                try:
                    async for batch in src.fetch(state):
                        try:
                            outcome = await self.deliver(src, state, batch)
                        except BaseException as exc:
                            if batch.done is not None and not batch.done.done():
                                batch.done.set_exception(exc if isinstance(exc, Exception) else RuntimeError("stopped"))
                            raise
                        if batch.done is not None and not batch.done.done():
                            batch.done.set_result(outcome)
                        if self.stop_event.is_set():
                            break
                    failures = 0
                except SourceError:
                    raise
                except (RetryLater, httpx.HTTPError, OSError, DeliveryError, TimeoutError) as exc:
                    failures += 1
                    err = type(exc).__name__
                    self.metrics.errors.labels(*lbl, err).inc()
                    wait = getattr(exc, "delay", None)
                    if wait is None:
                        wait = min(self.max_retry_seconds, self.first_retry_seconds * 2 ** min(failures - 1, 16))
                    logger.warning("source %s (%s): %s; trying again in %.0f s", name, src.kind, exc, wait)
                    delay = wait
                    self.status[name] = f"retrying: {exc}"
                except Exception as exc:  # a bug or an unexpected answer: keep the others going, retry
                    failures += 1
                    self.metrics.errors.labels(*lbl, type(exc).__name__).inc()
                    logger.exception("source %s (%s) failed a round", name, src.kind)
                    delay = min(self.max_retry_seconds, self.first_retry_seconds * 2 ** min(failures - 1, 16))
                    self.status[name] = f"retrying: {type(exc).__name__}: {exc}"
                else:
                    self.status[name] = "running"
                done += 1
                if rounds is not None and done >= rounds:
                    break
                await self._sleep(delay)
            if self.status[name] == "running":
                self.status[name] = "done"
        except SourceError as exc:
            self.status[name] = f"stopped: {exc}"
            src.stopped(str(exc))
            self.metrics.errors.labels(*lbl, "SourceError").inc()
            logger.error("source %s (%s) stopped: %s", name, src.kind, exc)
        finally:
            self.metrics.up.labels(*lbl).set(0)
            with contextlib.suppress(Exception):
                await src.close()

    async def run(self, rounds: int | None = None) -> dict[str, str]:
        """Run every source; return each one's final state (``done``, ``stopped: <why>``, ...)."""
        self.monitor.start()
        tasks = [asyncio.create_task(self.run_source(s, rounds), name=f"source-{s.spec.name}") for s in self.sources]
        stopping = asyncio.create_task(self.stop_event.wait())
        try:
            pending: set[asyncio.Task[Any]] = set(tasks)
            while pending and not self.stop_event.is_set():
                _, pending = await asyncio.wait(pending | {stopping}, return_when=asyncio.FIRST_COMPLETED)
                pending.discard(stopping)
            if pending:
                # stream and push rounds wait on the network: give them a moment, then cancel
                await asyncio.wait(pending, timeout=self.grace_seconds)
                for t in pending:
                    t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for s in self.sources:
                if self.status[s.spec.name] in ("running", "starting"):
                    self.status[s.spec.name] = "done"
        finally:
            stopping.cancel()
            self.metrics.loop_block.set(self.monitor.max_block)
            await self.monitor.stop()
            await self.writer.close()
        return dict(self.status)

    def stop(self) -> None:
        self.stop_event.set()

    def health(self) -> tuple[bool, dict[str, Any]]:
        """What ``/healthz`` answers: ok while Kafka and Redis answered their last probe
        (:meth:`probe`) and some source still runs; every source's state beside it, so a stopped
        one (a revoked token) is visible while the others keep the process useful.

        >>> rt = Runtime([], sink=None, store=None)  # type: ignore[arg-type]
        >>> rt.metrics.dependency_up.labels("kafka").set(0)
        >>> rt.health()
        (False, {'status': 'outage', 'dependencies': {'kafka': 'down'}, 'sources': {}})
        """
        ok, doc = dependency_health(self.metrics.dependency_up)
        states = dict(self.status)
        if states and all(v.startswith("stopped") for v in states.values()):
            ok, doc["status"] = False, "stopped"
        return ok, {**doc, "sources": states}

    async def probe(self, dependency: str, call: Callable[[], Awaitable[object]], timeout: float = 5.0) -> bool:
        """Whether ``dependency`` answers ``call`` within ``timeout``, into ``repmon_dependency_up``
        (a change is logged once). Never raises: the sources wait on an outage on their own."""
        return await probe(self.metrics.dependency_up, self._unreachable, dependency, call, timeout)

    async def probe_every(self, probes: dict[str, Callable[[], Awaitable[object]]], seconds: float = 5.0) -> None:
        """Run :meth:`probe` on each dependency every ``seconds`` until stopped."""
        while not self.stop_event.is_set():
            await asyncio.gather(*(self.probe(name, call) for name, call in probes.items()))
            await self._sleep(seconds)
