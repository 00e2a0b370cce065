"""Incidents -> Apprise routes, without floods and without duplicates.

Rules, per route:

- **routing**: a route takes an incident when its ``min_severity`` is reached (info < warning <
  critical), its ``entities`` list is empty or names the entity (``brand/product`` also matches a
  route naming ``brand``; case-insensitive) and its ``teams`` list is empty or names
  ``incident.evidence["team"]``. Every route that took a message of a thread is remembered in Redis;
  the ``resolved`` message goes to all of them (and to any route it matches itself). A route that
  does not take the incident gets a ``filtered`` :class:`Delivery`.
- **one message once**: ``(route, incident_id, seq)`` is marked delivered in Redis
  (``{prefix}:alert:delivered:{route}:{incident_id}:{seq}``, 30 days) only after the channel
  accepted it; a redelivered incident finds the mark: ``duplicate``, nothing sent. A short claim key
  (``SET NX PX``, refreshed before every attempt) keeps two workers from sending the same message at
  the same time; the mark is checked again once the claim is held. On a route with several URLs each
  URL's success is remembered too, so a retry only goes to the URLs that failed.
- **retries**: an attempt that fails (Apprise reports failure, raises or times out) is retried up to
  ``retries`` times, ``retry_backoff_seconds * 2**n`` apart. After the last failure the result is
  ``failed`` and the message is *not* marked delivered, so a later redelivery of the incident tries
  again. (A channel that answers an error although it posted the message, or that times out after
  posting, can still show it twice: HTTP gives no better guarantee.)
- **grouping**: ``open``, ``escalated`` and ``resolved`` go out at once, and so does an ``update``
  whose severity is above what the route last got for the thread. Any other ``update`` within
  ``cooldown_seconds`` of the thread's last delivered message on that route is held (``cooldown``):
  the latest held update per route and thread is kept in Redis, and :meth:`Dispatcher.flush_due`
  (the worker calls it from a timer) sends it once the cooldown has passed. A message of the thread
  with a higher ``seq`` that goes out first makes the held one moot: it is dropped. An ``update``
  older than what the route already got is ``filtered`` (superseded). One crisis is one thread of a
  few messages, not a flood.
- **rate limit**: at most ``rate_per_second`` requests per second per route (Slack webhooks allow
  about one), spaced in-process and awaited with ``asyncio.sleep``; retries count too.
- **never block the loop**: Apprise is called with ``async_notify``, which runs each plugin's
  blocking HTTP call in Apprise's thread pool. Each call is bounded by ``timeout_seconds``: socket
  timeouts on the URL (``rto``/``cto``), Apprise's service and call timeouts, and an outer
  ``asyncio.wait_for``.
- **counts**: ``{prefix}:alert:stats`` counts ``delivered``, ``failed``, ``duplicate`` and
  ``cooldown`` results.
- **console**: with ``alerts.console`` every incident is also logged on ``repmon.alerts`` at WARNING.

The Redis scripts touch several keys at once: a single Redis (or a cluster with one hash slot per
prefix) is assumed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, cast

import apprise
import redis.asyncio as aredis

from alerts.incidents import SEVERITY_RANK
from alerts.render import Message, render
from contract.records import Incident
from infra.settings import AlertSettings, Route

__all__ = ["DELIVERED_TTL_SECONDS", "Delivery", "DeliveryStatus", "Dispatcher"]

logger = logging.getLogger(__name__)
console_logger = logging.getLogger("repmon.alerts")

DELIVERED_TTL_SECONDS = 30 * 86400
"""How long delivered marks, thread routes and held updates are kept."""

DeliveryStatus = Literal["delivered", "duplicate", "filtered", "failed", "cooldown"]
COUNTED: frozenset[str] = frozenset({"delivered", "failed", "duplicate", "cooldown"})


@dataclass(frozen=True)
class Delivery:
    """What happened to one message on one route."""

    route: str
    incident_id: str
    seq: int
    status: DeliveryStatus
    attempts: int = 0
    error: str | None = None


# KEYS: claim. ARGV: token, ttl ms. Extend our claim, or take it if it lapsed; 0 if someone else has it.
_REFRESH_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""

# KEYS: claim. ARGV: token. Release only our own claim.
_RELEASE_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: held hash, held index. ARGV: seq, incident json, due, index member, ttl s.
# Keep only the newest held update of a route and thread.
_HOLD = """
local cur = redis.call('HGET', KEYS[1], 'seq')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'incident', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
"""

# KEYS: delivered mark, last hash, held hash, held index.
# ARGV: ttl s, now, seq, severity rank, index member.
_MARK_DELIVERED = """
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[1])
local seq = tonumber(ARGV[3])
local last = redis.call('HGET', KEYS[2], 'seq')
if (not last) or tonumber(last) < seq then redis.call('HSET', KEYS[2], 'seq', ARGV[3]) end
local rank = redis.call('HGET', KEYS[2], 'rank')
if (not rank) or tonumber(rank) < tonumber(ARGV[4]) then redis.call('HSET', KEYS[2], 'rank', ARGV[4]) end
redis.call('HSET', KEYS[2], 'at', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
local held = redis.call('HGET', KEYS[3], 'seq')
if held and tonumber(held) <= seq then
  redis.call('DEL', KEYS[3])
  redis.call('ZREM', KEYS[4], ARGV[5])
end
return 1
"""


class _RateLimiter:
    """Spaces requests on one route ``1 / per_second`` apart (a token bucket holding one token).

    Reserving a slot has no ``await`` in it, so concurrent tasks get distinct slots; the wait is an
    ``asyncio.sleep``.
    """

    def __init__(self, per_second: float) -> None:
        self.gap = 1.0 / per_second
        self._next = 0.0

    async def acquire(self) -> None:
        now = time.monotonic()
        at = max(now, self._next)
        self._next = at + self.gap
        if at > now:
            await asyncio.sleep(at - now)


class _Claim:
    """A ``SET NX PX`` claim on one message, owned through a random token."""

    def __init__(self, dispatcher: Dispatcher, key: str, ttl_ms: int) -> None:
        self.d, self.key, self.ttl_ms = dispatcher, key, ttl_ms
        self.token = uuid.uuid4().hex

    async def take(self) -> bool:
        return bool(await self.d.r.set(self.key, self.token, nx=True, px=self.ttl_ms))

    async def refresh(self) -> bool:
        return bool(await self.d.eval(_REFRESH_CLAIM, [self.key], [self.token, self.ttl_ms]))

    async def release(self) -> None:
        await self.d.eval(_RELEASE_CLAIM, [self.key], [self.token])


class Dispatcher:
    """Sends incidents to the Apprise routes of ``settings`` (see the module docstring for the rules).

    One Apprise object per route is built here, once; a URL Apprise cannot use raises
    :class:`ValueError` naming the route.
    """

    def __init__(self, settings: AlertSettings, redis: aredis.Redis, *, key_prefix: str = "rm") -> None:
        self.settings = settings
        self.r = redis
        self.p = f"{key_prefix}:alert"
        self.routes: dict[str, Route] = {}
        self._apprise: dict[str, apprise.Apprise] = {}
        self._tags: dict[str, list[str]] = {}
        self._limits: dict[str, _RateLimiter] = {}
        timeout = settings.timeout_seconds
        # in-memory persistent store: nothing written under the user's home; no config files are read
        asset = apprise.AppriseAsset(async_mode=True, storage_mode="memory", service_timeout=timeout)
        for route in settings.routes:
            if route.name in self.routes:
                raise ValueError(f"alerts.routes: two routes are named {route.name!r}; give each a unique name")
            ap = apprise.Apprise(asset=asset)
            tags = []
            for i, url in enumerate(route.urls):
                tag = f"u{i}"
                if not ap.add(_with_timeouts(url, timeout), tag=tag):
                    scheme = url.split("://", 1)[0]
                    raise ValueError(
                        f"alerts.routes[{route.name}].urls[{i}]: Apprise cannot use this {scheme}:// URL "
                        "(unknown scheme or bad format; see https://github.com/caronc/apprise/wiki)"
                    )
                tags.append(tag)
            self.routes[route.name] = route
            self._apprise[route.name] = ap
            self._tags[route.name] = tags
            self._limits[route.name] = _RateLimiter(route.rate_per_second)

    # -- keys -----------------------------------------------------------------------------
    def _k_delivered(self, route: str, iid: str, seq: int) -> str:
        return f"{self.p}:delivered:{route}:{iid}:{seq}"

    def _k_held(self, route: str, iid: str) -> str:
        return f"{self.p}:held:{route}:{iid}"

    def _k_last(self, route: str, iid: str) -> str:
        return f"{self.p}:last:{route}:{iid}"

    @property
    def _k_held_index(self) -> str:
        return f"{self.p}:held"

    async def eval(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script (EVAL; Redis caches the compiled script)."""
        return await cast(Awaitable[Any], self.r.eval(script, len(keys), *keys, *args))

    # -- routing --------------------------------------------------------------------------
    def matches(self, route: Route, incident: Incident) -> bool:
        """Whether ``route`` takes ``incident`` by severity, entity and team."""
        if SEVERITY_RANK.get(incident.severity, 0) < SEVERITY_RANK[route.min_severity]:
            return False
        if route.entities:
            wanted = {e.strip().lower() for e in route.entities}
            entity = incident.entity.lower()
            if entity not in wanted and entity.split("/", 1)[0] not in wanted:
                return False
        if route.teams:
            team = incident.evidence.get("team")
            if team is None or str(team) not in route.teams:
                return False
        return True

    async def _select(self, incident: Incident) -> set[str]:
        key = f"{self.p}:thread:{incident.incident_id}"
        chosen = {name for name, route in self.routes.items() if self.matches(route, incident)}
        if incident.status == "resolved":
            used = {_s(v) for v in await cast(Awaitable[set[Any]], self.r.smembers(key))}
            return chosen | (used & self.routes.keys())
        if chosen:
            async with self.r.pipeline(transaction=False) as pipe:
                pipe.sadd(key, *sorted(chosen))
                pipe.expire(key, DELIVERED_TTL_SECONDS)
                await pipe.execute()
        return chosen

    # -- dispatch -------------------------------------------------------------------------
    async def dispatch(self, incident: Incident) -> list[Delivery]:
        """Send ``incident`` to its routes; one :class:`Delivery` per configured route, in config order.

        Never raises for a channel's failure (that is a ``failed`` delivery); Redis errors propagate.
        """
        if self.settings.console:
            msg = render(incident)
            console_logger.warning("%s\n%s", msg.title, msg.body)
        selected = await self._select(incident)
        jobs = [
            self._deliver(route, incident)
            if name in selected
            else _done(Delivery(name, incident.incident_id, incident.seq, "filtered"))
            for name, route in self.routes.items()
        ]
        out = list(await asyncio.gather(*jobs))
        await self._count(out)
        return out

    async def flush_due(self) -> list[Delivery]:
        """Send the held updates whose cooldown has passed (the worker calls this from a timer).

        Safe to call from several workers: each held update is taken by one of them. A held update
        whose send fails is held again, due after another cooldown.
        """
        now = time.time()
        members = cast(list[bytes | str], await self.r.zrangebyscore(self._k_held_index, "-inf", now))
        out: list[Delivery] = []
        for member in members:
            if not await self.r.zrem(self._k_held_index, member):
                continue  # another worker took it
            try:
                route_name, iid = json.loads(_s(member))
            except (ValueError, TypeError):
                logger.error("unreadable held-alert index entry %r dropped", member)
                continue
            async with self.r.pipeline(transaction=True) as pipe:
                pipe.hget(self._k_held(route_name, iid), "incident")
                pipe.delete(self._k_held(route_name, iid))
                raw, _ = await pipe.execute()
            route = self.routes.get(route_name)
            if raw is None or route is None:
                continue
            try:
                incident = Incident.model_validate_json(raw)
            except ValueError as exc:  # written by an older, incompatible version
                logger.error("held alert %s on route %s is unreadable and dropped: %s", iid, route_name, exc)
                continue
            d = await self._deliver(route, incident, flushing=True)
            if d.status == "failed":
                await self._hold(route, incident, time.time() + max(self.settings.cooldown_seconds, 1.0))
            out.append(d)
        await self._count(out)
        return out

    async def stats(self) -> dict[str, int]:
        """The ``{prefix}:alert:stats`` counters."""
        return {k: int(v) for k, v in (await self._hash(f"{self.p}:stats")).items()}

    async def _hash(self, key: str) -> dict[str, str]:
        raw = await cast(Awaitable[dict[Any, Any]], self.r.hgetall(key))
        return {_s(k): _s(v) for k, v in raw.items()}

    # -- one message on one route ---------------------------------------------------------
    async def _deliver(self, route: Route, incident: Incident, *, flushing: bool = False) -> Delivery:
        name, iid, seq = route.name, incident.incident_id, incident.seq
        done_key = self._k_delivered(name, iid, seq)
        if await self.r.exists(done_key):
            return Delivery(name, iid, seq, "duplicate")
        if incident.status == "update":
            last = await self._hash(self._k_last(name, iid))
            if last and int(last.get("seq", 0)) >= seq:
                return Delivery(name, iid, seq, "filtered", error=f"superseded by #{last['seq']}")
            louder = SEVERITY_RANK.get(incident.severity, 0) > int(last.get("rank", -1))
            since = time.time() - float(last.get("at", 0))
            if not flushing and last and not louder and since < self.settings.cooldown_seconds:
                await self._hold(route, incident, float(last["at"]) + self.settings.cooldown_seconds)
                return Delivery(name, iid, seq, "cooldown")
        claim = _Claim(self, f"{self.p}:claim:{name}:{iid}:{seq}", self._claim_ms(route))
        if not await claim.take():
            return Delivery(name, iid, seq, "duplicate", error="being sent by another worker")
        try:
            if await self.r.exists(done_key):  # delivered between our first look and the claim
                return Delivery(name, iid, seq, "duplicate")
            ok, attempts, error = await self._send(route, render(incident, sms=route.sms), claim, done_key)
            if ok:
                member = _member(name, iid)
                keys = [done_key, self._k_last(name, iid), self._k_held(name, iid), self._k_held_index]
                rank = SEVERITY_RANK.get(incident.severity, 0)
                await self.eval(_MARK_DELIVERED, keys, [DELIVERED_TTL_SECONDS, time.time(), seq, rank, member])
                return Delivery(name, iid, seq, "delivered", attempts)
            if error == "claim lost":
                return Delivery(name, iid, seq, "duplicate", attempts, "being sent by another worker")
            logger.error("alert %s #%s to route %s failed after %d attempts: %s", iid, seq, name, attempts, error)
            return Delivery(name, iid, seq, "failed", attempts, error)
        finally:
            await claim.release()

    async def _send(self, route: Route, msg: Message, claim: _Claim, done_key: str) -> tuple[bool, int, str | None]:
        """Attempts with backoff; returns (delivered, attempts, last error)."""
        tags = self._tags[route.name]
        parts_key = f"{done_key}:urls"
        multi = len(tags) > 1
        pending = list(tags)
        if multi:
            sent = {_s(t) for t in await cast(Awaitable[set[Any]], self.r.smembers(parts_key))}
            pending = [t for t in tags if t not in sent]
        error: str | None = None
        attempts = 0
        for attempt in range(self.settings.retries + 1):
            if attempt:
                await asyncio.sleep(self.settings.retry_backoff_seconds * 2 ** (attempt - 1))
            if not await claim.refresh():
                return False, attempts, "claim lost"
            await self._limits[route.name].acquire()
            attempts += 1
            results = await asyncio.gather(*(self._notify(route.name, tag, msg) for tag in pending))
            ok_tags = [t for t, (ok, _) in zip(pending, results, strict=True) if ok]
            errors = [e for ok, e in results if not ok and e]
            if multi and ok_tags:
                async with self.r.pipeline(transaction=False) as pipe:
                    pipe.sadd(parts_key, *ok_tags)
                    pipe.expire(parts_key, DELIVERED_TTL_SECONDS)
                    await pipe.execute()
            pending = [t for t in pending if t not in ok_tags]
            if not pending:
                return True, attempts, None
            error = "; ".join(errors) or "channel refused the message"
            logger.warning(
                "alert to route %s: attempt %d/%d failed: %s", route.name, attempts, self.settings.retries + 1, error
            )
        return False, attempts, error

    async def _notify(self, route: str, tag: str, msg: Message) -> tuple[bool, str | None]:
        """One Apprise call to one URL of a route: (accepted, error)."""
        timeout = self.settings.timeout_seconds
        try:
            result = await asyncio.wait_for(
                self._apprise[route].async_notify(
                    body=msg.body, title=msg.title, notify_type=msg.notify_type, tag=tag, timeout=timeout
                ),
                timeout + 1.0,
            )
        except TimeoutError:
            return False, f"{tag}: no answer within {timeout:g} s"
        except Exception as exc:  # a channel must never take the worker down
            return False, f"{tag}: {type(exc).__name__}: {exc}"
        try:
            if result:
                return True, None
            problems = [e.message for e in result.logs() if e.level in ("WARNING", "ERROR", "CRITICAL")]
            return False, f"{tag}: {result.status.name.lower()}" + (f" ({problems[-1]})" if problems else "")
        finally:
            result.close()

    async def _hold(self, route: Route, incident: Incident, due: float) -> None:
        keys = [self._k_held(route.name, incident.incident_id), self._k_held_index]
        args = [incident.seq, incident.model_dump_json(), due, _member(route.name, incident.incident_id)]
        await self.eval(_HOLD, keys, [*args, DELIVERED_TTL_SECONDS])

    def _claim_ms(self, route: Route) -> int:
        """Claim lifetime: one attempt's worst case (rate wait, backoff, timeout) plus a margin."""
        longest_backoff = self.settings.retry_backoff_seconds * 2 ** max(self.settings.retries - 1, 0)
        return int((self.settings.timeout_seconds + 1.0 + longest_backoff + 1.0 / route.rate_per_second + 5.0) * 1000)

    async def _count(self, deliveries: Iterable[Delivery]) -> None:
        counted = [d.status for d in deliveries if d.status in COUNTED]
        if not counted:
            return
        async with self.r.pipeline(transaction=False) as pipe:
            for status in counted:
                pipe.hincrby(f"{self.p}:stats", status, 1)
            await pipe.execute()


def _with_timeouts(url: str, timeout: float) -> str:
    """Add Apprise's socket read/connect timeouts (``rto``/``cto``) unless the URL sets them."""
    query = url.split("?", 1)[1] if "?" in url else ""
    keys = {kv.split("=", 1)[0] for kv in query.split("&") if kv}
    extra = [f"{k}={timeout:g}" for k in ("rto", "cto") if k not in keys]
    if not extra:
        return url
    return url + ("&" if "?" in url else "?") + "&".join(extra)


def _member(route: str, iid: str) -> str:
    return json.dumps([route, iid])


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


async def _done(d: Delivery) -> Delivery:
    return d
