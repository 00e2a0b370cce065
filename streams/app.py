"""The Faust app: topics, agents and timers, wired from one :class:`Settings`.

Flow (topic names are ``<prefix>.<name>``)::

    raw --validate--> enrich (spaCy + River, batched, off the loop) --> enriched (key: entity)
     |                  \\--> Redis buckets (idempotent, event time, watermark per raw partition)
     \\--bad input--> deadletter (with the reason)
    timer (leader) --detect closed buckets--> signals, incidents
    incidents --dispatch--> Apprise routes
    labels (human corrections) --> the sentiment model learns

Nothing happens at import: :func:`build_pipeline` builds the app. State that must survive
rebalances lives in Redis, not in Faust tables (faust-streaming#385, #432: windowed tables
that never expire and recoveries that hang), so the app runs with ``store="memory://"``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import faust
import orjson
import redis.asyncio as aredis
from pydantic import ValidationError

from alerts.dispatch import Delivery, Dispatcher
from contract.records import DeadLetter, EnrichedEvent, Incident, Signal, dumps, parse_raw
from infra.settings import Settings
from streams.detection import DetectionEngine
from streams.enrich import EnrichStage, RawRecord
from streams.metrics import Metrics
from streams.windows import WindowStore

__all__ = ["TOPICS", "Pipeline", "build_pipeline", "validation_reason"]

logger = logging.getLogger(__name__)

#: Topic names (without the prefix) the pipeline reads and writes.
TOPICS = ("raw", "enriched", "signals", "incidents", "deadletter", "labels")


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


class Pipeline:
    """Holds the app, its clients and models. Build with :func:`build_pipeline`."""

    def __init__(
        self,
        settings: Settings,
        *,
        redis_url: str | None = None,
        web_port: int | None = None,
        metrics_port: int | None = None,
        metrics_addr: str = "127.0.0.1",
    ) -> None:
        self.settings = settings
        url = redis_url or settings.redis.url
        if not url:
            raise ValueError("no Redis URL: set redis.url / REPMON_REDIS__URL, or run through `repmon demo`")
        self.redis = aredis.Redis.from_url(url)
        self.store = WindowStore(self.redis, settings)
        self.metrics = Metrics()
        self.dispatcher = Dispatcher(
            settings.alerts, self.redis, key_prefix=settings.redis.key_prefix, on_delivery=self._on_delivery
        )
        if metrics_port is not None:
            self.metrics.serve(metrics_port, metrics_addr)
        # One thread owns the NLP pipeline and the online model: batches run off the event
        # loop, and the model is only ever touched by this thread (no locks needed).
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="repmon-nlp")
        self.stage = EnrichStage(settings)
        self.detection = DetectionEngine(
            settings,
            self.store,
            emit_signal=self._emit_signal,
            emit_incident=self._emit_incident,
            model_version=lambda: self.stage.model_version,
        )
        self.app = self._build_app(web_port)

    # -- construction -----------------------------------------------------------------------
    def _build_app(self, web_port: int | None) -> faust.App:
        s = self.settings
        brokers = [f"kafka://{hp.strip()}" for hp in s.kafka.bootstrap.split(",")]
        # Faust keeps a per-app data dir even with memory stores: keep it out of the cwd
        datadir = (
            Path(os.environ.get("REPMON_FAUST_DATADIR") or Path(tempfile.gettempdir()) / "repmon-faust") / s.app_id
        )
        datadir.mkdir(parents=True, exist_ok=True)
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
            web_host="127.0.0.1",
            producer_linger_ms=5,
            broker_commit_every=1000,
            broker_commit_interval=1.0,
        )

        def topic(name: str) -> faust.TopicT:
            return app.topic(
                s.topic(name), key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw"
            )

        self.t_raw = topic("raw")
        self.t_enriched = topic("enriched")
        self.t_signals = topic("signals")
        self.t_incidents = topic("incidents")
        self.t_dead = topic("deadletter")
        self.t_labels = topic("labels")

        @app.agent(self.t_raw, name="enrich")
        async def enrich_agent(stream: faust.StreamT[bytes]) -> None:
            # take_events (faust-streaming) keeps each message's partition and offset
            batches = stream.take_events(s.nlp.batch_size, within=s.nlp.batch_within_seconds)  # type: ignore[attr-defined]
            async for events in batches:
                await self.handle_raw(events)

        @app.agent(self.t_incidents, name="dispatch")
        async def dispatch_agent(stream: faust.StreamT[bytes]) -> None:
            async for value in stream:
                await self.handle_incident(value)

        @app.agent(self.t_labels, name="labels")
        async def labels_agent(stream: faust.StreamT[bytes]) -> None:
            async for events in stream.take_events(256, within=0.5):  # type: ignore[attr-defined]
                await self.handle_labels(events)

        @app.timer(interval=0.5, on_leader=True)
        async def detect_timer() -> None:
            await self.detect_tick()

        @app.timer(interval=1.0)
        async def flush_alerts() -> None:
            for d in await self.dispatcher.flush_due():
                self.metrics.notifications.labels(d.route, d.status).inc()

        @app.timer(interval=s.sentiment.checkpoint_interval_seconds)
        async def checkpoint_timer() -> None:
            await self.checkpoint()

        @app.on_before_shutdown.connect  # type: ignore[arg-type]
        async def on_shutdown(app: faust.App, **kwargs: Any) -> None:
            await self.checkpoint()
            await self.detection.save_river()

        self._agents = (enrich_agent, dispatch_agent, labels_agent)
        return app

    def load_models(self) -> None:
        """Load spaCy and the sentiment model once, before the worker consumes (no loop yet)."""
        self.stage.load_models()

    async def checkpoint(self) -> None:
        version = await asyncio.get_running_loop().run_in_executor(self.executor, self.stage.checkpoint)
        if version:
            logger.info("sentiment model checkpointed (%s)", version)

    # -- raw -> enriched --------------------------------------------------------------------
    async def dead_letter(self, stage: str, reason: str, error: str, event: Any) -> None:
        msg = event.message
        value = msg.value if isinstance(msg.value, bytes) else str(msg.value).encode()
        rec = DeadLetter(
            reason=reason,
            error=error,
            stage=stage,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key.decode("utf-8", "replace") if isinstance(msg.key, bytes) else None,
            payload=value.decode("utf-8", "replace"),
        )
        await self.t_dead.send(key=msg.key, value=dumps(rec))
        self.metrics.events.labels("dead_letter").inc()
        logger.warning("dead letter (%s) at %s[%s]@%s: %s", stage, msg.topic, msg.partition, msg.offset, reason)

    async def handle_raw(self, events: Sequence[Any]) -> None:
        """Validate, enrich off the loop, count into the windows, publish.

        Counting happens here, where each raw partition is read in order, so the partition's
        watermark (its highest event time) is only advanced once every earlier event of that
        partition has been counted: buckets are judged complete, however partitions interleave.
        """
        good: list[tuple[Any, RawRecord]] = []
        for ev in events:
            try:
                good.append((ev, parse_raw(ev.message.value)))
            except (ValidationError, ValueError) as exc:
                await self.dead_letter("validate", validation_reason(exc), type(exc).__name__, ev)
        if not good:
            return
        loop = asyncio.get_running_loop()
        pairs: list[tuple[Any, EnrichedEvent]] = []
        try:
            t0 = time.perf_counter()
            batch = await loop.run_in_executor(self.executor, self.stage.enrich_batch, [r for _, r in good])
            self.metrics.batch_seconds.observe(time.perf_counter() - t0)
            self.metrics.batch_size.observe(len(good))
            pairs = list(zip([ev for ev, _ in good], batch, strict=True))
        except Exception:  # one poison record must not stop the stream: isolate it
            logger.exception("batch enrichment failed; retrying one by one")
            for ev, rec in good:
                try:
                    one = await loop.run_in_executor(self.executor, self.stage.enrich_batch, [rec])
                    pairs.append((ev, one[0]))
                except Exception as exc:
                    await self.dead_letter("enrich", validation_reason(exc), type(exc).__name__, ev)
        res = await self.store.add_batch([(enr, ev.message.partition) for ev, enr in pairs])
        self.metrics.counted.inc(res.counted)
        self.metrics.duplicates.inc(res.duplicates)
        if res.duplicates:
            logger.info("skipped %d redelivered events (already counted)", res.duplicates)
        for _, enr in pairs:
            await self.t_enriched.send(key=(enr.entity or enr.event_id).encode(), value=dumps(enr))
        self.metrics.events.labels("enriched").inc(len(pairs))

    # -- windows -> signals -> incidents ----------------------------------------------------
    async def _emit_signal(self, sig: Signal) -> None:
        await self.t_signals.send(key=sig.entity.encode(), value=dumps(sig))
        self.metrics.signals.labels(sig.signal, sig.severity).inc()

    async def _emit_incident(self, inc: Incident) -> None:
        await self.t_incidents.send(key=inc.entity.encode(), value=dumps(inc))
        self.metrics.incidents.labels(inc.status).inc()

    async def detect_tick(self) -> int:
        judged = await self.detection.tick()
        self.metrics.buckets.inc(judged)
        self.metrics.set_watermark(self.detection.watermark)
        return judged

    # -- incidents -> notifications ---------------------------------------------------------
    async def handle_incident(self, value: bytes) -> None:
        try:
            inc = Incident.model_validate_json(value)
        except ValidationError as exc:
            logger.error("undecodable incident skipped: %s", validation_reason(exc))
            return
        deliveries = await self.dispatcher.dispatch(inc)
        for d in deliveries:
            self.metrics.notifications.labels(d.route, d.status).inc()
            logger.info("alert %s seq %s -> %s: %s", d.incident_id, d.seq, d.route, d.status)

    def _on_delivery(self, d: Delivery) -> None:
        """Outcomes the alert senders decide later (delivered, retrying, dead, ...)."""
        self.metrics.notifications.labels(d.route, d.status).inc()
        logger.info("alert %s seq %s -> %s: %s", d.incident_id, d.seq, d.route, d.status)

    # -- human labels -----------------------------------------------------------------------
    async def handle_labels(self, events: Sequence[Any]) -> None:
        rows: list[tuple[str, str]] = []
        for ev in events:
            try:
                data = orjson.loads(ev.message.value)
                text, label = str(data["text"]), str(data["label"])
                if label not in ("negative", "neutral", "positive"):
                    raise ValueError(f"label must be negative, neutral or positive, got {label!r}")
                rows.append((text, label))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                await self.dead_letter("labels", validation_reason(exc), type(exc).__name__, ev)
        if rows:
            await asyncio.get_running_loop().run_in_executor(self.executor, self.stage.learn, rows)

    async def close(self) -> None:
        await self.dispatcher.aclose()
        await self.redis.aclose()
        self.executor.shutdown(wait=True)


def build_pipeline(settings: Settings, **kwargs: Any) -> Pipeline:
    return Pipeline(settings, **kwargs)
