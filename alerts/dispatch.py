"""Incidents -> Apprise routes, without floods and without duplicates.

Rules, per route:

- **routing**: a route takes an incident when its ``min_severity`` is reached and its
  ``entities`` / ``teams`` lists are empty or name it (a product matches its brand's routes too).
  A ``resolved`` message goes to every route that carried the thread, whatever its severity.
- **one message once**: ``(route, incident_id, seq)`` is marked delivered in Redis only after the
  channel accepted it; a redelivered incident finds the mark and is not sent again. A short claim
  key (``SET NX PX``) keeps two workers from sending the same message at the same time.
- **retries**: a failed send is retried with exponential backoff; after the last failure the
  message is not marked delivered, so a later redelivery of the incident tries again.
- **grouping**: ``open``, ``escalated`` and ``resolved`` go out at once; an ``update`` within
  ``cooldown_seconds`` of the thread's last message on that route is held (the latest one only)
  and sent by :meth:`Dispatcher.flush_due` once the cooldown has passed, unless a newer message
  of the thread went out first. One crisis is one thread of a few messages, not a flood.
- **rate limit**: at most ``rate_per_second`` messages per second per route (Slack webhooks allow
  about one), awaited without blocking the event loop.
- Apprise is called with ``async_notify``: the event loop never waits on a channel's I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import apprise
import redis.asyncio as aredis

from alerts.incidents import SEVERITY_RANK
from alerts.render import render
from infra.settings import AlertSettings, Route
from streams.records import Incident

__all__ = ["Delivery", "Dispatcher"]

logger = logging.getLogger(__name__)
console_logger = logging.getLogger("repmon.alerts")

DELIVERED_TTL = 30 * 86400


@dataclass(frozen=True)
class Delivery:
    route: str
    incident_id: str
    seq: int
    status: str  # delivered | duplicate | filtered | failed | cooldown | superseded
    attempts: int = 0
    error: str | None = None


class _RateLimiter:
    """Minimum spacing between sends on one route (asyncio-safe)."""

    def __init__(self, per_second: float) -> None:
        self.gap = 1.0 / per_second
        self.next_at = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self.lock:
            now = time.monotonic()
            if now < self.next_at:
                await asyncio.sleep(self.next_at - now)
            self.next_at = max(now, self.next_at) + self.gap


class Dispatcher:
    def __init__(self, settings: AlertSettings, redis: aredis.Redis, *, key_prefix: str = "rm") -> None:
        self.settings = settings
        self.r = redis
        self.p = f"{key_prefix}:alert"
        asset = apprise.AppriseAsset(async_mode=True)
        self._apprise: dict[str, apprise.Apprise] = {}
        self._limits: dict[str, _RateLimiter] = {}
        self.routes: dict[str, Route] = {}
        for route in settings.routes:
            ap = apprise.Apprise(asset=asset)
            for url in route.urls:
                sep = "&" if "?" in url else "?"
                if not ap.add(f"{url}{sep}rto={settings.timeout_seconds}&cto={settings.timeout_seconds}"):
                    raise ValueError(f"alerts.routes[{route.name}]: Apprise cannot parse URL {url!r}")
            self._apprise[route.name] = ap
            self._limits[route.name] = _RateLimiter(route.rate_per_second)
            self.routes[route.name] = route

    # -- routing ----------------------------------------------------------------------------
    def matches(self, route: Route, incident: Incident) -> bool:
        if SEVERITY_RANK[incident.severity] < SEVERITY_RANK[route.min_severity]:
            return False
        if route.entities:
            brand = incident.entity.split("/", 1)[0]
            if incident.entity not in route.entities and brand not in route.entities:
                return False
        if route.teams:
            team = incident.evidence.get("team")
            if team not in route.teams:
                return False
        return True

    async def _routes_for(self, incident: Incident) -> list[Route]:
        key = f"{self.p}:thread:{incident.incident_id}"
        if incident.status == "resolved":
            used = {_s(v) for v in await self.r.smembers(key)}
            return [r for name, r in self.routes.items() if name in used]
        chosen = [r for r in self.routes.values() if self.matches(r, incident)]
        if chosen:
            await self.r.sadd(key, *[r.name for r in chosen])
            await self.r.expire(key, DELIVERED_TTL)
        return chosen

    # -- sending ----------------------------------------------------------------------------
    async def dispatch(self, incident: Incident) -> list[Delivery]:
        """Send ``incident`` to its routes (see the module rules). Never raises for a channel."""
        if self.settings.console:
            msg = render(incident)
            console_logger.warning("%s\n%s", msg.title, msg.body)
        out = []
        for route in await self._routes_for(incident):
            out.append(await self._to_route(route, incident))
        await self._count(out)
        return out

    async def _to_route(self, route: Route, incident: Incident, *, flushing: bool = False) -> Delivery:
        iid, seq = incident.incident_id, incident.seq
        done_key = f"{self.p}:delivered:{route.name}:{iid}:{seq}"
        if await self.r.exists(done_key):
            return Delivery(route.name, iid, seq, "duplicate")
        last_key = f"{self.p}:last:{route.name}:{iid}"
        held_key = f"{self.p}:held:{route.name}:{iid}"
        if incident.status == "update" and not flushing:
            last = await self.r.get(last_key)
            if last is not None and time.time() - float(last) < self.settings.cooldown_seconds:
                await self.r.set(held_key, incident.model_dump_json(), ex=DELIVERED_TTL)
                await self.r.zadd(
                    f"{self.p}:held", {f"{route.name}|{iid}": float(last) + self.settings.cooldown_seconds}
                )
                return Delivery(route.name, iid, seq, "cooldown")
        claim = f"{self.p}:claim:{route.name}:{iid}:{seq}"
        if not await self.r.set(claim, "1", nx=True, px=int((self.settings.timeout_seconds + 5) * 1000)):
            return Delivery(route.name, iid, seq, "duplicate")
        try:
            msg = render(incident, sms=route.sms)
            attempts, error = 0, None
            for attempt in range(self.settings.retries + 1):
                attempts = attempt + 1
                await self._limits[route.name].wait()
                try:
                    ok = bool(
                        await self._apprise[route.name].async_notify(
                            body=msg.body, title=msg.title, notify_type=msg.notify_type
                        )
                    )
                    error = None if ok else "channel refused the message"
                except Exception as exc:  # a channel must never take the worker down
                    ok, error = False, f"{type(exc).__name__}: {exc}"
                if ok:
                    async with self.r.pipeline(transaction=True) as pipe:
                        pipe.set(done_key, "1", ex=DELIVERED_TTL)
                        pipe.set(last_key, time.time(), ex=DELIVERED_TTL)
                        if incident.status != "update" or flushing:
                            pipe.delete(held_key)
                            pipe.zrem(f"{self.p}:held", f"{route.name}|{iid}")
                        await pipe.execute()
                    return Delivery(route.name, iid, seq, "delivered", attempts)
                await asyncio.sleep(self.settings.retry_backoff_seconds * (2**attempt))
            logger.error("alert %s #%s to %s failed after %d attempts: %s", iid, seq, route.name, attempts, error)
            return Delivery(route.name, iid, seq, "failed", attempts, error)
        finally:
            await self.r.delete(claim)

    async def flush_due(self) -> list[Delivery]:
        """Send held updates whose cooldown has passed (the worker calls this from a timer)."""
        due = await self.r.zrangebyscore(f"{self.p}:held", 0, time.time())
        out = []
        for member in due:
            assert isinstance(member, bytes | str)
            route_name, iid = _s(member).split("|", 1)
            raw = await self.r.get(f"{self.p}:held:{route_name}:{iid}")
            await self.r.zrem(f"{self.p}:held", member)
            route = self.routes.get(route_name)
            if raw is None or route is None:
                continue
            incident = Incident.model_validate_json(raw)
            out.append(await self._to_route(route, incident, flushing=True))
            await self.r.delete(f"{self.p}:held:{route_name}:{iid}")
        await self._count(out)
        return out

    async def _count(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        async with self.r.pipeline(transaction=False) as pipe:
            for d in deliveries:
                pipe.hincrby(f"{self.p}:stats", d.status, 1)
            await pipe.execute()

    async def stats(self) -> dict[str, int]:
        raw = await self.r.hgetall(f"{self.p}:stats")
        return {_s(k): int(v) for k, v in raw.items()}


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
