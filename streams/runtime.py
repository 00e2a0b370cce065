"""The worker's agents and timers as plain async methods: messages in, messages out.

Faust (:mod:`streams.app`) only moves bytes: it hands each agent the :class:`Message` values it
read and sends what the runtime gives its :class:`Outbox`. Everything in between is here, so a
test drives an agent with a list of messages and reads what it sent, with no broker::

    raw --validate--> enrich (spaCy + River, batched, off the loop) --> enriched (key: entity)
     |                  \\--> windows (idempotent, event time, watermark per raw partition)
     \\--bad input--> deadletter (with the reason)
    timer (leader) --detect closed buckets--> signals, incidents
    incidents --dispatch--> Apprise routes
    labels (human corrections) --> the sentiment model learns
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson
from pydantic import ValidationError

from alerts.dispatch import Dispatcher
from contract.records import TOPICS, DeadLetter, EnrichedEvent, Incident, Signal, dumps, parse_raw
from streams.compose import Components
from streams.enrich import RawRecord

__all__ = ["TOPICS", "Message", "Outbox", "Runtime", "validation_reason"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Message:
    """One consumed message, as plain values."""

    value: bytes
    key: bytes | None = None
    topic: str = ""
    partition: int = 0
    offset: int = -1


class Outbox(Protocol):
    """Where the runtime's output goes: ``topic`` is a name of :data:`TOPICS` (no prefix)."""

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None: ...


def validation_reason(exc: Exception) -> str:
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
        components.detection.emit_signal = self._emit_signal
        components.detection.emit_incident = self._emit_incident

    @property
    def dispatcher(self) -> Dispatcher:
        if self.c.dispatcher is None:
            raise ValueError("incidents need an alert dispatcher: build the components with Redis (not memory=True)")
        return self.c.dispatcher

    # -- raw -> enriched --------------------------------------------------------------------
    async def dead_letter(self, stage: str, reason: str, error: str, msg: Message) -> None:
        rec = DeadLetter(
            reason=reason,
            error=error,
            stage=stage,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key.decode("utf-8", "replace") if msg.key is not None else None,
            payload=msg.value.decode("utf-8", "replace"),
        )
        await self.out.send("deadletter", msg.key, dumps(rec))
        self.metrics.events.labels("dead_letter").inc()
        logger.warning("dead letter (%s) at %s[%s]@%s: %s", stage, msg.topic, msg.partition, msg.offset, reason)

    async def on_raw(self, messages: Sequence[Message]) -> None:
        """Validate, enrich off the loop, count into the windows, publish.

        Counting happens here, where each raw partition is read in order, so the partition's
        watermark (its highest event time) is only advanced once every earlier event of that
        partition has been counted: buckets are judged complete, however partitions interleave.
        """
        good: list[tuple[Message, RawRecord]] = []
        for msg in messages:
            try:
                good.append((msg, parse_raw(msg.value)))
            except (ValidationError, ValueError) as exc:
                await self.dead_letter("validate", validation_reason(exc), type(exc).__name__, msg)
        if not good:
            return
        loop = asyncio.get_running_loop()
        stage, pool = self.c.stage, self.c.executor
        pairs: list[tuple[Message, EnrichedEvent]] = []
        try:
            t0 = time.perf_counter()
            batch = await loop.run_in_executor(pool, stage.enrich_batch, [r for _, r in good])
            self.metrics.batch_seconds.observe(time.perf_counter() - t0)
            self.metrics.batch_size.observe(len(good))
            pairs = list(zip([m for m, _ in good], batch, strict=True))
        except Exception:  # one poison record must not stop the stream: isolate it
            logger.exception("batch enrichment failed; retrying one by one")
            for msg, rec in good:
                try:
                    one = await loop.run_in_executor(pool, stage.enrich_batch, [rec])
                    pairs.append((msg, one[0]))
                except Exception as exc:
                    await self.dead_letter("enrich", validation_reason(exc), type(exc).__name__, msg)
        res = await self.c.windows.add_batch([(enr, msg.partition) for msg, enr in pairs])
        self.metrics.counted.inc(res.counted)
        self.metrics.duplicates.inc(res.duplicates)
        if res.duplicates:
            logger.info("skipped %d redelivered events (already counted)", res.duplicates)
        for _, enr in pairs:
            await self.out.send("enriched", (enr.entity or enr.event_id).encode(), dumps(enr))
        self.metrics.events.labels("enriched").inc(len(pairs))

    # -- windows -> signals -> incidents ----------------------------------------------------
    async def _emit_signal(self, sig: Signal) -> None:
        await self.out.send("signals", sig.entity.encode(), dumps(sig))
        self.metrics.signals.labels(sig.signal, sig.severity).inc()

    async def _emit_incident(self, inc: Incident) -> None:
        await self.out.send("incidents", inc.entity.encode(), dumps(inc))
        self.metrics.incidents.labels(inc.status).inc()

    async def detect_tick(self) -> int:
        """Timer (leader only): judge the buckets that closed."""
        judged = await self.c.detection.tick()
        self.metrics.buckets.inc(judged)
        self.metrics.set_watermark(self.c.detection.watermark)
        return judged

    # -- incidents -> notifications ---------------------------------------------------------
    async def on_incident(self, msg: Message) -> None:
        try:
            inc = Incident.model_validate_json(msg.value)
        except ValidationError as exc:
            await self.dead_letter("dispatch", validation_reason(exc), type(exc).__name__, msg)
            return
        for d in await self.dispatcher.dispatch(inc):
            self.metrics.notifications.labels(d.route, d.status).inc()
            logger.info("alert %s seq %s -> %s: %s", d.incident_id, d.seq, d.route, d.status)

    async def flush_alerts(self) -> None:
        """Timer: send the updates whose cooldown has passed."""
        for d in await self.dispatcher.flush_due():
            self.metrics.notifications.labels(d.route, d.status).inc()

    # -- human labels -----------------------------------------------------------------------
    async def on_labels(self, messages: Sequence[Message]) -> None:
        rows: list[tuple[str, str]] = []
        for msg in messages:
            try:
                data = orjson.loads(msg.value)
                text, label = str(data["text"]), str(data["label"])
                if label not in ("negative", "neutral", "positive"):
                    raise ValueError(f"label must be negative, neutral or positive, got {label!r}")
                rows.append((text, label))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                await self.dead_letter("labels", validation_reason(exc), type(exc).__name__, msg)
        if rows:
            await asyncio.get_running_loop().run_in_executor(self.c.executor, self.c.stage.learn, rows)

    # -- checkpoints ------------------------------------------------------------------------
    async def checkpoint(self) -> None:
        """Timer: save the sentiment model (off the loop, on the NLP thread that owns it)."""
        version = await asyncio.get_running_loop().run_in_executor(self.c.executor, self.c.stage.checkpoint)
        if version:
            logger.info("sentiment model checkpointed (%s)", version)

    async def shutdown(self) -> None:
        await self.checkpoint()
        await self.c.detection.save_river()
