"""The Faust app: topics, agents and timers, wired from one :class:`Settings`.

Flow (topic names are ``<prefix>.<name>``)::

    raw --validate--> enrich (spaCy + River, batched, off the loop) --> enriched (key: entity)
     \\--bad input--> deadletter (with the reason)
    enriched --aggregate--> Redis buckets (idempotent, event time)
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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
import redis.asyncio as aredis
from alerts.dispatch import Dispatcher
from pydantic import ValidationError

from alerts.incidents import IncidentState, Transition, step
from infra.settings import Settings
from models.detect import EntityDetector, Verdict
from streams.enrich import EnrichStage, RawRecord
from streams.records import DeadLetter, EnrichedEvent, Incident, Signal, TopMention, dumps, parse_raw
from streams.windows import WindowStore, bucket_dt

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


@dataclass
class Counters:
    raw: int = 0
    enriched: int = 0
    dead_letter: int = 0
    counted: int = 0
    duplicates: int = 0
    signals: int = 0
    incidents: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Pipeline:
    """Holds the app, its clients and models. Build with :func:`build_pipeline`."""

    def __init__(self, settings: Settings, *, redis_url: str | None = None, web_port: int | None = None) -> None:
        self.settings = settings
        url = redis_url or settings.redis.url
        if not url:
            raise ValueError("no Redis URL: set redis.url / REPMON_REDIS__URL, or run through `repmon demo`")
        self.redis = aredis.Redis.from_url(url)
        self.store = WindowStore(self.redis, settings)
        self.dispatcher = Dispatcher(settings.alerts, self.redis, key_prefix=settings.redis.key_prefix)
        self.counters = Counters()
        # One thread owns the NLP pipeline and the online model: batches run off the event
        # loop, and the model is only ever touched by this thread (no locks needed).
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="repmon-nlp")
        self.stage = EnrichStage(settings)
        self._entity_keys = [e.key for e in settings.entities]
        self.app = self._build_app(web_port)

    # -- construction -----------------------------------------------------------------------
    def _build_app(self, web_port: int | None) -> faust.App:
        s = self.settings
        brokers = [f"kafka://{hp.strip()}" for hp in s.kafka.bootstrap.split(",")]
        app = faust.App(
            s.app_id,
            broker=brokers,
            store="memory://",
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
            async for events in stream.take_events(s.nlp.batch_size, within=s.nlp.batch_within_seconds):
                await self.handle_raw(events)

        @app.agent(self.t_enriched, name="aggregate")
        async def aggregate_agent(stream: faust.StreamT[bytes]) -> None:
            async for events in stream.take_events(1000, within=0.1):
                await self.handle_enriched(events)

        @app.agent(self.t_incidents, name="dispatch")
        async def dispatch_agent(stream: faust.StreamT[bytes]) -> None:
            async for value in stream:
                await self.handle_incident(value)

        @app.agent(self.t_labels, name="labels")
        async def labels_agent(stream: faust.StreamT[bytes]) -> None:
            async for events in stream.take_events(256, within=0.5):
                await self.handle_labels(events)

        @app.timer(interval=0.5, on_leader=True)
        async def detect_timer() -> None:
            await self.detect_tick()

        @app.timer(interval=1.0)
        async def flush_alerts() -> None:
            await self.dispatcher.flush_due()

        @app.timer(interval=s.sentiment.checkpoint_interval_seconds)
        async def checkpoint_timer() -> None:
            await self.checkpoint()

        @app.on_before_shutdown.connect
        async def on_shutdown(app: faust.App, **kwargs: Any) -> None:
            await self.checkpoint()

        self._agents = (enrich_agent, aggregate_agent, dispatch_agent, labels_agent)
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
        self.counters.dead_letter += 1
        logger.warning("dead letter (%s) at %s[%s]@%s: %s", stage, msg.topic, msg.partition, msg.offset, reason)

    async def handle_raw(self, events: Sequence[Any]) -> None:
        good: list[tuple[Any, RawRecord]] = []
        for ev in events:
            self.counters.raw += 1
            try:
                good.append((ev, parse_raw(ev.message.value)))
            except (ValidationError, ValueError) as exc:
                await self.dead_letter("validate", validation_reason(exc), type(exc).__name__, ev)
        if not good:
            return
        loop = asyncio.get_running_loop()
        try:
            enriched = await loop.run_in_executor(self.executor, self.stage.enrich_batch, [r for _, r in good])
        except Exception as exc:  # one poison record must not stop the stream: isolate it
            logger.exception("batch enrichment failed; retrying one by one")
            enriched = []
            for ev, rec in good:
                try:
                    enriched.extend(await loop.run_in_executor(self.executor, self.stage.enrich_batch, [rec]))
                except Exception as one_exc:
                    await self.dead_letter("enrich", validation_reason(one_exc), type(exc).__name__, ev)
        for out in enriched:
            key = (out.entity or out.event_id).encode()
            await self.t_enriched.send(key=key, value=dumps(out))
        self.counters.enriched += len(enriched)

    # -- enriched -> windows ----------------------------------------------------------------
    async def handle_enriched(self, events: Sequence[Any]) -> None:
        items = []
        for ev in events:
            try:
                items.append((EnrichedEvent.model_validate_json(ev.message.value), ev.message.partition))
            except ValidationError as exc:
                await self.dead_letter("aggregate", validation_reason(exc), "ValidationError", ev)
        res = await self.store.add_batch(items)
        self.counters.counted += res.counted
        self.counters.duplicates += res.duplicates
        if res.duplicates:
            logger.info("skipped %d redelivered events (already counted)", res.duplicates)

    # -- windows -> signals -> incidents ----------------------------------------------------
    async def detect_tick(self, max_buckets: int = 2000) -> int:
        """Judge every bucket that closed since the last tick. Returns the buckets judged."""
        B = self.settings.windows.bucket_seconds
        wm = await self.store.watermark()
        if wm is None:
            return 0
        last = int((wm - self.settings.windows.allowed_lateness_seconds) // B) * B - B
        closed = await self.store.closed()
        if closed is None:
            first = await self.store.first_event_ts()
            if first is None:
                return 0
            closed = int(first // B) * B - B
        if last <= closed:
            return 0
        ents = self._entity_keys
        det_raw = await self.store.load_state("det", ents)
        inc_raw = await self.store.load_state("inc", ents)
        dets = {e: EntityDetector.from_dict(self.settings.detect, det_raw[e]) for e in ents}
        incs = {e: IncidentState.from_dict(inc_raw[e]) for e in ents}
        judged = 0
        t = closed + B
        while t <= last and judged < max_buckets:
            stats = await self.store.bucket_stats(ents, t)
            for e in ents:
                verdicts = dets[e].update(stats[e])
                signals = [self._signal(e, t, v) for v in verdicts]
                for sig in signals:
                    await self.t_signals.send(key=e.encode(), value=dumps(sig))
                self.counters.signals += len(signals)
                tr = step(
                    incs[e],
                    e,
                    bucket_dt(t),
                    [(v.signal, v.severity) for v in verdicts],
                    quiet_buckets=self.settings.detect.resolve_after_quiet_buckets,
                )
                if tr is not None:
                    inc = await self._incident(e, t, tr, signals, stats[e])
                    await self.t_incidents.send(key=e.encode(), value=dumps(inc))
                    self.counters.incidents += 1
            judged += 1
            t += B
        await self.store.save_state(
            {"det": {e: d.to_dict() for e, d in dets.items()}, "inc": {e: i.to_dict() for e, i in incs.items()}},
            t - B,
        )
        return judged

    def _signal(self, entity: str, t: int, v: Verdict) -> Signal:
        return Signal(
            signal_id=f"{entity}:{v.signal}:{t}",
            entity=entity,
            signal=v.signal,  # type: ignore[arg-type]
            aspect=v.aspect,
            bucket_start=bucket_dt(t),
            bucket_seconds=self.settings.windows.bucket_seconds,
            value=v.value,
            baseline=v.baseline,
            scale=v.scale,
            z=v.z,
            support=v.support,
            severity=v.severity,
            detector=v.detector,
        )

    async def _incident(
        self, entity: str, t: int, tr: Transition, signals: list[Signal], stats: dict[str, float]
    ) -> Incident:
        B = self.settings.windows.bucket_seconds
        recent = [t - i * B for i in range(5)]
        tops = await self.store.top_mentions(entity, recent, k=5)
        terms = await self.store.top_terms(entity, recent, k=8)
        aspects = sorted(
            ((k.split(":")[1], int(v)) for k, v in stats.items() if k.startswith("asp:") and k.endswith(":neg")),
            key=lambda x: (-x[1], x[0]),
        )[:5]
        ent = self.settings.entity(entity)
        name = ent.name if ent else entity
        parts = [_describe(s) for s in signals]
        if tr.status == "resolved":
            title = f"RESOLVED: {name} is back to normal"
            summary = f"No crisis signal for {self.settings.detect.resolve_after_quiet_buckets} buckets."
        else:
            title = f"{tr.status.upper()}: {name} - {', '.join(s.signal.replace('_', ' ') for s in signals)}"
            summary = "; ".join(parts)
        n = stats.get("n", 0.0)
        return Incident(
            incident_id=tr.incident_id,
            entity=entity,
            status=tr.status,
            seq=tr.seq,
            severity=tr.severity,  # type: ignore[arg-type]
            opened_at=tr.opened_at,  # type: ignore[arg-type]
            updated_at=bucket_dt(t + B),
            resolved_at=bucket_dt(t + B) if tr.status == "resolved" else None,
            title=title,
            summary=summary,
            signals=signals,
            top_mentions=[
                TopMention(event_id=m["id"], text=m["text"], sentiment=m["s"], impact=m["impact"], url=m.get("url"))
                for m in tops
            ],
            top_aspects=aspects,
            top_terms=terms,
            evidence={
                "window": [bucket_dt(t).isoformat(), bucket_dt(t + B).isoformat()],
                "bucket_seconds": B,
                "bucket": {k: v for k, v in stats.items() if not k.startswith("asp:")},
                "negative_share": (stats.get("neg", 0.0) / n) if n else None,
                "detectors": sorted({s.detector for s in signals}),
                "sentiment_model": self.stage.model_version,
                "nlp_profile": self.settings.nlp.profile,
                "team": ent.team if ent else None,
                "topics": {"enriched": self.settings.topic("enriched"), "signals": self.settings.topic("signals")},
            },
        )

    # -- incidents -> notifications ---------------------------------------------------------
    async def handle_incident(self, value: bytes) -> None:
        try:
            inc = Incident.model_validate_json(value)
        except ValidationError as exc:
            logger.error("undecodable incident skipped: %s", validation_reason(exc))
            return
        deliveries = await self.dispatcher.dispatch(inc)
        for d in deliveries:
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
        await self.redis.aclose()
        self.executor.shutdown(wait=True)


def _describe(s: Signal) -> str:
    if s.signal in ("negative_share",):
        return f"negative share {s.value:.0%} vs baseline {s.baseline:.0%} (z={s.z:.1f}, n={s.support})"
    return f"{s.signal.replace('_', ' ')} {s.value:.0f} vs baseline {s.baseline:.1f} (z={s.z:.1f})"


def build_pipeline(settings: Settings, **kwargs: Any) -> Pipeline:
    return Pipeline(settings, **kwargs)
