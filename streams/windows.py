"""Rolling trust windows in Redis: event-time buckets, counted idempotently.

Keys (``p`` is ``settings.redis.key_prefix``, ``B`` the bucket size, ``t`` a bucket start in epoch s):

- ``p:seen:{entity}:{event_id}``  marks an event counted for an entity, until its event time leaves
                                  the live horizon (backfill: ``dedupe_ttl_seconds``);
- ``p:b:{entity}:{t}``            hash of counters for one bucket (TTL ``bucket_retention_seconds``);
- ``p:act:{t}``                   set of the entities with counts in bucket ``t`` (TTL as the buckets),
                                  so the leader reads the counters of the few that talked, not of all;
- ``p:h:{entity}:{hour}``         the same counters rolled up per hour (TTL ``retention_seconds``), so
                                  memory per entity is bounded: fine buckets for days, hours for a month;
- ``p:top:{entity}:{t}``          sorted set of the most negative, most far-reaching mentions;
- ``p:terms:{entity}:{t}``        hash of terms in negative mentions;
- ``p:wm`` / ``p:wmt``            per-partition max event time / wall time of its last update;
- ``p:idle``                      per-partition wall time of its consumer's last "caught up with the
                                  broker's high-water mark" report, and the offset it was caught up to;
- ``p:stats``                     counters: ``counted`` and ``duplicates`` (per event and entity);

Detector and incident state are not kept here but behind :mod:`streams.state`.
:class:`MemoryWindows` counts the same way in process (the backtest and unit tests).

Counting is one Lua script per batch: each (event, entity) is recorded with ``SET NX`` and its
buckets updated in the same atomic step, so a redelivered batch is never counted twice.
Watermark: the highest event time of each *raw* partition, advanced by the worker that reads
that partition in order, right after counting its events; the effective watermark is the minimum
over every partition that may still bring events (see :meth:`Windows.watermark`), so one partition
running ahead, a partition whose worker has not started yet, or one whose worker died, cannot let a
bucket be judged while it still holds events for it (replay gives the same windows as live).
"""

from __future__ import annotations

import bisect
import logging
import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aredis
from spacy.lang.en.stop_words import STOP_WORDS

from contract.records import EnrichedEvent
from infra.settings import DEFAULT_RATING_LABELS, Settings
from models.sentiment import rating_to_label
from models.trust import trust_score

__all__ = [
    "AddResult",
    "Enriched",
    "MemoryWindows",
    "RedisWindows",
    "Windows",
    "as_doc",
    "bucket_dt",
    "bucket_of",
    "contributions",
]

logger = logging.getLogger(__name__)

STATS_CHUNK = 250  # entities whose bucket counters one round trip reads

_ADD_BATCH_LUA = """
-- One call per batch. KEYS: wm, wmt, first, stats, then per item: seen, bucket, top, terms, hour, act.
-- ARGV: seen_ttl, bucket_ttl, rollup_ttl, top_cap, now, items_json; an item is
-- [partition, event_ts, fields, top_member, top_score, terms, claim_until, entity].
-- Each (event, entity) is claimed with SET NX before anything is added, so a redelivered batch
-- (or an event twice in one batch) counts once; the counters of the items claimed are summed per
-- bucket and hour first, so a batch costs one HINCRBYFLOAT per bucket and field, not per event.
-- claim_until > 0 (live mode): the claim lives until the event time leaves the horizon, by this
-- server's clock, and an item whose horizon has passed is refused (2), never counted: any count
-- happens while its claim is alive, so a redelivery is a duplicate or refused, never a second
-- count. 0 (backfill): the claim lives seen_ttl seconds.
local items = cjson.decode(ARGV[6])
local clock = tonumber(redis.call('TIME')[1])
local out = {}
local buckets = {sums = {}, order = {}, ttl = ARGV[2]}
local hours = {sums = {}, order = {}, ttl = ARGV[3]}
local touched_top, touched_terms, active = {}, {}, {}
local counted, dup = 0, 0
local wm, first = {}, nil
local function add(into, key, fields)
  local acc = into.sums[key]
  if not acc then acc = {}; into.sums[key] = acc; table.insert(into.order, key) end
  for k, v in pairs(fields) do acc[k] = (acc[k] or 0) + v end
end
for i, it in ipairs(items) do
  local base = 4 + (i - 1) * 6
  local part, ts, until_ = tostring(it[1]), tonumber(it[2]), tonumber(it[7])
  local claimed
  if until_ > 0 then
    claimed = until_ > clock and redis.call('SET', KEYS[base + 1], '1', 'NX', 'EXAT', until_)
  else
    claimed = redis.call('SET', KEYS[base + 1], '1', 'NX', 'EX', ARGV[1])
  end
  if until_ > 0 and until_ <= clock then
    out[i] = 2
  elseif claimed then
    counted = counted + 1
    out[i] = 1
    add(buckets, KEYS[base + 2], it[3])
    add(hours, KEYS[base + 5], it[3])
    local act = active[KEYS[base + 6]]
    if not act then act = {}; active[KEYS[base + 6]] = act end
    act[it[8]] = true
    if it[4] ~= '' then
      redis.call('ZADD', KEYS[base + 3], it[5], it[4])
      touched_top[KEYS[base + 3]] = true
    end
    if #it[6] > 0 then
      for _, t in ipairs(it[6]) do redis.call('HINCRBY', KEYS[base + 4], t, 1) end
      touched_terms[KEYS[base + 4]] = true
    end
  else
    dup = dup + 1
    out[i] = 0
  end
  if out[i] ~= 2 then  -- a refused event moves no watermark
    if (not wm[part]) or ts > wm[part] then wm[part] = ts end
    if (not first) or ts < first then first = ts end
  end
end
for _, into in ipairs({buckets, hours}) do
  for _, key in ipairs(into.order) do
    for k, v in pairs(into.sums[key]) do redis.call('HINCRBYFLOAT', key, k, v) end
    redis.call('EXPIRE', key, into.ttl)
  end
end
for key in pairs(touched_top) do
  redis.call('ZREMRANGEBYRANK', key, 0, -(tonumber(ARGV[4]) + 1))
  redis.call('EXPIRE', key, ARGV[2])
end
for key in pairs(touched_terms) do redis.call('EXPIRE', key, ARGV[2]) end
for key, members in pairs(active) do
  local list = {}
  for m in pairs(members) do table.insert(list, m) end
  for j = 1, #list, 1000 do  -- unpack is bounded by Lua's stack
    redis.call('SADD', key, unpack(list, j, math.min(j + 999, #list)))
  end
  redis.call('EXPIRE', key, ARGV[2])
end
if counted > 0 then redis.call('HINCRBY', KEYS[4], 'counted', counted) end
if dup > 0 then redis.call('HINCRBY', KEYS[4], 'duplicates', dup) end
for part, ts in pairs(wm) do
  local cur = tonumber(redis.call('HGET', KEYS[1], part) or '-1')
  if ts > cur then redis.call('HSET', KEYS[1], part, string.format('%.17g', ts)) end
  redis.call('HSET', KEYS[2], part, ARGV[5])
end
if first then
  local cur = redis.call('GET', KEYS[3])
  if (not cur) or first < tonumber(cur) then redis.call('SET', KEYS[3], string.format('%.17g', first)) end
end
return out
"""

_WORD = re.compile(r"[^\W\d_][^\W\d_']{2,}")  # words of any script: "pésimo", "verspätet"


def bucket_of(ts: float, bucket_seconds: int) -> int:
    """Start (epoch seconds) of the bucket holding ``ts``.

    >>> bucket_of(125.0, 60)
    120
    """
    return int(math.floor(ts / bucket_seconds) * bucket_seconds)


#: An enriched record: the model, or the dict in its JSON shape that the worker builds
#: (:meth:`streams.enrich.EnrichStage.enrich_docs`), read here without building a model.
Enriched = EnrichedEvent | Mapping[str, Any]


def as_doc(ev: Enriched) -> Mapping[str, Any]:
    """The record in its JSON shape (a dict passes through as it is)."""
    return ev.model_dump(mode="json") if isinstance(ev, EnrichedEvent) else ev


def own_sentiment(ev: Enriched, entity: str | None) -> Mapping[str, Any] | None:
    """The sentiment ``entity`` gets from ``ev`` (as a dict): its own clause or side when the text
    names several entities, else the text's."""
    d = as_doc(ev)
    sentiment = d["sentiment"]
    if entity is not None and sentiment is not None:
        ents = d["entities"]
        own = next((m["sentiment"] for m in ents if m["key"] == entity and m["sentiment"] is not None), None)
        if own is None and "/" in entity:  # a product named in a multi-brand text goes with its brand
            brand = entity.split("/", 1)[0]
            own = next((m["sentiment"] for m in ents if m["key"] == brand and m["sentiment"] is not None), None)
        sentiment = own or sentiment
    return sentiment


def contributions(
    ev: Enriched, entity: str | None = None, rating_labels: Mapping[str, str] | None = None
) -> dict[str, float]:
    """The counters one enriched event adds to its bucket, ``entity``'s when given (names:
    :mod:`models.signals`).

    Every mention and review with text has a sentiment, in whatever language (a language the
    model has not learned yet is scored with low confidence), so all of them count in ``n``.
    When the text names several entities, each entity counts its own sentiment (its clause, its
    side of a comparison), not the whole text's. ``rating_labels`` (``sentiment.rating_labels``)
    judges the sentiment model's own error on reviews by their stars, the map the model learns from.

    >>> from datetime import datetime, UTC
    >>> from contract.records import Sentiment
    >>> s = Sentiment(score=-0.6, label="negative", confidence=0.9, model_version="m")
    >>> ev = EnrichedEvent(event_id="x:1", kind="mention", source="x", occurred_at=datetime.now(UTC),
    ...                    ingested_at=datetime.now(UTC), entity="acme", sentiment=s, impact=2.0)
    >>> sorted(contributions(ev).items())
    [('events', 1.0), ('impact', 2.0), ('impact_neg', 2.0), ('n', 1.0), ('neg', 1.0), ('sent_sum', -0.6)]
    """
    from models import signals as C  # the counter names

    d = as_doc(ev)
    kind, rating, aspects = d["kind"], d["rating"], d["aspects"]
    out: dict[str, float] = {C.EVENTS: 1.0}
    sentiment = own_sentiment(d, entity)
    if kind in ("mention", "review") and sentiment is not None:
        label = sentiment["label"]
        out[C.N] = 1.0
        out[C.LABEL_COUNTER[label]] = 1.0
        out[C.SENT_SUM] = sentiment["score"]
        out[C.IMPACT] = d["impact"]
        if label == "negative":
            out[C.IMPACT_NEG] = d["impact"]
        if any(h["sentiment"] < 0 for h in aspects):
            out[C.COMPLAINTS] = 1.0
        for a in {a["aspect"] for a in aspects}:
            neg_key, n_key = C.aspect_keys(a)
            out[n_key] = 1.0
            if any(h["aspect"] == a and h["sentiment"] < 0 for h in aspects):
                out[neg_key] = 1.0
    elif kind in ("mention", "review"):
        out[C.UNSCORED] = 1.0  # a mention or review without text (a rating alone): counted, not scored
    if kind == "review" and rating is not None and d["sentiment"] is not None:
        truth = rating_to_label(rating, rating_labels or DEFAULT_RATING_LABELS)
        if truth is not None:
            out[C.MODEL_N] = 1.0
            if truth != d["sentiment"]["label"]:
                out[C.MODEL_ERR] = 1.0
    if kind == "review" and rating is not None:
        out[C.RATING_N] = 1.0
        out[C.RATING_SUM] = float(rating)
        out[C.RATING_SQ] = float(rating) ** 2
    status = d["purchase_status"]
    if kind == "purchase" and status:
        out[C.PURCHASE_PREFIX + status] = 1.0
        if status in ("placed", "paid"):
            out[C.REVENUE] = float(d["amount"] or 0.0)
    metric, score = d["metric"], d["score"]
    if kind == "feedback" and metric and score is not None:
        out[f"{metric}_n"] = 1.0  # nps_n, csat_n, ces_n
        out[f"{metric}_sum"] = float(score)
        if metric == "nps":
            if score >= 9:
                out[C.NPS_PRO] = 1.0
            elif score <= 6:
                out[C.NPS_DET] = 1.0
    return out


@dataclass
class AddResult:
    counted: int = 0
    duplicates: int = 0
    unmatched: int = 0
    #: ids of events refused because their event time left the horizon between validation and
    #: counting (their dedupe claims may be gone): counted nowhere, to be dead-lettered
    expired: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Counted:
    """What one event adds to each of its entities' buckets."""

    event_id: str
    entities: list[str]
    ts: float
    fields: dict[str, float]
    top_member: str  # JSON of a top mention, or "" when the event is not one
    top_score: float
    terms: list[str]
    per_entity: dict[str, dict[str, float]] | None = None  # entities whose own sentiment differs
    # per entity of a multi-entity text: (top member, its score, terms), from its own sentiment
    per_entity_top: dict[str, tuple[str, float, list[str]]] | None = None

    def fields_for(self, key: str) -> dict[str, float]:
        return self.per_entity.get(key, self.fields) if self.per_entity else self.fields

    def top_for(self, key: str) -> tuple[str, float, list[str]]:
        default = (self.top_member, self.top_score, self.terms)
        return self.per_entity_top.get(key, default) if self.per_entity_top else default


class Windows(ABC):
    """Event-time buckets per entity: counted idempotently, read back for detection and trust."""

    top_cap = 10
    #: a partition's "caught up" report counts this long; after that it holds the watermark
    #: back again (its worker may be gone, and new events may have arrived since)
    idle_report_seconds = 5.0

    def __init__(
        self, settings: Settings, *, partitions: int | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.clock = clock
        # partitions: how many raw partitions must have counted past a bucket before it is judged;
        # None (backtest, unit tests) counts the partitions that have reported events
        self.partitions = partitions
        self.settings = settings
        self.B = settings.windows.bucket_seconds
        self._stop = set(STOP_WORDS)
        for e in settings.entities:
            self._stop.update(w.lower() for w in re.findall(r"\w+", " ".join([e.name, *e.aliases])))

    # -- what an event adds -----------------------------------------------------------------
    def _terms(self, d: Mapping[str, Any], sentiment: Mapping[str, Any] | None) -> list[str]:
        text = d["text_redacted"]
        if not text or sentiment is None or sentiment["label"] != "negative":
            return []
        words = _WORD.findall(text.lower())
        return sorted({w for w in words if w not in self._stop and not w.startswith("'")})[:20]

    @staticmethod
    def _top(d: Mapping[str, Any], sentiment: Mapping[str, Any] | None) -> tuple[str, float]:
        if d["kind"] != "mention" or sentiment is None or sentiment["score"] >= 0:
            return "", 0.0
        score, impact = sentiment["score"], d["impact"]
        member = orjson.dumps(
            {
                "id": d["event_id"],
                "text": (d["text_redacted"] or "")[:280],
                "s": round(score, 3),
                "impact": round(impact, 3),
                "url": d["url"],
            }
        ).decode()
        return member, -score * impact

    def counted(self, ev: Enriched) -> Counted | None:
        """The event's contribution, or None when it names no tracked entity.

        In a text naming several entities each counts its own sentiment: "Skyline is better than
        Northwind" is a negative mention (top mention, terms) of Northwind only.
        """
        d = as_doc(ev)
        ents = d["entities"]
        keys = sorted({m["key"] for m in ents} | ({d["entity"]} if d["entity"] else set()))
        if not keys:
            return None
        top_member, top_score = self._top(d, d["sentiment"])
        per = per_top = None
        labels = self.settings.sentiment.rating_labels
        if any(m["sentiment"] for m in ents):
            per = {k: contributions(d, k, labels) for k in keys}
            per_top = {}
            for k in keys:
                sent = own_sentiment(d, k)
                member, score = self._top(d, sent)
                per_top[k] = (member, score, self._terms(d, sent))
        return Counted(
            d["event_id"],
            keys,
            datetime.fromisoformat(d["occurred_at"]).timestamp(),
            contributions(d, rating_labels=labels),
            top_member,
            top_score,
            self._terms(d, d["sentiment"]),
            per,
            per_top,
        )

    # -- writes and reads, per backend ------------------------------------------------------
    @abstractmethod
    async def add_batch(
        self, items: Sequence[tuple[Enriched, int]], *, claim_horizon: float | None = None
    ) -> AddResult:
        """Count each ``(event, partition)`` into its entities' buckets; idempotent per event id.

        ``claim_horizon`` (the worker's live horizon, seconds): each (event, entity) is remembered
        until its event time is that old, not for ``dedupe_ttl_seconds``, and an event already
        that old is refused (in ``AddResult.expired``), never counted, so every count happens
        while its claim lives and a redelivery is a duplicate or refused. None: claims live
        ``dedupe_ttl_seconds`` (backfill, tools)."""

    @abstractmethod
    async def _partitions(self) -> tuple[dict[str, float], dict[str, float]]:
        """``({partition: max event time}, {partition: wall time of its last update})``."""

    @abstractmethod
    async def stats(self) -> dict[str, int]: ...

    @abstractmethod
    async def first_event_ts(self) -> float | None: ...

    @abstractmethod
    async def bucket_stats(self, entities: Iterable[str], t: int) -> dict[str, dict[str, float]]: ...

    async def counted_entities(self, t: int) -> set[str] | None:
        """The entities with counts in bucket ``t`` (every other one's counters are empty there);
        None from windows that cannot tell (then every entity's counters are read)."""
        return None

    @abstractmethod
    async def _rows(self, entity: str, ts: Sequence[int], hourly: bool) -> list[dict[str, float]]:
        """The counters of ``entity`` in each bucket start of ``ts`` (fine or hourly buckets)."""

    @abstractmethod
    async def _tops(self, entity: str, buckets: Sequence[int], k: int) -> list[tuple[float, str]]:
        """``(score, member JSON)`` of the top mentions of each bucket."""

    @abstractmethod
    async def _term_rows(self, entity: str, buckets: Sequence[int]) -> list[dict[str, int]]: ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass

    async def next_counted(self, t: int, last: int) -> int | None:
        """The first bucket start in ``[t, last]`` that may hold counts; None when none does.

        Windows that cannot tell cheaply answer ``t`` (every bucket is judged, as live does)."""
        return t if t <= last else None

    # -- time -------------------------------------------------------------------------------
    @abstractmethod
    async def _idle_reports(self) -> dict[str, tuple[float, int | None]]:
        """``{partition: (wall time of its last "caught up with the broker" report, the offset it
        was caught up to, if known)}``."""

    @abstractmethod
    async def report_partitions(self, idle: Mapping[int, int | bool | None], now: float) -> None:
        """Record which raw partitions are caught up with their broker high-water mark: per
        partition, the offset it was caught up to (``True``: caught up, offset not known), or
        ``None``/``False`` when it is not."""

    async def watermark(
        self,
        *,
        high: bool = False,
        ends: Mapping[int, int] | Callable[[], Awaitable[Mapping[int, int]]] | None = None,
    ) -> float | None:
        """Effective event-time watermark: the minimum over the partitions that may still bring events.

        With ``partitions`` set (the worker), every raw partition counts: one holds the watermark at
        its max event time (or holds everything, before its first event) unless its consumer
        reported in the last ``idle_report_seconds`` that it has processed everything up to the
        broker's high-water mark. So a bucket is never judged while a partition that has not
        reported yet, or whose worker died, may still hold its events. ``ends`` (the broker's end
        offset per partition, as the leader just read it) refines that: a report counts only if
        nothing was written to its partition since, so a worker that stalls right after saying
        "caught up" cannot let the others' buckets be judged without what arrived meanwhile.
        ``ends`` may be a coroutine function: it is then asked only when a fresh report names an
        offset to check (a busy stream, where every partition counts events, asks nothing).
        ``high=True`` gives the max instead: how far the furthest partition has counted.
        """
        parts, _ = await self._partitions()
        if not parts:
            return None
        if high:
            return max(parts.values())
        if self.partitions is None:
            return min(parts.values())
        now = self.clock()
        fresh = {
            p: offset
            for p, (at, offset) in (await self._idle_reports()).items()
            if now - at <= self.idle_report_seconds
        }
        if callable(ends):
            ends = await ends() if any(o is not None for o in fresh.values()) else None
        idle = {
            p
            for p, offset in fresh.items()
            if ends is None or offset is None or int(p) not in ends or offset >= ends[int(p)]
        }
        holding = [parts.get(str(p)) for p in range(self.partitions) if str(p) not in idle]
        if not holding:
            return max(parts.values())  # everything caught up: nothing more can come for now
        if any(h is None for h in holding):
            return None  # a partition that may hold events has not counted any yet
        return min(h for h in holding if h is not None)

    # -- reads ------------------------------------------------------------------------------
    async def window_stats(self, entity: str, start: int, end: int) -> dict[str, float]:
        """Sum of the counters in ``[start, end)``: from fine buckets for windows up to an hour
        (or not aligned on hours), else from the hourly rollups."""
        hourly = end - start > 3600 and start % 3600 == 0 and end % 3600 == 0
        step = 3600 if hourly else self.B
        total: dict[str, float] = {}
        for row in await self._rows(entity, range(start, end, step), hourly):
            for k, v in row.items():
                total[k] = total.get(k, 0.0) + v
        return total

    async def trust(self, entity: str, window_seconds: int, at: float) -> dict[str, Any]:
        """Trust score of ``entity`` over the window ending at ``at``, beside its baseline.

        Windows of an hour or less use fine buckets; longer ones the hourly rollups (aligned on
        the hour). The baseline is the 7 windows before (4 for 7 d, 1 for 30 d): the measures
        are ratios, so a longer baseline only steadies them.
        """
        step = self.B if window_seconds <= 3600 else 3600
        end = bucket_of(at, step) + step
        start = end - window_seconds
        k = 7 if window_seconds <= 86400 else (4 if window_seconds <= 7 * 86400 else 1)
        cur = await self.window_stats(entity, start, end)
        base = await self.window_stats(entity, start - k * window_seconds, start)
        score = trust_score(cur, base)
        return {
            "entity": entity,
            "window": [bucket_dt(start).isoformat(), bucket_dt(end).isoformat()],
            "baseline_window": [bucket_dt(start - k * window_seconds).isoformat(), bucket_dt(start).isoformat()],
            "volume": cur.get("events", 0.0),
            **score.as_dict(),
        }

    async def top_mentions(self, entity: str, buckets: Sequence[int], k: int = 5) -> list[dict[str, Any]]:
        items = [(score, orjson.loads(m)) for score, m in await self._tops(entity, buckets, k)]
        items.sort(key=lambda x: -x[0])
        seen: set[str] = set()
        out = []
        for _, m in items:
            if m["id"] not in seen:
                seen.add(m["id"])
                out.append(m)
        return out[:k]

    async def top_terms(self, entity: str, buckets: Sequence[int], k: int = 8) -> list[tuple[str, int]]:
        counts: dict[str, int] = {}
        for row in await self._term_rows(entity, buckets):
            for term, c in row.items():
                counts[term] = counts.get(term, 0) + c
        return sorted(counts.items(), key=lambda x: (-x[1], x[0]))[:k]


class RedisWindows(Windows):
    """The buckets in Redis. One instance per worker; async, never blocks."""

    def __init__(
        self,
        redis: aredis.Redis,
        settings: Settings,
        *,
        partitions: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(settings, partitions=partitions, clock=clock)
        self.r = redis
        self.p = settings.redis.key_prefix
        self._add = self.r.register_script(_ADD_BATCH_LUA)

    # -- keys -------------------------------------------------------------------------------
    def k_bucket(self, entity: str, t: int) -> str:
        return f"{self.p}:b:{entity}:{t}"

    def k_active(self, t: int) -> str:
        return f"{self.p}:act:{t}"

    def k_hour(self, entity: str, t: int) -> str:
        return f"{self.p}:h:{entity}:{t}"

    def k_top(self, entity: str, t: int) -> str:
        return f"{self.p}:top:{entity}:{t}"

    def k_terms(self, entity: str, t: int) -> str:
        return f"{self.p}:terms:{entity}:{t}"

    # -- writes -----------------------------------------------------------------------------
    async def add_batch(
        self, items: Sequence[tuple[Enriched, int]], *, claim_horizon: float | None = None
    ) -> AddResult:
        res = AddResult()
        w = self.settings.windows
        keys = [f"{self.p}:wm", f"{self.p}:wmt", f"{self.p}:first", f"{self.p}:stats"]
        rows: list[list[Any]] = []
        ids: list[str] = []
        horizon = claim_horizon
        for ev, partition in items:
            c = self.counted(ev)
            if c is None:
                res.unmatched += 1
                continue
            t = bucket_of(c.ts, self.B)
            until = math.ceil(c.ts + horizon) if horizon is not None else 0
            for key in c.entities:
                ids.append(c.event_id)
                top_member, top_score, key_terms = c.top_for(key)
                keys += [
                    f"{self.p}:seen:{key}:{c.event_id}",
                    self.k_bucket(key, t),
                    self.k_top(key, t),
                    self.k_terms(key, t),
                    self.k_hour(key, bucket_of(c.ts, 3600)),
                    self.k_active(t),
                ]
                rows.append([partition, c.ts, c.fields_for(key), top_member, top_score, key_terms, until, key])
        if not rows:
            return res
        args = [w.dedupe_ttl_seconds, w.bucket_retention_seconds, w.retention_seconds, self.top_cap, time.time()]
        results = await self._add(keys=keys, args=[*args, orjson.dumps(rows).decode()])
        expired: dict[str, None] = {}
        for event_id, r in zip(ids, results, strict=True):
            if int(r) == 1:
                res.counted += 1
            elif int(r) == 2:
                expired[event_id] = None
            else:
                res.duplicates += 1
        res.expired = list(expired)
        return res

    # -- reads ------------------------------------------------------------------------------
    async def _partitions(self) -> tuple[dict[str, float], dict[str, float]]:
        wm = await self.r.hgetall(f"{self.p}:wm")
        wall = await self.r.hgetall(f"{self.p}:wmt") if wm else {}
        return {_s(k): float(v) for k, v in wm.items()}, {_s(k): float(v) for k, v in wall.items()}

    async def _idle_reports(self) -> dict[str, tuple[float, int | None]]:
        raw = await self.r.hgetall(f"{self.p}:idle")
        return {_s(k): _idle_report(_s(v)) for k, v in raw.items()}

    async def report_partitions(self, idle: Mapping[int, int | bool | None], now: float) -> None:
        if not idle:
            return
        async with self.r.pipeline(transaction=False) as pipe:
            for p, caught_up in idle.items():
                if caught_up is None or caught_up is False:
                    pipe.hdel(f"{self.p}:idle", str(p))
                else:  # "<wall time>" or "<wall time>:<offset caught up to>"
                    at = repr(now) if caught_up is True else f"{now!r}:{int(caught_up)}"
                    pipe.hset(f"{self.p}:idle", str(p), at)
            await pipe.execute()

    async def stats(self) -> dict[str, int]:
        raw = await self.r.hgetall(f"{self.p}:stats")
        return {_s(k): int(v) for k, v in raw.items()}

    async def first_event_ts(self) -> float | None:
        v = await self.r.get(f"{self.p}:first")
        return float(v) if v is not None else None

    async def bucket_stats(self, entities: Iterable[str], t: int) -> dict[str, dict[str, float]]:
        ents = list(entities)
        out: dict[str, dict[str, float]] = {}
        # a pipeline's replies are parsed without a turn for other tasks: a thousand entities'
        # counters in one held the event loop for a fifth of a second, so a few round trips
        for i in range(0, len(ents), STATS_CHUNK):
            chunk = ents[i : i + STATS_CHUNK]
            async with self.r.pipeline(transaction=False) as pipe:
                for e in chunk:
                    pipe.hgetall(self.k_bucket(e, t))
                rows = await pipe.execute()
            out.update((e, {_s(k): float(v) for k, v in row.items()}) for e, row in zip(chunk, rows, strict=True))
        return out

    async def counted_entities(self, t: int) -> set[str] | None:
        return {_s(m) for m in await self.r.smembers(self.k_active(t))}

    async def _rows(self, entity: str, ts: Sequence[int], hourly: bool) -> list[dict[str, float]]:
        key = self.k_hour if hourly else self.k_bucket
        async with self.r.pipeline(transaction=False) as pipe:
            for t in ts:
                pipe.hgetall(key(entity, t))
            rows = await pipe.execute()
        return [{_s(k): float(v) for k, v in row.items()} for row in rows]

    async def _tops(self, entity: str, buckets: Sequence[int], k: int) -> list[tuple[float, str]]:
        async with self.r.pipeline(transaction=False) as pipe:
            for t in buckets:
                pipe.zrevrange(self.k_top(entity, t), 0, k - 1, withscores=True)
            rows = await pipe.execute()
        return [(float(score), _s(m)) for row in rows for m, score in row]

    async def _term_rows(self, entity: str, buckets: Sequence[int]) -> list[dict[str, int]]:
        async with self.r.pipeline(transaction=False) as pipe:
            for t in buckets:
                pipe.hgetall(self.k_terms(entity, t))
            rows = await pipe.execute()
        return [{_s(k): int(v) for k, v in row.items()} for row in rows]


class MemoryWindows(Windows):
    """The same counting in process: the backtest and unit tests, no Redis.

    Nothing expires (a backtest holds the whole replay); everything else is as in Redis: one
    count per ``(entity, event_id)``, per-partition watermarks, top mentions capped per bucket.

    >>> from datetime import datetime, UTC
    >>> from infra.settings import Settings
    >>> w = MemoryWindows(Settings(entities=[{"name": "Acme"}]))
    >>> ev = EnrichedEvent(event_id="x:1", kind="mention", source="x", occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
    ...                    ingested_at=datetime.now(UTC), entity="acme")
    >>> import asyncio
    >>> asyncio.run(w.add_batch([(ev, 0), (ev, 0)]))
    AddResult(counted=1, duplicates=1, unmatched=0, expired=[])
    """

    def __init__(
        self, settings: Settings, *, partitions: int | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(settings, partitions=partitions, clock=clock)
        self.idle: dict[str, tuple[float, int | None]] = {}
        self.seen: set[tuple[str, str]] = set()
        self.starts: list[int] = []  # sorted bucket starts with counts, for next_counted
        self._started: set[int] = set()
        self.active: dict[int, set[str]] = {}  # bucket start -> entities with counts in it
        self.buckets: dict[tuple[str, int], dict[str, float]] = {}
        self.hours: dict[tuple[str, int], dict[str, float]] = {}
        self.tops: dict[tuple[str, int], dict[str, float]] = {}
        self.terms: dict[tuple[str, int], dict[str, int]] = {}
        self.wm: dict[str, float] = {}
        self.wmt: dict[str, float] = {}
        self.first: float | None = None
        self.counts = {"counted": 0, "duplicates": 0}

    async def add_batch(
        self, items: Sequence[tuple[Enriched, int]], *, claim_horizon: float | None = None
    ) -> AddResult:
        res = AddResult()
        now = time.time()
        for ev, partition in items:
            c = self.counted(ev)
            if c is None:
                res.unmatched += 1
                continue
            if claim_horizon is not None and c.ts + claim_horizon <= self.clock():
                res.expired.append(c.event_id)  # as Redis refuses it: nothing expires here, but parity
                continue
            t = bucket_of(c.ts, self.B)
            for key in c.entities:
                if (key, c.event_id) in self.seen:
                    res.duplicates += 1
                    self.counts["duplicates"] += 1
                else:
                    self.seen.add((key, c.event_id))
                    res.counted += 1
                    self.counts["counted"] += 1
                    if t not in self._started:
                        self._started.add(t)
                        bisect.insort(self.starts, t)
                    self.active.setdefault(t, set()).add(key)
                    for row in (
                        self.buckets.setdefault((key, t), {}),
                        self.hours.setdefault((key, bucket_of(c.ts, 3600)), {}),
                    ):
                        for k, v in c.fields_for(key).items():
                            row[k] = row.get(k, 0.0) + v
                    top_member, top_score, key_terms = c.top_for(key)
                    if top_member:
                        top = self.tops.setdefault((key, t), {})
                        top[top_member] = top_score
                        if len(top) > self.top_cap:
                            del top[min(top, key=lambda m: (top[m], m))]
                    if key_terms:
                        tr = self.terms.setdefault((key, t), {})
                        for term in key_terms:
                            tr[term] = tr.get(term, 0) + 1
                p = str(partition)
                self.wm[p] = max(self.wm.get(p, -1.0), c.ts)
                self.wmt[p] = now
                self.first = c.ts if self.first is None else min(self.first, c.ts)
        return res

    async def next_counted(self, t: int, last: int) -> int | None:
        i = bisect.bisect_left(self.starts, t)
        return self.starts[i] if i < len(self.starts) and self.starts[i] <= last else None

    async def _partitions(self) -> tuple[dict[str, float], dict[str, float]]:
        return dict(self.wm), dict(self.wmt)

    async def _idle_reports(self) -> dict[str, tuple[float, int | None]]:
        return dict(self.idle)

    async def report_partitions(self, idle: Mapping[int, int | bool | None], now: float) -> None:
        for p, caught_up in idle.items():
            if caught_up is None or caught_up is False:
                self.idle.pop(str(p), None)
            else:
                self.idle[str(p)] = (now, None if caught_up is True else int(caught_up))

    async def stats(self) -> dict[str, int]:
        return dict(self.counts)

    async def first_event_ts(self) -> float | None:
        return self.first

    async def bucket_stats(self, entities: Iterable[str], t: int) -> dict[str, dict[str, float]]:
        return {e: dict(self.buckets.get((e, t), {})) for e in entities}

    async def counted_entities(self, t: int) -> set[str] | None:
        return set(self.active.get(t, ()))

    async def _rows(self, entity: str, ts: Sequence[int], hourly: bool) -> list[dict[str, float]]:
        src = self.hours if hourly else self.buckets
        return [dict(src.get((entity, t), {})) for t in ts]

    async def _tops(self, entity: str, buckets: Sequence[int], k: int) -> list[tuple[float, str]]:
        out = []
        for t in buckets:
            top = self.tops.get((entity, t), {})
            out += [(score, m) for m, score in sorted(top.items(), key=lambda x: -x[1])[:k]]
        return out

    async def _term_rows(self, entity: str, buckets: Sequence[int]) -> list[dict[str, int]]:
        return [dict(self.terms.get((entity, t), {})) for t in buckets]


def _idle_report(v: str) -> tuple[float, int | None]:
    """A stored report: ``"<wall time>"`` or ``"<wall time>:<offset>"``.

    >>> _idle_report("1700000000.5"), _idle_report("1700000000.5:42")
    ((1700000000.5, None), (1700000000.5, 42))
    """
    at, _, offset = v.partition(":")
    return float(at), int(offset) if offset else None


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def bucket_dt(t: int) -> datetime:
    return datetime.fromtimestamp(t, UTC)
