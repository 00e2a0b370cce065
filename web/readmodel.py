"""The war room's read model: incident threads, signals and recent mentions, tailed from Kafka.

One consumer (no group: every web process reads everything) follows three topics:

- ``incidents`` from the beginning: every message of every thread (kept: the newest
  ``web.incidents_kept`` threads), and the responders' actions published beside them;
- ``signals`` from the beginning: the latest signals per entity (bounded per entity);
- ``enriched`` from the last ``web.mentions_kept`` messages: the live mention stream and search.

What responders decided (acknowledged, owner, silences) is read from Redis at request time
(:class:`alerts.controls.Controls`), so every web process and every worker agree. Each message
that arrives is published on the :class:`~web.hub.Hub` for the open pages.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from contract.records import EnrichedEvent, Incident, IncidentAction, Signal
from infra.kafka import partition_count
from infra.settings import Settings
from web.hub import Hub

__all__ = ["Mention", "ReadModel", "Thread"]

logger = logging.getLogger(__name__)
SIGNALS_PER_ENTITY = 2000


@dataclass
class Thread:
    """Every message of one incident, in ``seq`` order, and the actions seen on the topic."""

    incident_id: str
    messages: list[Incident] = field(default_factory=list)
    actions: list[IncidentAction] = field(default_factory=list)
    seen_at: float = 0.0  # wall time the web first saw it (latency figures)

    @property
    def first(self) -> Incident:
        return self.messages[0]

    @property
    def last(self) -> Incident:
        return self.messages[-1]

    def add(self, inc: Incident) -> bool:
        if any(m.seq == inc.seq for m in self.messages):
            return False  # redelivered: the thread already has it
        self.messages.append(inc)
        self.messages.sort(key=lambda m: m.seq)
        return True


@dataclass(frozen=True, slots=True)
class Mention:
    """What the stream and the search keep of an enriched mention or review (no author, no raw text)."""

    n: int
    event_id: str
    kind: str
    source: str
    entity: str | None
    entities: tuple[str, ...]
    occurred_at: str
    sentiment: str | None
    score: float | None
    aspects: tuple[str, ...]
    lang: str | None
    text: str
    url: str | None
    rating: int | None

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__ if k != "n"}

    def matches(
        self,
        *,
        entity: str | None = None,
        sentiment: str | None = None,
        aspect: str | None = None,
        lang: str | None = None,
        source: str | None = None,
        q: str | None = None,
    ) -> bool:
        if entity and entity not in self.entities and not any(e.startswith(entity + "/") for e in self.entities):
            return False
        if sentiment and self.sentiment != sentiment:
            return False
        if aspect and aspect not in self.aspects:
            return False
        if lang and self.lang != lang:
            return False
        if source and self.source != source:
            return False
        return not (q and q.lower() not in self.text.lower())


def mention_of(n: int, ev: EnrichedEvent) -> Mention | None:
    if ev.kind not in ("mention", "review"):
        return None
    ents = tuple(dict.fromkeys([*([ev.entity] if ev.entity else []), *(m.key for m in ev.entities)]))
    return Mention(
        n=n,
        event_id=ev.event_id,
        kind=ev.kind,
        source=ev.source,
        entity=ev.entity,
        entities=ents,
        occurred_at=ev.occurred_at.isoformat(),
        sentiment=ev.sentiment.label if ev.sentiment else None,
        score=round(ev.sentiment.score, 3) if ev.sentiment else None,
        aspects=tuple(sorted({a.aspect for a in ev.aspects})),
        lang=ev.lang,
        text=(ev.text_redacted or "")[:600],
        url=ev.url,
        rating=ev.rating,
    )


class ReadModel:
    def __init__(self, settings: Settings, bootstrap: str, hub: Hub) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.hub = hub
        self.threads: collections.OrderedDict[str, Thread] = collections.OrderedDict()
        self.signals: dict[str, collections.deque[Signal]] = {}
        self.mentions: collections.deque[Mention] = collections.deque(maxlen=settings.web.mentions_kept)
        self.mention_n = 0  # mentions seen so far: the stream's cursor
        self.mention_arrived = asyncio.Event()
        self.latest_event_ts = 0.0  # newest event time seen: "now" for data replayed from the past
        self.ready = asyncio.Event()
        self.started_at = time.time()
        self.lags: collections.deque[float] = collections.deque(maxlen=1000)  # publish -> read here, s
        self.topics = {t: settings.topic(t) for t in ("incidents", "signals", "enriched")}
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="repmon-web-readmodel")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()

    async def _assign(self) -> AIOKafkaConsumer:
        c = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await c.start()
        self._consumer = c
        tps: dict[str, list[TopicPartition]] = {}
        for name, topic in self.topics.items():
            # the broker's own count (waits for a topic just created); off the loop, kafka-python is blocking
            n = await asyncio.to_thread(partition_count, self.bootstrap, topic)
            tps[name] = [TopicPartition(topic, p) for p in range(n)]
        c.assign([tp for parts in tps.values() for tp in parts])
        await c.seek_to_beginning(*tps["incidents"], *tps["signals"])
        enriched = tps["enriched"]
        if enriched:
            begins, ends = await c.beginning_offsets(enriched), await c.end_offsets(enriched)
            per = max(1, self.settings.web.mentions_kept // len(enriched))
            for tp in enriched:
                c.seek(tp, max(begins[tp], ends[tp] - per))
        for tp in c.assignment():  # fix every position now: a message produced after ready is never skipped
            await c.position(tp)
        return c

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                c = await self._assign()
                self.ready.set()
                delay = 0.5
                while True:
                    batch = await c.getmany(timeout_ms=500, max_records=2000)
                    for tp, msgs in batch.items():
                        for m in msgs:
                            self._on_message(tp.topic, m.value, m.timestamp / 1000.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker went away: keep what we have, reconnect
                logger.error("web read model: %s: %s (reconnecting in %.1f s)", type(exc).__name__, exc, delay)
                if self._consumer is not None:
                    with contextlib.suppress(Exception):
                        await self._consumer.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    # -- messages -------------------------------------------------------------------------
    def _on_message(self, topic: str, value: bytes | None, published: float | None = None) -> None:
        if value is None:
            return
        try:
            if topic == self.topics["incidents"]:
                data = orjson.loads(value)
                if isinstance(data, dict) and data.get("kind") == "action":
                    self._on_action(IncidentAction.model_validate(data))
                else:
                    self._on_incident(Incident.model_validate(data), published)
            elif topic == self.topics["signals"]:
                self._on_signal(Signal.model_validate_json(value))
            elif topic == self.topics["enriched"]:
                self._on_enriched(EnrichedEvent.model_validate_json(value))
        except (ValidationError, orjson.JSONDecodeError) as exc:  # the dead letters are the worker's; skip here
            logger.warning("web read model: unreadable message on %s skipped: %s", topic, str(exc)[:200])

    def _on_incident(self, inc: Incident, published: float | None = None) -> None:
        th = self.threads.get(inc.incident_id)
        if th is None:
            th = self.threads[inc.incident_id] = Thread(inc.incident_id, seen_at=time.time())
            while len(self.threads) > self.settings.web.incidents_kept:
                self.threads.popitem(last=False)
        if not th.add(inc):
            return
        if published is not None and self.ready.is_set() and published > self.started_at:
            # published while we were following (not read back from history): the live lag
            self.lags.append(time.time() - published)
        self.latest_event_ts = max(self.latest_event_ts, inc.updated_at.timestamp())
        self.hub.publish(
            "incident",
            {
                "incident_id": inc.incident_id,
                "seq": inc.seq,
                "status": inc.status,
                "entity": inc.entity,
                "severity": inc.severity,
                "title": inc.title,
                "updated_at": inc.updated_at,
            },
        )

    def _on_action(self, act: IncidentAction) -> None:
        if act.incident_id and act.incident_id in self.threads:
            th = self.threads[act.incident_id]
            if all(a.action_id != act.action_id for a in th.actions):
                th.actions.append(act)
        self.hub.publish("action", act.model_dump(mode="json"))

    def _on_signal(self, sig: Signal) -> None:
        q = self.signals.get(sig.entity)
        if q is None:
            q = self.signals[sig.entity] = collections.deque(maxlen=SIGNALS_PER_ENTITY)
        q.append(sig)
        self.hub.publish("signal", {"entity": sig.entity, "signal": sig.signal, "severity": sig.severity})

    def _on_enriched(self, ev: EnrichedEvent) -> None:
        self.latest_event_ts = max(self.latest_event_ts, ev.occurred_at.timestamp())
        m = mention_of(self.mention_n + 1, ev)
        if m is None:
            return
        self.mention_n += 1
        self.mentions.append(m)
        self.mention_arrived.set()

    # -- reads ----------------------------------------------------------------------------
    def now(self) -> float:
        """The newest event time seen (replays of the past), else the wall clock."""
        return self.latest_event_ts or time.time()

    def newest_threads(self) -> list[Thread]:
        return sorted(self.threads.values(), key=lambda t: (t.first.opened_at, t.incident_id), reverse=True)

    def mentions_since(self, cursor: int) -> list[Mention]:
        """Mentions after ``cursor`` still in memory, oldest first."""
        if not self.mentions or self.mentions[-1].n <= cursor:
            return []
        start = max(0, len(self.mentions) - (self.mentions[-1].n - cursor))
        return [self.mentions[i] for i in range(start, len(self.mentions))]

    def find_mention(self, event_id: str) -> Mention | None:
        return next((m for m in reversed(self.mentions) if m.event_id == event_id), None)
