"""The worker's agents and timers as plain async methods: messages in, messages out.

Faust (:mod:`streams.app`) only moves bytes: it hands each agent the :class:`Message` values it
read and sends what the runtime gives its :class:`Outbox`. Everything in between is here, so a
test drives an agent with a list of messages and reads what it sent, with no broker::

    raw --validate--> enrich (spaCy + River, batched, off the loop) --> enriched (key: entity)
     |                  \\--> windows (idempotent, event time, watermark per raw partition)
     \\--bad input--> deadletter (with the reason)
    timer (leader) --detect closed buckets--> signals, incidents
    incidents --dispatch--> Apprise routes
    reviews' ratings --> labels <-- human corrections: the fleet's one learner learns, every worker
                                   scores with its newest snapshot (streams.learning)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import orjson
from pydantic import ValidationError
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

from alerts.dispatch import Delivery, Dispatcher
from contract.records import (
    TOPICS,
    DeadLetter,
    DeadNotification,
    Incident,
    Signal,
    dumps,
    is_action,
    parse_raw,
)
from infra.health import probe
from models.privacy import redact_payload
from streams.compose import Components
from streams.enrich import Example, RawRecord
from streams.learning import parse_example
from streams.windows import AddResult, Windows

__all__ = [
    "TOPICS",
    "Message",
    "Outbox",
    "PublishError",
    "RawBatch",
    "RawPipeline",
    "Record",
    "RecordRefused",
    "Runtime",
    "validation_reason",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: What a dead letter keeps of a message (characters): far below the broker's 1 MB message limit.
DEAD_PAYLOAD_CHARS = 64 * 1024
#: Errors that mean "Redis is not there right now", not "this record is bad".
OUTAGES = (ConnectionError, TimeoutError, BusyLoadingError)
RETRY_FIRST_SECONDS = 0.25
RETRY_MAX_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Message:
    """One consumed message, as plain values."""

    value: bytes
    key: bytes | None = None
    topic: str = ""
    partition: int = 0
    offset: int = -1


#: One record to publish: (topic name of :data:`TOPICS`, key, value).
Record = tuple[str, bytes | None, bytes]


class PublishError(Exception):
    """The broker did not acknowledge a record (:meth:`Outbox.send`)."""


class RecordRefused(Exception):
    """The broker refused a record for good (larger than it takes): sending it again is futile.
    Any other error :meth:`Outbox.send_many` returns is taken as an outage and sent again."""


class Outbox(Protocol):
    """Where the runtime's output goes: ``topic`` is a name of :data:`TOPICS` (no prefix)."""

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Publish one record and return once the broker acknowledged it; :class:`PublishError`
        when it did not."""
        ...

    async def send_many(self, records: Sequence[Record]) -> list[BaseException | None]:
        """Publish every record and return once the broker has acknowledged (or refused) each:
        one entry per record, None when it is acknowledged, else why it is not out."""
        ...


def _adding(
    windows: Windows, ev: dict[str, Any], partition: int, horizon: float | None
) -> Callable[[], Awaitable[AddResult]]:
    return lambda: windows.add_batch([(ev, partition)], claim_horizon=horizon)


@dataclass
class RawBatch:
    """A batch of raw messages, validated and enriched, waiting for its writes."""

    messages: Sequence[Message]
    #: each enriched message with its raw record and its enriched record (the wire dict)
    enriched: list[tuple[Message, RawRecord, dict[str, Any]]] = field(default_factory=list)
    #: dead letters found so far (validation, horizon, enrichment), published with the batch
    dead: list[Record] = field(default_factory=list)


def validation_reason(exc: BaseException) -> str:
    """A short, human-readable reason for a dead letter.

    >>> try:
    ...     parse_raw(b'{"kind": "review", "rating": 9}')
    ... except ValidationError as e:
    ...     print(validation_reason(e))
    review.event_id: Field required; review.source: Field required; review.occurred_at: Field required
    """
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors()[:3]:
            loc = ".".join(str(p) for p in err["loc"]) or "(record)"
            parts.append(f"{loc}: {err['msg']}")
        return "; ".join(parts)
    return f"{type(exc).__name__}: {exc}"[:500]


class Runtime:
    """The agents (``on_*``) and timers of a worker, over the :class:`Components` it was given."""

    def __init__(self, components: Components, outbox: Outbox) -> None:
        self.c = components
        self.out = outbox
        self.settings = components.settings
        self.metrics = components.metrics
        # per raw partition, the next offset after the last message this worker processed
        self.done: dict[int, int] = {}
        # partitions with nothing processed here whose group had committed up to this high-water
        # mark when last asked: every message below it was counted by whoever held it before
        self._settled: dict[int, int] = {}
        # the consumer group's committed offsets for some raw partitions (set by the worker)
        self.committed: Callable[[list[int]], Awaitable[Mapping[int, int | None]]] | None = None
        self._unreachable: set[str] = set()  # dependencies whose last probe failed
        if components.dispatcher is not None:
            components.dispatcher.on_delivery = self._on_delivery
        if components.learner is not None:
            components.learner.dead_letter = self.dead_letter
        components.detection.emit_signal = self._emit_signal
        components.detection.emit_incident = self._emit_incident

    @property
    def dispatcher(self) -> Dispatcher:
        if self.c.dispatcher is None:
            raise ValueError("incidents need an alert dispatcher: build the components with Redis (not memory=True)")
        return self.c.dispatcher

    # -- raw -> enriched --------------------------------------------------------------------
    async def dead_letter(self, stage: str, reason: str, error: str, msg: Message) -> None:
        """Send ``msg`` to the dead-letter topic with the reason (see :meth:`dead_record`), riding
        out a broker outage as the raw batches do (:meth:`_publish`)."""
        await self._publish_all([self.dead_record(stage, reason, error, msg)])

    def dead_record(self, stage: str, reason: str, error: str, msg: Message) -> Record:
        """The dead letter of ``msg``, with the reason: redacted as enrichment redacts, cut to
        :data:`DEAD_PAYLOAD_CHARS` (with the original's size and hash), so that no message,
        however large or sensitive, can be refused by the broker or leak through the dead letters."""
        text = msg.value.decode("utf-8", "replace")
        cut = len(text) > DEAD_PAYLOAD_CHARS
        rec = DeadLetter(
            reason=reason[:2000],
            error=error[:200],
            stage=stage,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=redact_payload(msg.key.decode("utf-8", "replace"))[:512] if msg.key is not None else None,
            # authors become the key enrichment gives them: a dead letter still ties to their events
            payload=redact_payload(text[:DEAD_PAYLOAD_CHARS], self.c.stage.author_secret),
            payload_bytes=len(msg.value),
            payload_sha256=hashlib.sha256(msg.value).hexdigest(),
            payload_truncated=cut,
        )
        self.metrics.events.labels("dead_letter").inc()
        self.metrics.dead_letters.labels(stage, error[:40]).inc()
        logger.warning("dead letter (%s) at %s[%s]@%s: %s", stage, msg.topic, msg.partition, msg.offset, reason[:300])
        return "deadletter", msg.key[:512] if msg.key else None, dumps(rec)

    def claim_horizon(self) -> float | None:
        """How long after its event time an event must be remembered for dedupe: live, the
        horizon past which :meth:`_out_of_horizon` refuses it anyway (the windows refuse it too
        once it is that old, so no count can outlive its claim); None in backfill mode, where any
        event time from ``backfill_since`` on is accepted and claims live ``dedupe_ttl_seconds``."""
        w = self.settings.windows
        if w.backfill_since is not None:
            return None
        return float(w.max_age_seconds or w.bucket_retention_seconds)

    def _out_of_horizon(self, ts: float, now: float) -> str | None:
        """Why an event time is refused, or None. Refused events never reach a window."""
        w = self.settings.windows
        if ts > now + w.max_future_seconds:
            return (
                f"occurred_at is {ts - now:.0f} s ahead of the wall clock (windows.max_future_seconds="
                f"{w.max_future_seconds}); fix the source's clock or time zone"
            )
        if w.backfill_since is not None:
            if ts < w.backfill_since.timestamp():
                return f"occurred_at is before windows.backfill_since ({w.backfill_since.isoformat()})"
            return None
        max_age = w.max_age_seconds or w.bucket_retention_seconds
        if ts < now - max_age:
            return (
                f"occurred_at is {(now - ts) / 86400:.1f} days old, older than the live horizon "
                f"(windows.max_age_seconds={max_age}); replay history with windows.backfill_since"
            )
        return None

    async def on_raw(self, messages: Sequence[Message]) -> None:
        """Validate, enrich off the loop, count into the windows, publish (one batch, in turn).

        Counting happens here, where each raw partition is read in order, so the partition's
        watermark (its highest event time) is only advanced once every earlier event of that
        partition has been counted: buckets are judged complete, however partitions interleave.
        No message can stop the agent: whatever one record does wrong sends that record to the
        dead letters; an outage of Redis holds the batch and retries until it is back.
        :class:`RawPipeline` runs the same two steps with the next batch's enrichment overlapping
        this one's writes.
        """
        await self.write_raw(await self.prepare_raw(messages))

    async def prepare_raw(self, messages: Sequence[Message]) -> RawBatch:
        """Step one of a batch: validate and enrich (on the NLP thread); nothing is written yet."""
        batch = RawBatch(messages)
        good: list[tuple[Message, RawRecord]] = []
        now = time.time()
        for msg in messages:
            try:
                rec = parse_raw(msg.value)
            except (ValidationError, ValueError) as exc:
                batch.dead.append(self.dead_record("validate", validation_reason(exc), type(exc).__name__, msg))
                continue
            why = self._out_of_horizon(rec.occurred_at.timestamp(), now)
            if why is not None:
                batch.dead.append(self.dead_record("horizon", why, "EventTimeOutOfRange", msg))
                continue
            good.append((msg, rec))
        if not good:
            return batch
        loop = asyncio.get_running_loop()
        stage, pool = self.c.stage, self.c.executor
        try:
            t0 = time.perf_counter()
            docs = await loop.run_in_executor(pool, stage.enrich_docs, [r for _, r in good])
            self.metrics.batch_seconds.observe(time.perf_counter() - t0)
            self.metrics.batch_size.observe(len(good))
            batch.enriched = [(m, r, d) for (m, r), d in zip(good, docs, strict=True)]
        except Exception:  # one poison record must not stop the stream: isolate it
            logger.exception("batch enrichment failed; retrying one by one")
            for msg, rec in good:
                try:
                    one = await loop.run_in_executor(pool, stage.enrich_docs, [rec])
                    batch.enriched.append((msg, rec, one[0]))
                except Exception as exc:
                    batch.dead.append(self.dead_record("enrich", validation_reason(exc), type(exc).__name__, msg))
        return batch

    async def write_raw(self, batch: RawBatch) -> None:
        """Step two: count into the windows (one script call), then publish the enriched records,
        dead letters and training examples with one producer call, and return once the broker has
        acknowledged all of them: the batch's offsets may be committed only after this returns."""
        stage = self.c.stage
        pairs = await self._count(batch)
        records: list[Record] = [*batch.dead]
        first_enriched = len(records)
        for _, _, doc in pairs:
            records.append(("enriched", (doc["entity"] or doc["event_id"]).encode(), orjson.dumps(doc)))
        if not stage.learn_inline:  # the fleet's learner learns the reviews' ratings (streams.learning)
            for ex in stage.examples([r for _, r, _ in pairs], [d for _, _, d in pairs]):
                records.append(("labels", (ex.event_id or "").encode(), ex.to_json()))
        # an enriched record the broker refused (too large) is counted: say why it is not out
        retry: list[Record] = []
        for i, exc in await self._publish(records):
            if first_enriched <= i < first_enriched + len(pairs):
                msg = pairs[i - first_enriched][0]
                retry.append(self.dead_record("publish", validation_reason(exc), type(exc).__name__, msg))
            else:  # a dead letter or an example refused: the batch is not done, it must be read again
                raise RuntimeError(f"publishing to {records[i][0]} failed: {type(exc).__name__}: {exc}") from exc
        await self._publish_all(retry)
        self.metrics.events.labels("enriched").inc(len(pairs))
        per_lang: dict[str, int] = {}
        for _, _, doc in pairs:
            lang = doc["lang"] or "none"
            per_lang[lang] = per_lang.get(lang, 0) + 1
        for lang, n in per_lang.items():  # a labelled child's lookup and lock once per language
            self.metrics.languages.labels(lang).inc(n)
        for msg in batch.messages:  # processed (counted, or dead-lettered): it no longer holds a window open
            self.done[msg.partition] = max(self.done.get(msg.partition, 0), msg.offset + 1)

    async def _publish_all(self, records: list[Record]) -> None:
        """:meth:`_publish` for records that must all go out (dead letters, cut far below the
        broker's limit, are never refused for size): a refusal raises."""
        for i, exc in await self._publish(records):
            raise RuntimeError(f"publishing to {records[i][0]} failed: {type(exc).__name__}: {exc}") from exc

    async def _publish(self, records: list[Record]) -> list[tuple[int, RecordRefused]]:
        """Publish ``records`` until the broker has acknowledged each or refused it for good
        (returned, by index). Anything else is an outage: what was not acknowledged is sent again
        with capped exponential backoff, for as long as it lasts (the batch waits in memory, and
        the agent reads nothing more meanwhile), and the outage shows in ``repmon_dependency_up``."""
        if not records:
            return []
        pending = list(range(len(records)))
        refused: list[tuple[int, RecordRefused]] = []
        delay = RETRY_FIRST_SECONDS
        up = self.metrics.dependency_up.labels("kafka")
        while True:
            failed = await self.out.send_many([records[i] for i in pending])
            again: list[int] = []
            last: BaseException | None = None
            for i, exc in zip(pending, failed, strict=True):
                if isinstance(exc, RecordRefused):
                    refused.append((i, exc))
                elif exc is not None:
                    again.append(i)
                    last = exc
            if not again:
                up.set(1)
                return sorted(refused, key=lambda r: r[0])
            up.set(0)
            self.metrics.dependency_errors.labels("kafka").inc()
            logger.warning(
                "kafka did not acknowledge %d of %d records (%s: %s); sending them again in %.1f s",
                len(again),
                len(records),
                type(last).__name__,
                last,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)
            pending = again

    async def _count(self, batch: RawBatch) -> list[tuple[Message, RawRecord, dict[str, Any]]]:
        """Count into the windows; returns the enriched messages counted (the others are
        dead-lettered into ``batch.dead``).

        Counting is idempotent by event id, so a batch is simply tried again after an outage.
        A failure that is not an outage is one record's fault: the batch is counted one by one.
        """
        pairs = batch.enriched
        items = [(doc, msg.partition) for msg, _, doc in pairs]
        horizon = self.claim_horizon()
        try:
            res = await self.retrying("redis", lambda: self.c.windows.add_batch(items, claim_horizon=horizon))
        except Exception:
            logger.exception("counting a batch failed; counting it one by one")
            res, kept = AddResult(), []
            for msg, rec, doc in pairs:
                try:
                    one = await self.retrying("redis", _adding(self.c.windows, doc, msg.partition, horizon))
                except Exception as exc:
                    batch.dead.append(self.dead_record("count", validation_reason(exc), type(exc).__name__, msg))
                    continue
                kept.append((msg, rec, doc))
                res.counted, res.duplicates = res.counted + one.counted, res.duplicates + one.duplicates
                res.expired += one.expired
            pairs = kept
        if res.expired:  # its horizon passed while it waited: counted nowhere, say so
            expired = set(res.expired)
            for msg, _, doc in pairs:
                if doc["event_id"] in expired:
                    why = f"occurred_at left the live horizon ({horizon} s) before the event could be counted"
                    batch.dead.append(self.dead_record("horizon", why, "EventTimeOutOfRange", msg))
            pairs = [p for p in pairs if p[2]["event_id"] not in expired]
        self.metrics.counted.inc(res.counted)
        self.metrics.duplicates.inc(res.duplicates)
        if res.duplicates:
            logger.info("skipped %d redelivered events (already counted)", res.duplicates)
        return pairs

    async def retrying(self, dependency: str, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()`` until it gets through an outage of ``dependency`` (connection lost,
        timeout, a server still loading), with capped exponential backoff; other errors raise."""
        delay = RETRY_FIRST_SECONDS
        up = self.metrics.dependency_up.labels(dependency)
        while True:
            try:
                out = await call()
            except OUTAGES as exc:
                up.set(0)
                self.metrics.dependency_errors.labels(dependency).inc()
                logger.warning(
                    "%s unavailable (%s: %s); retrying in %.1f s", dependency, type(exc).__name__, exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            up.set(1)
            return out

    async def probe(self, dependency: str, call: Callable[[], Awaitable[object]], timeout: float = 5.0) -> bool:
        """Timer: whether ``dependency`` answers ``call`` within ``timeout``; sets
        ``repmon_dependency_up`` and counts a failure in ``repmon_dependency_errors``. Never raises:
        an outage is reported, and what waits on the dependency waits on its own."""
        ok = await probe(self.metrics.dependency_up, self._unreachable, dependency, call, timeout)
        if not ok:
            self.metrics.dependency_errors.labels(dependency).inc()
        return ok

    async def report_partitions(self, assigned: Mapping[int, int]) -> None:
        """Timer (every worker): tell the windows which of its raw partitions are caught up.

        ``assigned`` is ``{partition: broker high-water mark}`` for the raw partitions this worker
        holds now. A partition is caught up when everything below the high-water mark has been
        processed here; one with nothing processed here yet (just assigned) when the group's
        committed offset has reached the mark. Offsets are committed only once a message's windows
        and outputs are written, so that is exact, whoever processed them. The consumer's fetch
        position is no proof: fetched messages can wait seconds for the agent on a loaded worker.
        """
        for p in list(self.done):
            if p not in assigned:  # revoked: another worker may move it on meanwhile
                del self.done[p]
        for p in list(self._settled):
            if p not in assigned:
                del self._settled[p]
        # per partition, the offset it is caught up to (the leader checks it against the broker's
        # end offset: anything written since the report holds the watermark again), or None
        idle: dict[int, int | None] = {}
        ask: list[int] = []
        for p, hw in assigned.items():
            done = self.done.get(p)
            if done is not None:
                idle[p] = hw if done >= hw else None
            elif hw == 0 or self._settled.get(p, -1) >= hw:
                idle[p] = hw
            else:
                idle[p] = None
                ask.append(p)
        if ask and self.committed is not None:
            try:
                got = await self.committed(ask)
            except Exception as exc:  # not caught up as far as anyone knows: asked again next report
                logger.warning("committed offsets of raw %s not read (%s: %s)", ask, type(exc).__name__, exc)
                got = {}
            for p in ask:
                off = got.get(p)
                if off is not None and off >= assigned[p]:
                    self._settled[p] = assigned[p]
                    idle[p] = assigned[p]
        await self.retrying("redis", lambda: self.c.windows.report_partitions(idle, self.c.windows.clock()))

    # -- windows -> signals -> incidents ----------------------------------------------------
    async def _emit_signal(self, sig: Signal) -> None:
        await self.out.send("signals", sig.entity.encode(), dumps(sig))
        self.metrics.signals.labels(sig.signal, sig.severity).inc()

    async def _emit_incident(self, inc: Incident) -> None:
        await self.out.send("incidents", inc.entity.encode(), dumps(inc))
        self.metrics.incidents.labels(inc.status).inc()

    async def detect_tick(self) -> int:
        """Timer (leader only): judge the buckets that closed. An outage skips the tick (state is
        saved atomically per tick, so the next one starts where the last good one ended)."""
        self.metrics.detect_tick.set(time.time())
        try:
            judged = await self.c.detection.tick()
        except OUTAGES as exc:
            self.metrics.dependency_up.labels("redis").set(0)
            self.metrics.dependency_errors.labels("redis").inc()
            logger.warning("detection tick skipped: redis unavailable (%s: %s)", type(exc).__name__, exc)
            return 0
        except PublishError as exc:
            # nothing of the tick was saved: its buckets are judged again, and their signals and
            # incident messages sent again with the same ids, once the broker takes them
            self.metrics.dependency_errors.labels("kafka").inc()
            logger.warning("detection tick not saved: %s; judged again on the next tick", exc)
            return 0
        self.metrics.dependency_up.labels("redis").set(1)
        self.metrics.buckets.inc(judged)
        self.metrics.set_watermark(self.c.detection.watermark)
        return judged

    # -- incidents -> notifications ---------------------------------------------------------
    async def on_incident(self, msg: Message) -> None:
        if is_action(msg.value):  # a responder's action: the dispatcher reads its effect from Redis
            return
        try:
            inc = Incident.model_validate_json(msg.value)
        except ValidationError as exc:
            await self.dead_letter("dispatch", validation_reason(exc), type(exc).__name__, msg)
            return
        # the dispatcher rides out a Redis outage itself (it keeps the incident and queues it later)
        for d in await self.dispatcher.dispatch(inc):
            self.metrics.notifications.labels(d.route, d.status).inc()
            logger.info("alert %s seq %s -> %s: %s", d.incident_id, d.seq, d.route, d.status)

    async def _on_delivery(self, d: Delivery) -> None:
        """Outcomes the route senders decide later: delivered, retrying, dead, ..."""
        self.metrics.notifications.labels(d.route, d.status).inc()
        logger.info("alert %s seq %s -> %s: %s", d.incident_id, d.seq, d.route, d.status)
        if d.status == "dead":
            rec = DeadNotification(
                route=d.route,
                incident_id=d.incident_id,
                seq=d.seq,
                attempts=d.attempts,
                error=d.error,
                incident=d.incident,
            )
            await self._publish_all([("deadnotifications", d.incident_id.encode(), dumps(rec))])

    async def flush_alerts(self) -> None:
        """Timer: send the updates whose cooldown has passed (an outage waits for the next tick)."""
        try:
            due = await self.dispatcher.flush_due()
        except OUTAGES as exc:
            self.metrics.dependency_errors.labels("redis").inc()
            logger.warning("alert flush skipped: redis unavailable (%s: %s)", type(exc).__name__, exc)
            return
        for d in due:
            self.metrics.notifications.labels(d.route, d.status).inc()

    # -- human labels -----------------------------------------------------------------------
    async def on_labels(self, messages: Sequence[Message]) -> None:
        """Offline and in tests (no fleet learner): learn the labels here. A worker does not run
        this: the fleet's learner reads the labels topic itself (:mod:`streams.learning`)."""
        rows: list[Example] = []
        for msg in messages:
            try:
                rows.append(parse_example(msg.value))
            except ValueError as exc:
                await self.dead_letter("labels", validation_reason(exc), type(exc).__name__, msg)
        if rows:
            await asyncio.get_running_loop().run_in_executor(self.c.executor, self.c.stage.learn, rows)

    async def shutdown(self) -> None:
        if self.c.learner is not None:  # the last labels into a snapshot, the lease to the next owner
            await self.c.learner.stop()
        await self.c.detection.save_river()
        if self.c.dispatcher is not None:
            await self.c.dispatcher.aclose()


class RawPipeline:
    """Batches of raw messages through :meth:`Runtime.prepare_raw` and :meth:`Runtime.write_raw`,
    the enrichment of batch N+1 (on the NLP thread) overlapping the writes of batch N (Redis and
    the producer, on the loop): the NLP thread no longer idles while a batch's writes are awaited.

    Order per partition is kept: batch N+1's writes start only after batch N's are done (its
    counts, then its watermark, then its records acknowledged). ``done`` is called once a batch's
    writes are through, never before: the Faust agent acks its events there, so no offset is
    committed before its outputs are acknowledged. A batch whose writes fail raises from the
    next :meth:`submit` (or :meth:`flush`), and its events are never acked.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._writing: asyncio.Task[None] | None = None

    async def submit(self, messages: Sequence[Message], done: Callable[[], None] | None = None) -> None:
        batch = await self.rt.prepare_raw(messages)
        await self.flush()
        self._writing = asyncio.create_task(self._write(batch, done))

    async def _write(self, batch: RawBatch, done: Callable[[], None] | None) -> None:
        await self.rt.write_raw(batch)
        if done is not None:
            done()

    async def flush(self) -> None:
        """Wait for the writes in flight (raising what they raised)."""
        task, self._writing = self._writing, None
        if task is not None:
            await task

    async def cancel(self) -> None:
        """Stop: writes still in flight are abandoned (their events stay unacked, so they are read
        again; counting is idempotent)."""
        task, self._writing = self._writing, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # what it raised is moot now
