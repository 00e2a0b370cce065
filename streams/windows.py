"""Rolling trust windows in Redis: event-time buckets, counted idempotently.

Keys (``p`` is ``settings.redis.key_prefix``, ``B`` the bucket size, ``t`` a bucket start in epoch s):

- ``p:seen:{entity}:{event_id}``  marks an event counted for an entity (TTL ``dedupe_ttl_seconds``);
- ``p:b:{entity}:{t}``            hash of counters for one bucket (TTL ``bucket_retention_seconds``);
- ``p:h:{entity}:{hour}``         the same counters rolled up per hour (TTL ``retention_seconds``), so
                                  memory per entity is bounded: fine buckets for days, hours for a month;
- ``p:top:{entity}:{t}``          sorted set of the most negative, most far-reaching mentions;
- ``p:terms:{entity}:{t}``        hash of terms in negative mentions;
- ``p:wm`` / ``p:wmt``            per-partition max event time / wall time of its last update;
- ``p:stats``                     counters: ``counted`` and ``duplicates`` (per event and entity);
- ``p:closed``                    start of the last bucket the detectors judged;
- ``p:state:{name}:{entity}``     detector and incident state (JSON).

Counting is one Lua script per (event, entity): the event id is recorded with ``SET NX`` and
the bucket updated in the same atomic step, so a redelivered batch is never counted twice.
Watermark: the highest event time of each *raw* partition, advanced by the worker that reads
that partition in order, right after counting its events; the effective watermark is the minimum
over partitions that are not idle, so one partition running ahead in a fast replay cannot close
buckets that another partition still has events for (replay gives the same windows as live).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aredis
from spacy.lang.en.stop_words import STOP_WORDS

from contract.records import EnrichedEvent
from infra.settings import Settings
from models.trust import trust_score

__all__ = ["AddResult", "WindowStore", "bucket_of", "contributions"]

logger = logging.getLogger(__name__)

_ADD_LUA = """
-- KEYS: seen, bucket, top, terms, wm, wmt, first, hour, stats
-- ARGV: seen_ttl, bucket_ttl, partition, event_ts, now, fields_json, top_member, top_score, top_cap, terms_json,
--       rollup_ttl
local counted = 0
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  counted = 1
  local fields = cjson.decode(ARGV[6])
  for k, v in pairs(fields) do
    redis.call('HINCRBYFLOAT', KEYS[2], k, v)
    redis.call('HINCRBYFLOAT', KEYS[8], k, v)
  end
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  redis.call('EXPIRE', KEYS[8], ARGV[11])
  if ARGV[7] ~= '' then
    redis.call('ZADD', KEYS[3], ARGV[8], ARGV[7])
    redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[9]) + 1))
    redis.call('EXPIRE', KEYS[3], ARGV[2])
  end
  local terms = cjson.decode(ARGV[10])
  if #terms > 0 then
    for _, t in ipairs(terms) do
      redis.call('HINCRBY', KEYS[4], t, 1)
    end
    redis.call('EXPIRE', KEYS[4], ARGV[2])
  end
end
if counted == 0 then
  redis.call('HINCRBY', KEYS[9], 'duplicates', 1)
else
  redis.call('HINCRBY', KEYS[9], 'counted', 1)
end
local ts = tonumber(ARGV[4])
local cur = tonumber(redis.call('HGET', KEYS[5], ARGV[3]) or '-1')
if ts > cur then
  redis.call('HSET', KEYS[5], ARGV[3], ARGV[4])
end
redis.call('HSET', KEYS[6], ARGV[3], ARGV[5])
local first = redis.call('GET', KEYS[7])
if (not first) or ts < tonumber(first) then
  redis.call('SET', KEYS[7], ARGV[4])
end
return counted
"""

_WORD = re.compile(r"[a-z][a-z']{2,}")


def bucket_of(ts: float, bucket_seconds: int) -> int:
    """Start (epoch seconds) of the bucket holding ``ts``.

    >>> bucket_of(125.0, 60)
    120
    """
    return int(math.floor(ts / bucket_seconds) * bucket_seconds)


def contributions(ev: EnrichedEvent) -> dict[str, float]:
    """The counters one enriched event adds to its bucket (names: :mod:`models.signals`).

    >>> from datetime import datetime, UTC
    >>> from contract.records import Sentiment
    >>> s = Sentiment(score=-0.6, label="negative", confidence=0.9, model_version="m")
    >>> ev = EnrichedEvent(event_id="x:1", kind="mention", source="x", occurred_at=datetime.now(UTC),
    ...                    ingested_at=datetime.now(UTC), entity="acme", sentiment=s, impact=2.0)
    >>> sorted(contributions(ev).items())
    [('events', 1.0), ('impact', 2.0), ('impact_neg', 2.0), ('n', 1.0), ('neg', 1.0), ('sent_sum', -0.6)]
    """
    from models import signals as C  # the counter names (imported here: this function is the whole edit)

    out: dict[str, float] = {C.EVENTS: 1.0}
    if ev.kind in ("mention", "review") and ev.sentiment is not None:
        label = ev.sentiment.label
        out[C.N] = 1.0
        out[C.LABEL_COUNTER[label]] = 1.0
        out[C.SENT_SUM] = ev.sentiment.score
        out[C.IMPACT] = ev.impact
        if label == "negative":
            out[C.IMPACT_NEG] = ev.impact
        if any(h.sentiment < 0 for h in ev.aspects):
            out[C.COMPLAINTS] = 1.0
        for a in {a.aspect for a in ev.aspects}:
            neg_key, n_key = C.aspect_keys(a)
            out[n_key] = 1.0
            if any(h.aspect == a and h.sentiment < 0 for h in ev.aspects):
                out[neg_key] = 1.0
    elif ev.kind in ("mention", "review"):
        out[C.UNSCORED] = 1.0  # e.g. non-English text: counted, never scored as English
    if ev.kind == "review" and ev.rating is not None and ev.sentiment is not None:
        # the model's own error, judged by the stars (1-2 negative, 3 neutral, 4-5 positive)
        truth = "negative" if ev.rating <= 2 else ("neutral" if ev.rating == 3 else "positive")
        out[C.MODEL_N] = 1.0
        if truth != ev.sentiment.label:
            out[C.MODEL_ERR] = 1.0
    if ev.kind == "review" and ev.rating is not None:
        out[C.RATING_N] = 1.0
        out[C.RATING_SUM] = float(ev.rating)
        out[C.RATING_SQ] = float(ev.rating) ** 2
    if ev.kind == "purchase" and ev.purchase_status:
        out[C.PURCHASE_PREFIX + ev.purchase_status] = 1.0
        if ev.purchase_status in ("placed", "paid"):
            out[C.REVENUE] = float(ev.amount or 0.0)
    if ev.kind == "feedback" and ev.metric and ev.score is not None:
        out[f"{ev.metric}_n"] = 1.0  # nps_n, csat_n, ces_n
        out[f"{ev.metric}_sum"] = float(ev.score)
        if ev.metric == "nps":
            if ev.score >= 9:
                out[C.NPS_PRO] = 1.0
            elif ev.score <= 6:
                out[C.NPS_DET] = 1.0
    return out


@dataclass
class AddResult:
    counted: int = 0
    duplicates: int = 0
    unmatched: int = 0


class WindowStore:
    """Event-time buckets per entity in Redis. One instance per worker; async, never blocks."""

    top_cap = 10
    idle_partition_seconds = 30.0

    def __init__(self, redis: aredis.Redis, settings: Settings) -> None:
        self.r = redis
        self.settings = settings
        self.p = settings.redis.key_prefix
        self.B = settings.windows.bucket_seconds
        self._add = self.r.register_script(_ADD_LUA)
        self._stop = set(STOP_WORDS)
        for e in settings.entities:
            self._stop.update(w.lower() for w in re.findall(r"\w+", " ".join([e.name, *e.aliases])))

    # -- keys -------------------------------------------------------------------------------
    def k_bucket(self, entity: str, t: int) -> str:
        return f"{self.p}:b:{entity}:{t}"

    def k_hour(self, entity: str, t: int) -> str:
        return f"{self.p}:h:{entity}:{t}"

    def k_top(self, entity: str, t: int) -> str:
        return f"{self.p}:top:{entity}:{t}"

    def k_terms(self, entity: str, t: int) -> str:
        return f"{self.p}:terms:{entity}:{t}"

    def k_state(self, name: str, entity: str) -> str:
        return f"{self.p}:state:{name}:{entity}"

    # -- writes -----------------------------------------------------------------------------
    def _terms(self, ev: EnrichedEvent) -> list[str]:
        if not ev.text_redacted or ev.sentiment is None or ev.sentiment.label != "negative":
            return []
        words = _WORD.findall(ev.text_redacted.lower())
        return sorted({w for w in words if w not in self._stop and not w.startswith("'")})[:20]

    async def add_batch(self, items: Sequence[tuple[EnrichedEvent, int]]) -> AddResult:
        """Count each ``(event, partition)`` into its entities' buckets; idempotent per event id."""
        res = AddResult()
        now = time.time()
        calls: list[Any] = []
        async with self.r.pipeline(transaction=False) as pipe:
            for ev, partition in items:
                keys = sorted({m.key for m in ev.entities} | ({ev.entity} if ev.entity else set()))
                if not keys:
                    res.unmatched += 1
                    continue
                ts = ev.occurred_at.timestamp()
                t = bucket_of(ts, self.B)
                fields = contributions(ev)
                top_member, top_score = "", 0.0
                if ev.kind == "mention" and ev.sentiment is not None and ev.sentiment.score < 0:
                    top_member = orjson.dumps(
                        {
                            "id": ev.event_id,
                            "text": (ev.text_redacted or "")[:280],
                            "s": round(ev.sentiment.score, 3),
                            "impact": round(ev.impact, 3),
                            "url": ev.url,
                        }
                    ).decode()
                    top_score = -ev.sentiment.score * ev.impact
                terms = orjson.dumps(self._terms(ev)).decode()
                for key in keys:
                    calls.append(key)
                    await self._add(
                        keys=[
                            f"{self.p}:seen:{key}:{ev.event_id}",
                            self.k_bucket(key, t),
                            self.k_top(key, t),
                            self.k_terms(key, t),
                            f"{self.p}:wm",
                            f"{self.p}:wmt",
                            f"{self.p}:first",
                            self.k_hour(key, bucket_of(ts, 3600)),
                            f"{self.p}:stats",
                        ],
                        args=[
                            self.settings.windows.dedupe_ttl_seconds,
                            self.settings.windows.bucket_retention_seconds,
                            partition,
                            ts,
                            now,
                            orjson.dumps(fields).decode(),
                            top_member,
                            top_score,
                            self.top_cap,
                            terms,
                            self.settings.windows.retention_seconds,
                        ],
                        client=pipe,
                    )
            results = await pipe.execute() if calls else []
        for r in results:
            if int(r):
                res.counted += 1
            else:
                res.duplicates += 1
        return res

    # -- time -------------------------------------------------------------------------------
    async def watermark(self, *, high: bool = False) -> float | None:
        """Effective event-time watermark: min over non-idle partitions' max event time.

        ``high=True`` gives the max instead: how far the furthest partition has counted.
        """
        wm = await self.r.hgetall(f"{self.p}:wm")
        if not wm:
            return None
        wall = await self.r.hgetall(f"{self.p}:wmt")
        parts = {k: float(v) for k, v in wm.items()}
        walls = {k: float(wall.get(k, 0.0)) for k in parts}
        freshest = max(walls.values())
        active = [parts[k] for k in parts if freshest - walls[k] <= self.idle_partition_seconds]
        if high or not active:
            return max(parts.values())
        return min(active)

    async def stats(self) -> dict[str, int]:
        raw = await self.r.hgetall(f"{self.p}:stats")
        return {_s(k): int(v) for k, v in raw.items()}

    async def first_event_ts(self) -> float | None:
        v = await self.r.get(f"{self.p}:first")
        return float(v) if v is not None else None

    async def closed(self) -> int | None:
        v = await self.r.get(f"{self.p}:closed")
        return int(float(v)) if v is not None else None

    # -- reads ------------------------------------------------------------------------------
    async def bucket_stats(self, entities: Iterable[str], t: int) -> dict[str, dict[str, float]]:
        ents = list(entities)
        async with self.r.pipeline(transaction=False) as pipe:
            for e in ents:
                pipe.hgetall(self.k_bucket(e, t))
            rows = await pipe.execute()
        return {e: {_s(k): float(v) for k, v in row.items()} for e, row in zip(ents, rows, strict=True)}

    async def window_stats(self, entity: str, start: int, end: int) -> dict[str, float]:
        """Sum of the counters in ``[start, end)``: from fine buckets for windows up to an hour
        (or not aligned on hours), else from the hourly rollups."""
        hourly = end - start > 3600 and start % 3600 == 0 and end % 3600 == 0
        step, key = (3600, self.k_hour) if hourly else (self.B, self.k_bucket)
        async with self.r.pipeline(transaction=False) as pipe:
            for t in range(start, end, step):
                pipe.hgetall(key(entity, t))
            rows = await pipe.execute()
        total: dict[str, float] = {}
        for row in rows:
            for k, v in row.items():
                total[_s(k)] = total.get(_s(k), 0.0) + float(v)
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
        async with self.r.pipeline(transaction=False) as pipe:
            for t in buckets:
                pipe.zrevrange(self.k_top(entity, t), 0, k - 1, withscores=True)
            rows = await pipe.execute()
        items = [(float(score), orjson.loads(m)) for row in rows for m, score in row]
        items.sort(key=lambda x: -x[0])
        seen: set[str] = set()
        out = []
        for _, m in items:
            if m["id"] not in seen:
                seen.add(m["id"])
                out.append(m)
        return out[:k]

    async def top_terms(self, entity: str, buckets: Sequence[int], k: int = 8) -> list[tuple[str, int]]:
        async with self.r.pipeline(transaction=False) as pipe:
            for t in buckets:
                pipe.hgetall(self.k_terms(entity, t))
            rows = await pipe.execute()
        counts: dict[str, int] = {}
        for row in rows:
            for term, c in row.items():
                counts[_s(term)] = counts.get(_s(term), 0) + int(c)
        return sorted(counts.items(), key=lambda x: (-x[1], x[0]))[:k]

    async def load_blob(self, name: str) -> bytes | None:
        v = await self.r.get(f"{self.p}:blob:{name}")
        return v.encode() if isinstance(v, str) else v

    async def save_blob(self, name: str, data: bytes) -> None:
        await self.r.set(f"{self.p}:blob:{name}", data)

    async def load_state(self, name: str, entities: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        ents = list(entities)
        vals = await self.r.mget([self.k_state(name, e) for e in ents]) if ents else []
        return {e: (orjson.loads(v) if v else None) for e, v in zip(ents, vals, strict=True)}

    async def save_state(self, states: dict[str, dict[str, dict[str, Any]]], closed: int) -> None:
        """Save ``{name: {entity: state}}`` and the closed pointer in one transaction."""
        async with self.r.pipeline(transaction=True) as pipe:
            for name, per_entity in states.items():
                for e, st in per_entity.items():
                    pipe.set(self.k_state(name, e), orjson.dumps(st))
            pipe.set(f"{self.p}:closed", closed)
            await pipe.execute()


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def bucket_dt(t: int) -> datetime:
    return datetime.fromtimestamp(t, UTC)
