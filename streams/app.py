"""The Faust app: topics, agents and timers, wired to the :class:`~streams.runtime.Runtime`.

This module only moves bytes between Kafka and the runtime: each agent turns the Faust events it
reads into plain :class:`~streams.runtime.Message` values and calls the runtime's handler; the
runtime sends through :class:`FaustOutbox`. Topic names are ``<prefix>.<name>``.

Nothing happens at import: :func:`build_worker` builds the app. State that must survive
rebalances lives in Redis, not in Faust tables (faust-streaming#385, #432: windowed tables
that never expire and recoveries that hang), so the app runs with ``store="memory://"``.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.errors import IllegalStateError, MessageSizeTooLargeError, RecordTooLargeError

from infra.settings import Settings
from streams import consumer
from streams.compose import Components, build
from streams.learning import load_newest_sync
from streams.runtime import TOPICS, Message, PublishError, RawPipeline, Record, RecordRefused, Runtime
from streams.supervise import fatal_on_error, shutdown_deadline

__all__ = ["TOPICS", "FaustOutbox", "Worker", "build_worker"]

logger = logging.getLogger(__name__)


class FaustOutbox:
    """The runtime's :class:`~streams.runtime.Outbox` on the app's topics."""

    def __init__(self, app: faust.App, topics: dict[str, faust.TopicT]) -> None:
        self.app = app
        self.topics = topics
        self.names = {name: t.get_topic_name() for name, t in topics.items()}

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        """One record, returning once the broker acknowledged it (raising if it refused it): what
        follows a send (detection saving its state, an incident thread moving on) may rely on it."""
        [err] = await self.send_many([(topic, key, value)])
        if err is not None:
            raise PublishError(f"{self.names[topic]}: {type(err).__name__}: {err}") from err

    async def send_many(self, records: Sequence[Record]) -> list[BaseException | None]:
        """A batch's records through the app's producer, in one record batch per partition.

        Each record sent on its own (even without a Faust ``Topic.send``, whose futures, sensors
        and callbacks were ~7% of the worker's CPU) costs a future and a trip through aiokafka's
        accumulator, and was ~4% of the worker's time on the event loop. Here the records are
        partitioned by aiokafka's own partitioner (by key, as ``send`` would),
        appended to record batches (``create_batch``) and each batch is queued whole
        (``send_batch``): one future per batch of a partition. A record that may not fit in a
        request goes on its own, so that the producer refuses it alone
        (``MessageSizeTooLargeError``); a batch the broker refuses as too large is sent again
        record by record, so only the record at fault is refused.
        """
        producer = getattr(self.app.producer, "_producer", None)
        if not isinstance(producer, AIOKafkaProducer) or producer._txn_manager is not None:
            return await self._send_each(records, range(len(records)))
        out: list[BaseException | None] = [None] * len(records)
        limit = producer._max_request_size - BATCH_OVERHEAD
        try:
            for name in {self.names[t] for t, _, _ in records}:
                await producer.client._wait_on_metadata(name)
        except Exception:  # no metadata (broker away): what send does with it, record by record
            return await self._send_each(records, range(len(records)))
        by_partition: dict[tuple[str, int], list[int]] = {}
        for i, (topic, key, value) in enumerate(records):
            name = self.names[topic]
            part = producer._partition(name, None, key, value, key, value)  # aiokafka's own choice
            by_partition.setdefault((name, part), []).append(i)
        # (record indexes, the future of their delivery); in each partition in the records' order
        pending: list[tuple[list[int], Awaitable[Any]]] = []
        for (name, part), idxs in by_partition.items():
            batch = producer.create_batch()
            members: list[int] = []
            for i in idxs:
                _, key, value = records[i]
                if len(value) + len(key or b"") > limit:  # alone, after what came before it
                    if members:
                        pending.append((members, await producer.send_batch(batch, name, partition=part)))
                        batch, members = producer.create_batch(), []
                    try:
                        pending.append(([i], await producer.send(name, value, key=key, partition=part)))
                    except Exception as exc:
                        out[i] = _refused(exc)
                    continue
                if batch.append(timestamp=None, key=key, value=value) is None:  # full: queue it, start the next
                    pending.append((members, await producer.send_batch(batch, name, partition=part)))
                    batch, members = producer.create_batch(), []
                    batch.append(timestamp=None, key=key, value=value)  # an empty batch takes any record
                members.append(i)
            if members:
                pending.append((members, await producer.send_batch(batch, name, partition=part)))
        acks = await asyncio.gather(*(f for _, f in pending), return_exceptions=True)
        again: list[int] = []
        for (members, _), ack in zip(pending, acks, strict=True):
            if not isinstance(ack, BaseException):
                continue
            err = _refused(ack)
            if len(members) > 1 and isinstance(err, RecordRefused):
                again.extend(members)  # which record is too large for the broker: each on its own
            else:
                for i in members:
                    out[i] = err
        if again:
            again.sort()
            for i, err2 in zip(again, await self._send_each(records, again), strict=True):
                out[i] = err2
        return out

    async def _send_each(self, records: Sequence[Record], idxs: Sequence[int]) -> list[BaseException | None]:
        """``records[i]`` for each of ``idxs``, each record on its own; one entry per index."""
        producer = self.app.producer
        out: list[BaseException | None] = [None] * len(idxs)
        pending: list[tuple[int, Awaitable[Any]]] = []
        for j, i in enumerate(idxs):
            topic, key, value = records[i]
            try:
                pending.append((j, await producer.send(self.names[topic], key, value, None, None, None)))
            except Exception as exc:  # refused before it is queued, e.g. larger than max_request_size
                out[j] = _refused(exc)
        acks = await asyncio.gather(*(f for _, f in pending), return_exceptions=True)
        for (j, _), ack in zip(pending, acks, strict=True):
            if isinstance(ack, BaseException):
                out[j] = _refused(ack)
        return out


#: bytes a request needs besides one record's key and value (batch and request headers, with room)
BATCH_OVERHEAD = 1024

#: what the broker (or the producer before it) refuses for good: sending it again is futile
_TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError)


def _refused(exc: BaseException) -> BaseException:
    """A too-large record as :class:`~streams.runtime.RecordRefused`; any other error as it is
    (an outage: the runtime sends the record again)."""
    cause: BaseException | None = exc
    while cause is not None:  # Faust wraps the producer's error in ProducerSendError
        if isinstance(cause, _TOO_LARGE):
            err = RecordRefused(f"{type(cause).__name__}: {cause}")
            err.__cause__ = exc
            return err
        cause = cause.__cause__
    return exc


def _message(ev: Any) -> Message:
    m = ev.message
    value = m.value if isinstance(m.value, bytes) else str(m.value).encode()
    key = m.key if isinstance(m.key, bytes) or m.key is None else str(m.key).encode()
    return Message(value=value, key=key, topic=m.topic, partition=m.partition, offset=m.offset)


def _messages(events: Sequence[Any]) -> list[Message]:
    return [_message(ev) for ev in events]


def _release(events: Sequence[Any]) -> None:
    """Drop the reference the pipeline held on each event: the last one marks its offset
    committable in the consumer (``Message.ack`` counts references)."""
    for ev in events:
        ev.ack()


@dataclass
class Worker:
    app: faust.App
    runtime: Runtime
    components: Components

    def load_models(self) -> None:
        """Load spaCy and the fleet's newest sentiment snapshot once, before the worker consumes (no
        loop yet), so its first batch is scored with the same model as the rest of the fleet."""
        c = self.components
        c.stage.load_models()
        if c.learner is not None and c.settings.redis.url:
            snap = load_newest_sync(c.settings.redis.url, c.settings.redis.key_prefix)
            if snap is not None:
                c.learner.install(snap)
                logger.info("scoring with sentiment snapshot v%d (%s)", snap.version, snap.model.version)
            else:
                logger.info("no sentiment snapshot yet: scoring with the cold model until the first one")
        c.stage.freeze_heap()


def _fetch_wait_from_app() -> None:
    """Let each app set its worker consumer's ``fetch_max_wait_ms`` (``kafka.fetch_max_wait_ms``).

    Faust builds the aiokafka consumer with a fixed 1,500 ms and no setting for it. aiokafka keeps
    the value until ``start()`` hands it to its fetcher, so it is set on the consumer just built;
    an app without the attribute keeps Faust's value. aiokafka is pinned with faust-streaming,
    and ``tests/streams/test_app.py`` checks the fetcher gets the value."""
    from faust.transport.drivers import aiokafka as driver

    cls = driver.AIOKafkaConsumerThread
    if getattr(cls, "_repmon_fetch_wait", False):
        return
    build = cls._create_worker_consumer

    def create(self: Any, transport: Any) -> Any:
        consumer = build(self, transport)
        wait = getattr(self.app, "repmon_fetch_max_wait_ms", None)
        if wait is not None:
            consumer._fetch_max_wait_ms = int(wait)
        return consumer

    cls._create_worker_consumer = create  # type: ignore[method-assign]
    cls._repmon_fetch_wait = True  # type: ignore[attr-defined]


def _faust_app(s: Settings, web_port: int | None) -> faust.App:
    brokers = [f"kafka://{hp.strip()}" for hp in s.kafka.bootstrap.split(",")]
    # Faust keeps a per-app data dir even with memory stores: keep it out of the cwd
    datadir = Path(s.worker.data_dir or Path(tempfile.gettempdir()) / "repmon-faust") / s.app_id
    datadir.mkdir(parents=True, exist_ok=True)
    _fetch_wait_from_app()
    consumer.install()  # the fetch loop's per-message hand-off without four tasks (streams.consumer)
    app = faust.App(
        s.app_id,
        broker=brokers,
        store="memory://",
        datadir=str(datadir),
        topic_partitions=s.kafka.partitions,
        topic_replication_factor=s.kafka.replication,
        processing_guarantee=s.kafka.processing_guarantee,
        consumer_auto_offset_reset="earliest",
        web_enabled=web_port is not None,
        web_port=web_port or 6066,
        web_bind=s.worker.web_bind,
        web_host=s.worker.web_bind,
        producer_linger_ms=5,
        broker_session_timeout=s.kafka.session_timeout_seconds,
        broker_heartbeat_interval=max(1.0, s.kafka.session_timeout_seconds / 10),
        broker_commit_every=1000,
        broker_commit_interval=1.0,
    )
    app.repmon_fetch_max_wait_ms = s.kafka.fetch_max_wait_ms  # type: ignore[attr-defined]
    return app


def build_worker(
    settings: Settings,
    *,
    redis_url: str | None = None,
    web_port: int | None = None,
    metrics_port: int | None = None,
    metrics_addr: str = "127.0.0.1",
    raw_partitions: int | None = None,
) -> Worker:
    """The Faust app of one worker: two agents and its timers over one :class:`Runtime`."""
    s = settings
    components = build(s, redis_url=redis_url, raw_partitions=raw_partitions)
    if metrics_port is not None:
        components.metrics.serve(metrics_port, metrics_addr)
    app = _faust_app(s, web_port)
    topics = {
        name: app.topic(s.topic(name), key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw")
        for name in TOPICS
    }
    rt = Runtime(components, FaustOutbox(app, topics))
    from infra.kafka import CommittedOffsets, EndOffsets

    commits = CommittedOffsets(s.kafka.bootstrap, s.app_id, s.topic("raw"))
    offset_clients: list[CommittedOffsets | EndOffsets] = [commits]

    async def committed(partitions: list[int]) -> dict[int, int | None]:
        return await asyncio.to_thread(commits, partitions)

    rt.committed = committed
    if s.kafka.verify_idle_offsets and components.windows.partitions:
        ends = EndOffsets(s.kafka.bootstrap, s.topic("raw"), components.windows.partitions)
        offset_clients.append(ends)

        async def end_offsets() -> dict[int, int]:
            return await asyncio.to_thread(ends)

        components.detection.end_offsets = end_offsets

    @app.agent(topics["raw"], name="enrich")
    @fatal_on_error("enrich")
    async def enrich_agent(stream: faust.StreamT[bytes]) -> None:
        # take_events (faust-streaming) keeps each message's partition and offset, and acks a
        # batch's events when the loop asks for the next batch. The pipeline is still writing the
        # batch then, so each message holds one more reference, released when its writes are
        # acknowledged: an offset becomes committable only once its outputs are out.
        pipe = RawPipeline(rt)
        batches = stream.take_events(s.nlp.batch_size, within=s.nlp.batch_within_seconds)  # type: ignore[attr-defined]
        try:
            async for events in batches:
                for ev in events:
                    ev.message.incref()
                await pipe.submit(_messages(events), partial(_release, events))
            await pipe.flush()
        finally:
            await pipe.cancel()

    @app.agent(topics["incidents"], name="dispatch")
    @fatal_on_error("dispatch")
    async def dispatch_agent(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await rt.on_incident(_message(event))

    @app.timer(interval=1.0)
    async def partitions_timer() -> None:
        # which raw partitions this worker holds, and how far the broker has them: the high-water
        # mark comes with every fetch response (no extra request; works on tansu too) and is in
        # the same offsets as the group's commits
        raw = topics["raw"].get_topic_name()
        held: dict[int, int] = {}
        lags: dict[tuple[str, int], int] = {}
        for tp in app.consumer.assignment():
            # a rebalance can take the partition away at any await here (aiokafka then asserts
            # "Partition is not assigned"): what is no longer held is simply not reported; an
            # error escaping a timer would crash the whole worker
            try:
                hw = app.consumer.highwater(tp)
                if hw is None:  # not fetched yet: a raw partition holds the watermark until it is
                    continue
                pos = await app.consumer.position(tp)
            except (AssertionError, IllegalStateError):
                continue
            if pos is not None:
                lags[(tp.topic, tp.partition)] = max(0, int(hw) - int(pos))
            if tp.topic == raw:
                held[tp.partition] = int(hw)
        rt.metrics.set_lag(lags)
        try:
            await rt.report_partitions(held)
        except Exception:
            logger.exception("partition report failed; the watermark waits for the next one")

    @app.timer(interval=5.0)
    async def broker_probe() -> None:
        # a metadata request to the brokers the producer knows: the consumer and producer retry on
        # their own and say nothing while the broker is gone, so this puts the outage in /metrics
        producer = getattr(app.producer, "_producer", None)
        if producer is not None:
            await rt.probe("kafka", producer.client.fetch_all_metadata)

    @app.timer(interval=5.0)
    async def redis_probe() -> None:
        # the counting call retries an outage without a word; this puts it in /metrics and /healthz
        if components.redis is not None:
            await rt.probe("redis", components.redis.ping)

    @app.timer(interval=0.5, on_leader=True)
    async def detect_timer() -> None:
        await rt.detect_tick()

    @app.timer(interval=1.0)
    async def flush_alerts() -> None:
        await rt.flush_alerts()

    learner = components.learner
    assert learner is not None  # built with Redis

    @app.timer(interval=0.5)
    async def learner_timer() -> None:
        # every worker: the lease holder learns the labels topic and publishes snapshots; the
        # others only renew their claim (one Redis call)
        await learner.step()

    @app.timer(interval=s.sentiment.refresh_seconds)
    async def model_refresh_timer() -> None:
        await learner.refresh()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def on_shutdown(app: faust.App, **kwargs: Any) -> None:
        shutdown_deadline()  # SIGTERM always stops the worker, even if a stop step hangs
        await rt.shutdown()
        for client in offset_clients:
            await asyncio.to_thread(client.close)

    return Worker(app, rt, components)
