"""One sentiment model for the fleet: one learner, versioned snapshots in Redis, every worker scores with the newest.

A worker that learned only from its own partitions scored the same text differently from its
neighbours, and a restart forgot what the others had learned. Here:

- **every worker** scores with the model of the newest snapshot, and turns each review it enriches
  into a training example on the labels topic, beside the human corrections (the scoring model
  itself never learns, so two workers with the same snapshot give the same scores);
- **one worker learns**: the holder of the learner lease in Redis (``SET NX PX``, renewed every
  step) reads every partition of the labels topic with a consumer of its own, outside the
  consumer group, and learns on a model of its own;
- it **publishes a snapshot** every ``sentiment.snapshot_interval_seconds`` when it learned
  something: the model's JSON and the labels-topic offsets learned up to, in one document,
  numbered by ``INCR`` (the number is the ``model_version`` every event scored with it records).
  The write is fenced by the lease in one Lua script: a learner that lost its lease (paused,
  cut off) cannot publish over the next owner's lineage;
- **the next owner** (after a crash, a rolling or a full restart) loads the newest snapshot and
  positions its consumer at the snapshot's offsets: every label is in the lineage exactly once;
  what the old owner learned after its last snapshot is read from Kafka again, not lost.

Only JSON is stored and read back (the model is its weights and counts, see
:meth:`models.sentiment.SentimentModel.to_dict`): nothing is unpickled. No file is shared.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import redis
import redis.asyncio as aredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

from infra.kafka import partition_count
from infra.settings import Settings
from models.sentiment import LABELS, SentimentModel
from streams.enrich import EnrichStage, Example
from streams.metrics import Metrics

if TYPE_CHECKING:
    from streams.runtime import Message

__all__ = ["FleetLearner", "ModelSnapshots", "Snapshot", "decode_snapshot", "load_newest_sync", "parse_example"]

logger = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1
#: Errors that mean "Redis is not there right now": the learner waits for the next step.
OUTAGES = (ConnectionError, TimeoutError, BusyLoadingError)
#: The runtime's dead-letter sender: (stage, reason, error kind, the original message).
DeadLetterFn = Callable[[str, str, str, "Message"], Awaitable[None]]

# Renew the lease we hold, or take it if nobody holds it. 1: ours now; 0: someone else's.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Publish a snapshot only while holding the lease: number it, store it, drop the oldest kept.
_PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local v = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[3] .. v, ARGV[2])
local old = v - tonumber(ARGV[3])
if old > 0 then redis.call('DEL', KEYS[3] .. old) end
return v
"""


def parse_example(value: bytes) -> Example:
    """A labels-topic record: ``{"text", "label"}`` (a human correction) plus, for reviews the
    workers publish, ``lang`` and ``event_id``. Raises ``ValueError`` saying what is wrong.

    >>> parse_example(b'{"text": "late again", "label": "negative"}')
    Example(text='late again', label='negative', lang=None, event_id=None)
    >>> parse_example(b'{"text": "x", "label": "meh"}')
    Traceback (most recent call last):
    ...
    ValueError: label must be negative, neutral or positive, got 'meh'
    """
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise ValueError('a label is a JSON object with a "text" string and a "label"')
    label = data.get("label")
    if label not in LABELS:
        raise ValueError(f"label must be negative, neutral or positive, got {label!r}")
    lang, event_id = data.get("lang"), data.get("event_id")
    return Example(
        data["text"],
        str(label),
        lang if isinstance(lang, str) and lang else None,
        event_id if isinstance(event_id, str) else None,
    )


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    model: SentimentModel
    offsets: dict[int, int]  # labels partition -> next offset to learn
    topic: str


def decode_snapshot(version: int, raw: bytes) -> Snapshot:
    """A stored snapshot (JSON only), or ``ValueError`` naming what is wrong with it."""
    try:
        doc = orjson.loads(raw)
        if not isinstance(doc, dict) or doc.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"not a repmon model snapshot of format {SNAPSHOT_FORMAT}")
        model = SentimentModel.from_dict(doc["model"])
        offsets = {int(p): int(o) for p, o in doc["offsets"].items()}
        topic = str(doc["topic"])
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"model snapshot v{version} is unreadable ({type(exc).__name__}: {exc})") from None
    model.release = version
    return Snapshot(version, model, offsets, topic)


class ModelSnapshots:
    """The snapshots and the learner lease in Redis: ``{prefix}:sentiment:latest`` (the newest
    number), ``{prefix}:sentiment:snapshot:<N>`` (the documents, the newest ``keep``) and
    ``{prefix}:sentiment:owner`` (the lease)."""

    def __init__(self, r: aredis.Redis, prefix: str, keep: int = 3) -> None:
        self.r = r
        self.keep = keep
        self.k_owner, self.k_latest, self.k_snap = self.keys(prefix)
        self._acquire = r.register_script(_ACQUIRE)
        self._release = r.register_script(_RELEASE)
        self._publish = r.register_script(_PUBLISH)

    @staticmethod
    def keys(prefix: str) -> tuple[str, str, str]:
        return f"{prefix}:sentiment:owner", f"{prefix}:sentiment:latest", f"{prefix}:sentiment:snapshot:"

    async def latest(self) -> int | None:
        v = await self.r.get(self.k_latest)
        return int(v) if v is not None else None

    async def get(self, version: int) -> bytes | None:
        raw = await self.r.get(f"{self.k_snap}{version}")
        return raw.encode() if isinstance(raw, str) else raw

    async def acquire(self, token: str, ttl_seconds: float) -> bool:
        return bool(await self._acquire(keys=[self.k_owner], args=[token, int(ttl_seconds * 1000)]))

    async def release(self, token: str) -> None:
        await self._release(keys=[self.k_owner], args=[token])

    async def publish(self, token: str, doc: bytes) -> int | None:
        """The new snapshot's number, or None when ``token`` no longer holds the lease."""
        v = int(await self._publish(keys=[self.k_owner, self.k_latest, self.k_snap], args=[token, doc, self.keep]))
        return v if v > 0 else None


def load_newest_sync(url: str, prefix: str) -> Snapshot | None:
    """The newest readable snapshot, read before the worker's event loop runs (so its first batch
    is already scored with the fleet's model). Falls back to older kept versions if the newest is
    unreadable; None when there is none."""
    _, k_latest, k_snap = ModelSnapshots.keys(prefix)
    client = redis.Redis.from_url(url, socket_connect_timeout=10, socket_timeout=30)
    try:
        latest = client.get(k_latest)
        newest = int(latest) if latest is not None else 0
        for v in range(newest, 0, -1):
            raw = client.get(f"{k_snap}{v}")
            if raw is None:
                return None  # older versions were trimmed
            try:
                return decode_snapshot(v, raw.encode() if isinstance(raw, str) else raw)
            except ValueError as exc:
                logger.error("%s; trying the one before", exc)
        return None
    finally:
        client.close()


class FleetLearner:
    """On every worker: :meth:`refresh` loads newer snapshots to score with; :meth:`step` takes or
    renews the learner lease and, while held, learns the next labels and publishes snapshots.

    The NLP thread (``executor``) is the only one that touches a model: decoding, learning and
    encoding run there, never on the event loop.
    """

    def __init__(
        self,
        settings: Settings,
        stage: EnrichStage,
        executor: Executor,
        snapshots: ModelSnapshots,
        metrics: Metrics,
        *,
        consumer_factory: Callable[[], AIOKafkaConsumer] | None = None,
        max_batch: int = 1000,
    ) -> None:
        self.s = settings
        self.stage = stage
        self.executor = executor
        self.snaps = snapshots
        self.metrics = metrics
        self.topic = settings.topic("labels")
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.max_batch = max_batch
        self._consumer_factory = consumer_factory or self._new_consumer
        self.dead_letter: DeadLetterFn | None = None  # set by the runtime: bad labels go to the dead letters
        self.loaded: int | None = None  # the snapshot this worker scores with
        # owner only: the learning model, the offsets it has learned up to, labels since the last snapshot
        self.consumer: AIOKafkaConsumer | None = None
        self.model: SentimentModel | None = None
        self.offsets: dict[int, int] = {}
        self.unsaved = 0
        self._saved_at = 0.0
        self._lock = asyncio.Lock()  # a step, a snapshot and the stop never interleave

    @property
    def is_owner(self) -> bool:
        return self.consumer is not None

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.s.kafka.bootstrap,
            group_id=None,  # positioned from the snapshot, never from group commits
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # an offset past retention: from the oldest label kept
            client_id=f"{self.s.app_id}-learner",
        )

    async def _off_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # -- every worker: score with the newest snapshot ----------------------------------------
    def install(self, snap: Snapshot) -> None:
        """Score with ``snap`` from now on (on the NLP thread, or before the loop runs)."""
        # a worker scores with a snapshot and never teaches it (the owner learns into its own copy)
        self.stage.sentiment = snap.model.freeze()
        self.loaded = snap.version
        self.metrics.model_version.set(snap.version)

    async def refresh(self) -> int | None:
        """Timer (every worker): load the newest snapshot if it is not the one scoring here."""
        try:
            v = await self.snaps.latest()
            if v is None or v == self.loaded:
                return self.loaded
            raw = await self.snaps.get(v)
        except OUTAGES as exc:
            self.metrics.dependency_errors.labels("redis").inc()
            logger.warning("model refresh skipped: redis unavailable (%s: %s)", type(exc).__name__, exc)
            return self.loaded
        if raw is None:  # trimmed between the two reads: the next tick takes the newer one
            return self.loaded
        try:
            snap = await self._off_loop(decode_snapshot, v, raw)
        except ValueError as exc:
            self.metrics.dependency_errors.labels("snapshot").inc()
            logger.error("%s; still scoring with v%s", exc, self.loaded)
            return self.loaded
        await self._off_loop(self.install, snap)
        logger.info("scoring with sentiment snapshot v%d (%s)", v, snap.model.version)
        return v

    # -- the owner: learn, publish -----------------------------------------------------------
    async def step(self) -> int:
        """Timer (every worker): hold the lease or wait for it; while held, learn the next labels
        and publish a snapshot when one is due. Returns the labels learned in this step.
        A frozen fleet (``sentiment.frozen``) takes no lease and learns nothing."""
        if self.s.sentiment.frozen:
            return 0
        async with self._lock:
            try:
                held = await self.snaps.acquire(self.token, self.s.sentiment.owner_lease_seconds)
            except OUTAGES as exc:
                self.metrics.dependency_errors.labels("redis").inc()
                logger.warning("learner step skipped: redis unavailable (%s: %s)", type(exc).__name__, exc)
                return 0
            if not held:
                if self.is_owner:
                    await self._demote("another worker holds the learner lease")
                return 0
            try:
                if not self.is_owner:
                    await self._promote()
                n = await self._learn_next()
                if self.unsaved and time.monotonic() - self._saved_at >= self.s.sentiment.snapshot_interval_seconds:
                    await self._snapshot()
                return n
            except OUTAGES as exc:
                self.metrics.dependency_errors.labels("redis").inc()
                logger.warning("learner step cut short: redis unavailable (%s: %s)", type(exc).__name__, exc)
            except Exception:  # e.g. the broker: start over from the newest snapshot on the next step
                self.metrics.dependency_errors.labels("learner").inc()
                logger.exception("learner step failed; resuming from the newest snapshot")
                if self.is_owner:
                    await self._demote("the step failed")
            return 0

    async def _promote(self) -> None:
        snap = None
        newest = await self.snaps.latest() or 0
        for v in range(newest, max(0, newest - self.snaps.keep), -1):
            raw = await self.snaps.get(v)
            if raw is None:
                break
            try:
                snap = await self._off_loop(decode_snapshot, v, raw)
                break
            except ValueError as exc:
                logger.error("%s; resuming from the one before", exc)
        model = snap.model if snap else SentimentModel()
        offsets = dict(snap.offsets) if snap and snap.topic == self.topic else {}
        # the broker's partition count, asked on a thread (kafka-python is blocking): every
        # partition of the labels topic is read, whatever the config says it was created with
        n_parts = await asyncio.to_thread(partition_count, self.s.kafka.bootstrap, self.topic, 30.0)
        consumer = self._consumer_factory()
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in range(n_parts)]
            consumer.assign(tps)
            for tp in tps:
                if tp.partition in offsets:
                    consumer.seek(tp, offsets[tp.partition])
                else:
                    await consumer.seek_to_beginning(tp)
        except BaseException:
            await consumer.stop()
            raise
        self.consumer, self.model, self.offsets = consumer, model, offsets
        self.unsaved, self._saved_at = 0, time.monotonic()
        self.metrics.learner.set(1)
        logger.info(
            "this worker is the fleet's sentiment learner (%s), resuming from %s at offsets %s",
            self.token,
            f"snapshot v{snap.version}" if snap else "a cold model",
            offsets or "the beginning",
        )

    async def _demote(self, why: str) -> None:
        for p in self.offsets:  # the next owner reports the labels topic's lag
            self.metrics.consumer_lag.remove(self.topic, str(p))
        consumer, self.consumer, self.model = self.consumer, None, None
        self.offsets, self.unsaved = {}, 0
        self.metrics.learner.set(0)
        if consumer is not None:
            await consumer.stop()
        logger.warning("no longer the sentiment learner: %s (what was not snapshotted is relearned)", why)

    async def _learn_next(self) -> int:
        assert self.consumer is not None and self.model is not None
        batches = await self.consumer.getmany(timeout_ms=200, max_records=self.max_batch)
        rows: list[Example] = []
        ends: dict[int, int] = {}
        for tp, recs in batches.items():
            for rec in recs:
                ends[tp.partition] = rec.offset + 1
                try:
                    rows.append(parse_example(rec.value or b""))
                except ValueError as exc:
                    if self.dead_letter is not None:
                        from streams.runtime import Message  # the runtime builds on this module

                        msg = Message(rec.value or b"", rec.key, tp.topic, tp.partition, rec.offset)
                        await self.dead_letter("labels", f"ValueError: {exc}", "ValueError", msg)
        if rows:
            await self._off_loop(self.stage.learn, rows, self.model)
            self.metrics.labels_learned.inc(len(rows))
        # offsets move only once their labels are in the model: a snapshot never skips one
        self.offsets.update(ends)
        self.unsaved += len(rows)
        for p, nxt in self.offsets.items():
            hw = self.consumer.highwater(TopicPartition(self.topic, p))
            if hw is not None:
                self.metrics.consumer_lag.labels(self.topic, str(p)).set(max(0, hw - nxt))
        return len(rows)

    def _encode(self) -> bytes:
        assert self.model is not None
        return orjson.dumps(
            {
                "format": SNAPSHOT_FORMAT,
                "model": self.model.to_dict(),
                "topic": self.topic,
                "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
                "owner": self.token,
                "saved": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )

    async def _snapshot(self) -> int | None:
        doc = await self._off_loop(self._encode)
        try:
            v = await self.snaps.publish(self.token, doc)
        except OUTAGES as exc:  # kept in memory: the next step tries again
            self.metrics.dependency_errors.labels("redis").inc()
            logger.warning("snapshot not published: redis unavailable (%s: %s)", type(exc).__name__, exc)
            return None
        if v is None:
            await self._demote("the lease expired before the snapshot was published")
            return None
        self.metrics.snapshots.inc()
        logger.info(
            "published sentiment snapshot v%d (%d bytes, %d labels since the last, offsets %s)",
            v,
            len(doc),
            self.unsaved,
            self.offsets,
        )
        self.unsaved, self._saved_at = 0, time.monotonic()
        return v

    async def stop(self) -> None:
        """At shutdown: publish what was learned since the last snapshot, hand the lease over."""
        async with self._lock:
            if not self.is_owner:
                return
            try:
                if self.unsaved:
                    await self._snapshot()
                await self.snaps.release(self.token)
            except OUTAGES as exc:
                logger.warning("learner stop: redis unavailable (%s: %s); the lease expires", type(exc).__name__, exc)
            finally:
                if self.consumer is not None:
                    await self.consumer.stop()
                self.consumer, self.model = None, None
                self.metrics.learner.set(0)
