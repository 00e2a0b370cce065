"""What responders decided: acknowledgements, owners, resolutions, false positives and silences.

The war room (:mod:`web`) writes these; every worker's :class:`~alerts.dispatch.Dispatcher` reads
them before it queues or sends a message (:meth:`Controls.suppressed`), so a decision taken on one
page is honoured by every worker at once, with no restart and no message between processes.

Keys (``p`` is ``redis.key_prefix``):

- ``p:ctl:inc:{incident_id}``   hash: ``state`` (``acknowledged``, ``resolved``, ``false_positive``),
                                ``owner``, and who/when of the last state change;
- ``p:ctl:log:{incident_id}``   list of every action on the incident, oldest first (JSON);
- ``p:ctl:log``                 the last :data:`LOG_MAX` actions of any incident (JSON), newest last;
- ``p:ctl:feedback``            list of false positives the detection leader has not learned yet
                                (JSON: ``action_id``, ``entity``, ``buckets`` as epoch seconds);
                                :meth:`Controls.feedback` reads it, :meth:`Controls.feedback_done`
                                drops what was learned;
- ``p:ctl:silences``            hash ``silence id -> JSON``: Alertmanager-style silences, each with
                                matchers (``entity``, ``signal``, ``route``; unset matches all) and an
                                expiry (``ends_at``); expired ones are ignored, and pruned on write.

Rules the dispatcher applies (:meth:`Controls.suppressed`):

- a silence whose matchers all match a message on a route suppresses it. An ``entity`` matcher
  matches the entity or its products (``northwind`` silences ``northwind/go app``); a ``signal``
  matcher matches a message whose paging signals are all that signal (a message that also carries
  another signal still pages), so it never matches a ``resolved`` message, which carries none;
- an acknowledged (or resolved, or false-positive) incident gets no more ``update`` or
  ``escalated`` messages: the responder knows. Its ``resolved`` message still goes out, so the
  people who were paged learn that it is over.

Only JSON is stored; nothing read back is unpickled.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable
from typing import Any, Literal, cast

import redis.asyncio as aredis

from contract.records import Incident

__all__ = ["ACK_STATES", "LOG_MAX", "Controls", "Silence"]

LOG_MAX = 1000
#: incident states after which only the ``resolved`` message is still sent
ACK_STATES = frozenset({"acknowledged", "resolved", "false_positive"})
CONTROL_TTL_SECONDS = 35 * 86400
"""How long an incident's actions are kept (as long as the hourly rollups)."""

IncidentState = Literal["open", "acknowledged", "resolved", "false_positive"]


class Silence(dict[str, Any]):
    """A silence as stored: ``id, entity, signal, route, starts_at, ends_at, created_by, comment``."""

    def active(self, now: float) -> bool:
        return float(self.get("starts_at", 0)) <= now < float(self["ends_at"])

    def matches(self, route: str, incident: Incident) -> bool:
        entity, signal, want_route = self.get("entity"), self.get("signal"), self.get("route")
        if want_route and want_route != route:
            return False
        if entity:
            e, key = str(entity).lower(), incident.entity.lower()
            if key != e and key.split("/", 1)[0] != e:
                return False
        if signal:
            paging = [s.signal for s in incident.signals if s.severity != "info"]
            if not paging or any(name != signal for name in paging):
                return False
        return True


class Controls:
    """Responders' decisions in Redis (module doc): written by the web view, read by dispatchers."""

    def __init__(self, redis: aredis.Redis, key_prefix: str = "rm", *, clock: Any = time.time) -> None:
        self.r = redis
        self.p = f"{key_prefix}:ctl"
        self.clock = clock

    # -- keys -----------------------------------------------------------------------------
    def k_incident(self, incident_id: str) -> str:
        return f"{self.p}:inc:{incident_id}"

    def k_log(self, incident_id: str | None = None) -> str:
        return f"{self.p}:log:{incident_id}" if incident_id else f"{self.p}:log"

    @property
    def k_silences(self) -> str:
        return f"{self.p}:silences"

    @property
    def k_feedback(self) -> str:
        return f"{self.p}:feedback"

    # -- reads ----------------------------------------------------------------------------
    async def incident(self, incident_id: str) -> dict[str, str]:
        raw = await cast(Awaitable[dict[Any, Any]], self.r.hgetall(self.k_incident(incident_id)))
        return {_s(k): _s(v) for k, v in raw.items()}

    async def incidents(self, incident_ids: list[str]) -> dict[str, dict[str, str]]:
        if not incident_ids:
            return {}
        async with self.r.pipeline(transaction=False) as pipe:
            for iid in incident_ids:
                pipe.hgetall(self.k_incident(iid))
            rows = await pipe.execute()
        return {iid: {_s(k): _s(v) for k, v in row.items()} for iid, row in zip(incident_ids, rows, strict=True)}

    async def log(self, incident_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        raw = await cast(Awaitable[list[Any]], self.r.lrange(self.k_log(incident_id), -limit, -1))
        return [json.loads(_s(x)) for x in raw]

    async def feedback(self, limit: int = 100) -> list[dict[str, Any]]:
        """The oldest false positives not yet learned by the detection leader (module doc)."""
        raw = await cast(Awaitable[list[Any]], self.r.lrange(self.k_feedback, 0, limit - 1))
        return [json.loads(_s(x)) for x in raw]

    async def feedback_done(self, n: int) -> None:
        """Drop the ``n`` oldest feedback entries (learned: the detector state holding them is saved)."""
        if n > 0:
            await cast(Awaitable[Any], self.r.ltrim(self.k_feedback, n, -1))

    async def silences(self, *, include_expired: bool = False) -> list[Silence]:
        raw = await cast(Awaitable[dict[Any, Any]], self.r.hgetall(self.k_silences))
        now = self.clock()
        out = [Silence(json.loads(_s(v))) for v in raw.values()]
        if not include_expired:
            out = [s for s in out if float(s["ends_at"]) > now]
        return sorted(out, key=lambda s: float(s.get("starts_at", 0)))

    async def suppressed(self, route: str, incident: Incident) -> str | None:
        """Why ``incident`` must not be sent on ``route`` now (a silence, an acknowledgement), or None."""
        now = self.clock()
        for s in await self.silences():
            if s.active(now) and s.matches(route, incident):
                return f"silenced by {s['id']} until {_iso(float(s['ends_at']))}"
        if incident.status in ("update", "escalated"):
            state = await cast(Awaitable[Any], self.r.hget(self.k_incident(incident.incident_id), "state"))
            if state is not None and _s(state) in ACK_STATES:
                return f"incident {_s(state).replace('_', ' ')}"
        return None

    # -- writes ---------------------------------------------------------------------------
    async def record(
        self,
        incident_id: str | None,
        action: str,
        *,
        who: str,
        why: str = "",
        fields: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record one action (who, when, why) and apply ``fields`` to the incident's hash, atomically.

        A ``false_positive`` whose ``details`` name the ``entity`` and its ``buckets`` (epoch
        seconds) is queued for the detection leader too, in the same transaction: the detector
        learns those buckets as normal (:meth:`models.detect.EntityDetector.absorb`)."""
        entry = {
            "action_id": uuid.uuid4().hex,
            "incident_id": incident_id,
            "action": action,
            "who": who,
            "why": why,
            "at": self.clock(),
            **(details or {}),
        }
        blob = json.dumps(entry)
        async with self.r.pipeline(transaction=True) as pipe:
            if incident_id:
                if fields:
                    # a fresh dict: redis-py's mapping type is invariant in its keys
                    pipe.hset(self.k_incident(incident_id), mapping=dict(fields.items()))
                    pipe.expire(self.k_incident(incident_id), CONTROL_TTL_SECONDS)
                pipe.rpush(self.k_log(incident_id), blob)
                pipe.expire(self.k_log(incident_id), CONTROL_TTL_SECONDS)
            pipe.rpush(self.k_log(), blob)
            pipe.ltrim(self.k_log(), -LOG_MAX, -1)
            if action == "false_positive" and entry.get("entity") and entry.get("buckets"):
                pipe.rpush(self.k_feedback, blob)
            await pipe.execute()
        return entry

    async def add_silence(
        self,
        *,
        who: str,
        ends_at: float,
        entity: str | None = None,
        signal: str | None = None,
        route: str | None = None,
        comment: str = "",
    ) -> tuple[Silence, dict[str, Any]]:
        """Add a silence; returns it and the action recorded for it (this request's own entry: the
        shared log's newest may already be another request's)."""
        if not (entity or signal or route):
            raise ValueError("a silence needs at least one matcher: entity, signal or route")
        now = self.clock()
        if ends_at <= now:
            raise ValueError("a silence must end in the future")
        s = Silence(
            id=f"sil-{uuid.uuid4().hex[:12]}",
            entity=entity or None,
            signal=signal or None,
            route=route or None,
            starts_at=now,
            ends_at=ends_at,
            created_by=who,
            comment=comment,
        )
        await self._prune(now)
        await cast(Awaitable[int], self.r.hset(self.k_silences, s["id"], json.dumps(s)))
        entry = await self.record(None, "silence", who=who, why=comment, details={"silence": dict(s)})
        return s, entry

    async def expire_silence(
        self, silence_id: str, *, who: str, why: str = ""
    ) -> tuple[Silence, dict[str, Any]] | None:
        """End a silence now (kept, expired, so its history stays readable); returns it and the
        action recorded, or None if unknown."""
        raw = await cast(Awaitable[Any], self.r.hget(self.k_silences, silence_id))
        if raw is None:
            return None
        s = Silence(json.loads(_s(raw)))
        s["ends_at"] = min(float(s["ends_at"]), self.clock())
        await cast(Awaitable[int], self.r.hset(self.k_silences, silence_id, json.dumps(s)))
        entry = await self.record(None, "unsilence", who=who, why=why, details={"silence": dict(s)})
        return s, entry

    async def _prune(self, now: float) -> None:
        """Drop silences that ended more than a day ago: the hash stays small."""
        for s in await self.silences(include_expired=True):
            if float(s["ends_at"]) < now - 86400:
                await cast(Awaitable[int], self.r.hdel(self.k_silences, s["id"]))


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
