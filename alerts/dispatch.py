"""Incidents -> Apprise routes, without floods, without duplicates, and without losing any.

:meth:`Dispatcher.dispatch` decides, per route, what happens to an incident and puts the messages
to send in a durable per-route *outbox* in Redis; one sender task per route (started on the first
:meth:`~Dispatcher.dispatch` or :meth:`~Dispatcher.flush_due`, stopped by
:meth:`~Dispatcher.aclose`) sends them. ``dispatch`` never waits for a channel: the message is
``queued``, and its outcome (``delivered``, ``retrying``, ``dead``, ...) is reported later to the
``on_delivery`` callback. Rules, per route:

- **routing**: a route takes an incident when its ``min_severity`` is reached (warning <
  critical; an ``info`` thread, volume trending with an unchanged sentiment mix, only when the route
  sets ``trending`` or ``min_severity = "info"``), its ``entities`` list is empty or names the
  entity (``brand/product`` also matches a route naming ``brand``; case-insensitive) and its
  ``teams`` list is empty or names ``incident.evidence["team"]``. Every route that took a message
  of a thread is remembered in Redis; the ``resolved`` message goes to all of them (and to any
  route it matches itself). A route that does not take the incident gets a ``filtered``
  :class:`Delivery`.
- **nothing lost**: a taken message is queued in Redis (``{prefix}:alert:outbox:{route}:{incident}``,
  a hash of pending messages by ``seq``; ``{prefix}:alert:outbox:{route}``, a sorted set of the
  threads with pending messages scored by when their next attempt is due). A failed attempt (Apprise
  reports failure, raises or times out) is reported ``retrying`` and tried again after an exponential
  backoff with jitter (``retry_backoff_seconds`` doubling up to ``retry_backoff_max_seconds``, each
  gap drawn in [d/2, d]) until it is delivered or ``delivery_horizon_seconds`` after it was queued:
  then it is a ``dead`` notification (counted, reported with its incident, removed). The outbox is
  bounded: at most ``max_pending_threads`` threads per route (a message beyond it is ``dead`` at
  once, error ``outbox full``); within a thread an older pending ``update`` is dropped when a newer
  message is queued; the keys expire after the horizon. A worker that restarts finds its outbox.
- **nothing stuck**: each route has its own sender, so a slow or hanging channel delays only its own
  route (a route sends one message at a time). An attempt is bounded by ``timeout_seconds`` (socket
  timeouts ``rto``/``cto`` on the URL, Apprise's service and call timeouts, and an outer
  ``asyncio.timeout`` one second later). A sender is woken when its worker queues a message and
  otherwise looks at its outbox every ``outbox_poll_seconds`` (messages queued by other workers,
  or left by a worker that stopped).
- **order per thread**: a route sends the messages of a thread in ``seq`` order, one at a time; the
  next waits until the previous one is delivered or dead. An ``open`` (or ``escalated``,
  ``resolved``) is never dropped, so a thread never starts at ``update`` on a route while its
  ``open`` is pending; and the first message a route delivers on a thread is rendered as an ``OPEN``
  (an ``update`` or ``escalated`` after a dead ``open``, or on a route the thread reached only at a
  higher severity, announces the crisis), so no reader's thread starts mid-way.
- **one message once**: ``(route, incident_id, seq)`` is marked delivered in Redis
  (``{prefix}:alert:delivered:{route}:{incident_id}:{seq}``, 30 days) only after the channel
  accepted it; a redelivered incident finds the mark (or the pending message): ``duplicate``,
  nothing sent. A lease per route and thread (``{prefix}:alert:lease:{route}:{incident_id}``,
  ``SET NX PX``, longer than one bounded attempt) keeps two workers from attempting messages of a
  thread at the same time, so a channel that hangs is never posted to by a second attempt while the
  first is in flight. Every request to a json://, form:// or xml:// URL carries an ``Idempotency-Key``
  header (a hash of prefix, route, incident and seq, the same on every attempt and worker) so a
  receiver that took a message whose answer timed out can drop the retry (HTTP gives no better
  guarantee; other channels may show such a message twice). On a route with several URLs each URL's
  success is remembered too, so a retry only goes to the URLs that failed.
- **grouping**: ``open``, ``escalated`` and ``resolved`` are queued at once, and so is an ``update``
  whose severity is above what the route last got (or has queued) for the thread. Any other
  ``update`` within ``cooldown_seconds`` of the thread's last message queued or delivered on that
  route is held (``cooldown``): the latest held update per route and thread is kept in Redis, and
  :meth:`Dispatcher.flush_due` (the worker calls it from a timer) queues it once the cooldown has
  passed. A message of the thread with a higher ``seq`` that is queued or goes out first makes the
  held one moot: it is dropped. An ``update`` older than what the route already got or has pending
  is ``filtered`` (superseded). One crisis is one thread of a few messages, not a flood.
- **page budget**: a route with ``max_pages`` takes at most that many new threads per
  ``max_pages_window_seconds`` (24 h); a thread beyond it is ``folded``: its messages (the newest one
  per thread) wait in ``{prefix}:alert:digest:{route}`` and go out as one digest message,
  ``digest_seconds`` after the first fold (the ``flush_due`` timer sends it). A thread that began
  within budget keeps its own messages.
- **rate limit**: at most ``rate_per_second`` requests per second per route (Slack webhooks allow
  about one), spaced in-process and awaited with ``asyncio.sleep``; retries count too.
- **never block the loop**: Apprise is called with ``async_notify``, which runs each plugin's
  blocking HTTP call in Apprise's thread pool.
- **Redis trouble**: the senders log Redis errors and try again later (within
  ``outbox_poll_seconds``); ``dispatch`` keeps an incident it could not queue in memory (at most
  10 000, oldest dropped first) and queues it once Redis answers (tried again within 5 s; those
  outcomes go to ``on_delivery``); ``flush_due`` logs and returns. None of them raises for it.
- **counts**: ``{prefix}:alert:stats`` counts ``delivered``, ``retrying`` (failed attempts), ``dead``,
  ``duplicate`` and ``cooldown`` results.
- **responders' decisions**: before a message is queued, and again before each attempt, the route
  asks :class:`alerts.controls.Controls` (Redis, written by ``repmon web``): a matching silence, or an
  acknowledged / resolved / false-positive incident for an ``update`` or ``escalated``, makes it
  ``filtered`` with the reason; a message already in the outbox is dropped the same way.
- **console**: with ``alerts.console`` every incident is also logged on ``repmon.alerts`` at WARNING.

The Redis scripts touch several keys at once: a single Redis (or a cluster with one hash slot per
prefix) is assumed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import inspect
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import apprise
import redis.asyncio as aredis
from redis.exceptions import RedisError

from alerts.controls import Controls
from alerts.incidents import SEVERITY_RANK
from alerts.render import Message, render, thread_ref
from contract.records import Incident
from infra.settings import AlertSettings, Route

__all__ = [
    "DELIVERED_TTL_SECONDS",
    "IDEMPOTENCY_HEADER",
    "Delivery",
    "DeliveryStatus",
    "Dispatcher",
    "backoff",
    "digest",
]

logger = logging.getLogger(__name__)
console_logger = logging.getLogger("repmon.alerts")

DELIVERED_TTL_SECONDS = 30 * 86400
"""How long delivered marks, thread routes and held updates are kept."""

IDEMPOTENCY_HEADER = "Idempotency-Key"
BACKLOG_MAX = 10_000
"""Incidents kept in memory while Redis does not answer ``dispatch``."""

DeliveryStatus = Literal["queued", "delivered", "duplicate", "filtered", "cooldown", "folded", "retrying", "dead"]
COUNTED: frozenset[str] = frozenset({"delivered", "retrying", "dead", "duplicate", "cooldown", "folded"})

OnDelivery = Callable[["Delivery"], Awaitable[None] | None]


@dataclass(frozen=True)
class Delivery:
    """What happened to one message on one route.

    ``queued``: in the route's outbox (its outcome comes later, to ``on_delivery``); ``retrying``:
    an attempt failed, another one is due at ``retry_at`` (epoch seconds); ``dead``: given up (past
    the horizon, or the outbox was full), with the ``incident`` for a dead-notification topic.
    """

    route: str
    incident_id: str
    seq: int
    status: DeliveryStatus
    attempts: int = 0
    error: str | None = None
    retry_at: float | None = None
    incident: Incident | None = field(default=None, repr=False, compare=False)


def backoff(attempts: int, base: float, cap: float, rng: random.Random) -> float:
    """Gap before the next attempt after ``attempts`` failed ones: ``d = min(cap, base * 2**(attempts-1))``
    drawn in ``[d/2, d]`` ("equal jitter": workers that failed together do not retry together).

    >>> rng = random.Random(1)
    >>> [round(backoff(n, 1.0, 5.0, rng), 2) for n in (1, 2, 3, 4, 5)]
    [0.57, 1.85, 3.53, 3.14, 3.74]
    """
    d = min(cap, base * 2 ** max(attempts - 1, 0))
    return d / 2 + rng.uniform(0, d / 2)


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

# KEYS: thread outbox hash, route outbox zset, delivered mark, last hash, held hash, held index.
# ARGV: seq, status, envelope json, now, ttl s, max threads, incident id, held index member,
# severity rank, last-hash ttl s. The last hash also gets when (qat) and how loud (qrank) the thread
# was last queued, for the cooldown.
# Queue one message: {'queued', dropped seqs...} | {'duplicate'} | {'superseded', seq} | {'full'}.
_ENQUEUE = """
if redis.call('EXISTS', KEYS[3]) == 1 then return {'duplicate'} end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {'duplicate'} end
local seq = tonumber(ARGV[1])
local fields = redis.call('HGETALL', KEYS[1])
if ARGV[2] == 'update' then
  local last = redis.call('HGET', KEYS[4], 'seq')
  if last and tonumber(last) >= seq then return {'superseded', last} end
  for i = 1, #fields, 2 do
    if tonumber(fields[i]) > seq then return {'superseded', fields[i]} end
  end
end
if #fields == 0 and not redis.call('ZSCORE', KEYS[2], ARGV[7]) then
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[6]) then return {'full'} end
end
local out = {'queued'}
for i = 1, #fields, 2 do
  if tonumber(fields[i]) < seq and cjson.decode(fields[i + 1])['status'] == 'update' then
    redis.call('HDEL', KEYS[1], fields[i])
    table.insert(out, fields[i])
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], 'NX', ARGV[4], ARGV[7])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('HSET', KEYS[4], 'qat', ARGV[4])
local qrank = redis.call('HGET', KEYS[4], 'qrank')
if (not qrank) or tonumber(qrank) < tonumber(ARGV[9]) then redis.call('HSET', KEYS[4], 'qrank', ARGV[9]) end
redis.call('EXPIRE', KEYS[4], ARGV[10])
local held = redis.call('HGET', KEYS[5], 'seq')
if held and tonumber(held) <= seq then
  redis.call('DEL', KEYS[5])
  redis.call('ZREM', KEYS[6], ARGV[8])
end
return out
"""

# KEYS: thread outbox hash, route outbox zset. ARGV: seq ('' for none), incident id, now.
# Remove a message (delivered, dead or duplicate); the thread's next message is due now.
_REMOVE = """
if ARGV[1] ~= '' then redis.call('HDEL', KEYS[1], ARGV[1]) end
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[2])
else
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
end
return 1
"""

# KEYS: thread outbox hash, route outbox zset. ARGV: seq, envelope json, due, incident id.
# A failed attempt: keep the message (if still pending) with its new count, due again later.
_RETRY_LATER = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
if redis.call('HLEN', KEYS[1]) > 0 then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4]) end
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


# KEYS: folded set, pages zset, digest hash, digest index, last hash.
# ARGV: incident id, status, now, window s, max pages, incident json, due, route, ttl s, seq.
# The page budget of one route: 0 = send as usual; 1 = folded into the route's next digest.
_FOLD = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  if ARGV[2] == 'resolved' or redis.call('EXISTS', KEYS[5]) == 1 then return 0 end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[4]))
  if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
  if redis.call('ZCARD', KEYS[2]) < tonumber(ARGV[5]) then
    redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
    redis.call('EXPIRE', KEYS[2], ARGV[9])
    return 0
  end
  redis.call('SADD', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[9])
end
local cur = redis.call('HGET', KEYS[3], ARGV[1])
if cur and tonumber(cjson.decode(cur)['seq']) >= tonumber(ARGV[10]) then return 1 end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[6])
redis.call('EXPIRE', KEYS[3], ARGV[9])
redis.call('ZADD', KEYS[4], 'NX', ARGV[7], ARGV[8])
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


class _Lease:
    """A ``SET NX PX`` lease, owned through a random token."""

    def __init__(self, dispatcher: Dispatcher, key: str, ttl_ms: int) -> None:
        self.d, self.key, self.ttl_ms = dispatcher, key, ttl_ms
        self.token = uuid.uuid4().hex

    async def take(self) -> bool:
        return bool(await self.d.r.set(self.key, self.token, nx=True, px=self.ttl_ms))

    async def release(self) -> None:
        await self.d.eval(_RELEASE_CLAIM, [self.key], [self.token])


class Dispatcher:
    """Sends incidents to the Apprise routes of ``settings`` (see the module docstring for the rules).

    Every route's URLs are checked here, once; a URL Apprise cannot use raises :class:`ValueError`
    naming the route. ``on_delivery`` (sync or async) receives the outcomes decided by the route
    senders: ``delivered``, ``retrying``, ``dead``, ``duplicate`` and ``filtered`` (a pending update
    superseded); ``dispatch`` and ``flush_due`` return theirs. ``clock`` (epoch seconds) and ``rng``
    (jitter) can be injected.
    """

    def __init__(
        self,
        settings: AlertSettings,
        redis: aredis.Redis,
        *,
        key_prefix: str = "rm",
        on_delivery: OnDelivery | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.r = redis
        self.p = f"{key_prefix}:alert"
        self.on_delivery = on_delivery
        self.clock = clock
        self.rng = rng or random.Random()
        # responders' silences and acknowledgements (the web view writes them), read on every worker
        self.controls = Controls(redis, key_prefix, clock=clock)
        self.routes: dict[str, Route] = {}
        self._urls: dict[str, list[str]] = {}
        self._limits: dict[str, _RateLimiter] = {}
        timeout = settings.timeout_seconds
        # in-memory persistent store: nothing written under the user's home; no config files are read
        self._asset = apprise.AppriseAsset(async_mode=True, storage_mode="memory", service_timeout=timeout)
        for route in settings.routes:
            if route.name in self.routes:
                raise ValueError(f"alerts.routes: two routes are named {route.name!r}; give each a unique name")
            ap = apprise.Apprise(asset=self._asset)
            for i, url in enumerate(route.urls):
                if not ap.add(_with_args(url, timeout, "0" * 32)):
                    scheme = url.split("://", 1)[0]
                    raise ValueError(
                        f"alerts.routes[{route.name}].urls[{i}]: Apprise cannot use this {scheme}:// URL "
                        "(unknown scheme or bad format; see https://github.com/caronc/apprise/wiki)"
                    )
            self.routes[route.name] = route
            self._urls[route.name] = list(route.urls)
            self._limits[route.name] = _RateLimiter(route.rate_per_second)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._backlog: collections.deque[Incident] = collections.deque()
        self._closed = False

    # -- keys -----------------------------------------------------------------------------
    def _k_delivered(self, route: str, iid: str, seq: int) -> str:
        return f"{self.p}:delivered:{route}:{iid}:{seq}"

    def _k_held(self, route: str, iid: str) -> str:
        return f"{self.p}:held:{route}:{iid}"

    def _k_last(self, route: str, iid: str) -> str:
        return f"{self.p}:last:{route}:{iid}"

    def _k_outbox(self, route: str) -> str:
        return f"{self.p}:outbox:{route}"

    def _k_thread_outbox(self, route: str, iid: str) -> str:
        return f"{self.p}:outbox:{route}:{iid}"

    def _k_lease(self, route: str, iid: str) -> str:
        return f"{self.p}:lease:{route}:{iid}"

    @property
    def _k_held_index(self) -> str:
        return f"{self.p}:held"

    @property
    def _k_digest_index(self) -> str:
        return f"{self.p}:digests"

    def idempotency_key(self, route: str, incident_id: str, seq: int) -> str:
        """The ``Idempotency-Key`` of a message: the same on every attempt, by any worker."""
        return hashlib.sha256(f"{self.p}\0{route}\0{incident_id}\0{seq}".encode()).hexdigest()[:32]

    async def eval(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script (EVAL; Redis caches the compiled script)."""
        return await cast(Awaitable[Any], self.r.eval(script, len(keys), *keys, *args))

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Start (or restart, if one ended) the sender of every route and the backlog task.

        Needs a running loop; ``dispatch`` and ``flush_due`` call it, so a worker that calls
        ``flush_due`` from a timer keeps the senders alive without more wiring.
        """
        if self._closed:
            raise RuntimeError("Dispatcher is closed")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new loop (tests): the old tasks belong to a closed one
            self._loop, self._tasks, self._wake = loop, {}, {}
        for name in [*self.routes, ""]:
            task = self._tasks.get(name)
            if task is not None and not task.done():
                continue
            if task is not None and not task.cancelled() and task.exception() is not None:
                logger.error("alert sender %r ended: %r; restarted", name, task.exception())
            self._wake.setdefault(name, asyncio.Event())
            coro = self._route_loop(name) if name else self._backlog_loop()
            self._tasks[name] = loop.create_task(coro, name=f"repmon-alerts-{name or 'backlog'}")

    async def aclose(self) -> None:
        """Stop the senders. Messages still pending stay in Redis for the next start (by any worker)."""
        self._closed = True
        for ev in self._wake.values():
            ev.set()  # a sender that swallowed a cancellation (some libraries do) still sees _closed
        tasks = list(self._tasks.values())
        loop = asyncio.get_running_loop()
        for t in tasks:
            if t.get_loop() is not loop:  # started in another loop (closed by now, or not running here)
                with contextlib.suppress(RuntimeError):
                    t.cancel()
                continue
            while not t.done():
                t.cancel()
                await asyncio.wait([t], timeout=1.0)
            if not t.cancelled() and t.exception() is not None:
                logger.error("alert sender %s ended with %r", t.get_name(), t.exception())
        self._tasks = {}

    def _wake_route(self, name: str) -> None:
        ev = self._wake.get(name)
        if ev is not None:
            ev.set()

    # -- routing --------------------------------------------------------------------------
    def matches(self, route: Route, incident: Incident) -> bool:
        """Whether ``route`` takes ``incident`` by severity, entity and team."""
        rank = SEVERITY_RANK.get(incident.severity, 0)
        if rank == SEVERITY_RANK["info"]:
            if not route.takes_info:  # info is never a page: only a route that asked for trending takes it
                return False
        elif rank < SEVERITY_RANK[route.min_severity]:
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
        """Queue ``incident`` on its routes; one :class:`Delivery` per configured route, in config order.

        Never waits for a channel and never raises for one. When Redis fails, the incident is kept in
        memory and queued later; its deliveries are then ``queued`` with the error.
        """
        self.start()
        if self.settings.console:
            msg = render(incident)
            console_logger.warning("%s\n%s", msg.title, msg.body)
        try:
            out = await self._dispatch(incident)
        except (RedisError, OSError) as exc:
            self._keep(incident)
            error = f"Redis unavailable, kept in memory: {type(exc).__name__}: {exc}"
            logger.error("alert %s #%s not queued yet: %s", incident.incident_id, incident.seq, error)
            return [Delivery(n, incident.incident_id, incident.seq, "queued", error=error) for n in self.routes]
        await self._count_quietly(out)
        return out

    async def _dispatch(self, incident: Incident) -> list[Delivery]:
        selected = await self._select(incident)
        out = []
        for name, route in self.routes.items():
            if name in selected:
                out.append(await self._admit(route, incident))
            else:
                out.append(Delivery(name, incident.incident_id, incident.seq, "filtered"))
        return out

    def _keep(self, incident: Incident) -> None:
        if len(self._backlog) >= BACKLOG_MAX:
            lost = self._backlog.popleft()
            logger.error("alert backlog full: incident %s #%s dropped", lost.incident_id, lost.seq)
        self._backlog.append(incident)
        self._wake_route("")

    async def flush_due(self) -> list[Delivery]:
        """Queue the held updates whose cooldown has passed (the worker calls this from a timer).

        Safe to call from several workers: each held update is taken by one of them. Also (re)starts
        the route senders. Logs Redis errors and returns what it did.
        """
        self.start()
        out: list[Delivery] = []
        try:
            await self._flush_due(out)
            await self._flush_digests(out)
        except (RedisError, OSError) as exc:
            logger.error("held alerts not flushed (will try again): %s: %s", type(exc).__name__, exc)
        await self._count_quietly(out)
        return out

    async def _flush_due(self, out: list[Delivery]) -> None:
        members = cast(list[bytes | str], await self.r.zrangebyscore(self._k_held_index, "-inf", self.clock()))
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
            out.append(await self._admit(route, incident, flushing=True))

    async def _flush_digests(self, out: list[Delivery]) -> None:
        """Queue each route's digest of folded threads once its ``digest_seconds`` have passed."""
        members = cast(list[bytes | str], await self.r.zrangebyscore(self._k_digest_index, "-inf", self.clock()))
        for member in members:
            if not await self.r.zrem(self._k_digest_index, member):
                continue  # another worker took it
            route = self.routes.get(_s(member))
            key = f"{self.p}:digest:{_s(member)}"
            async with self.r.pipeline(transaction=True) as pipe:
                pipe.hgetall(key)
                pipe.delete(key)
                raw, _ = await pipe.execute()
            folded = []
            for v in cast(dict[Any, Any], raw).values():
                try:
                    folded.append(Incident.model_validate_json(v))
                except ValueError as exc:  # written by an older, incompatible version
                    logger.error("folded alert on route %s is unreadable and dropped: %s", _s(member), exc)
            if route is not None and folded:
                out.append(await self._admit(route, digest(route, folded), flushing=True, budgeted=False))

    async def stats(self) -> dict[str, int]:
        """The ``{prefix}:alert:stats`` counters."""
        return {k: int(v) for k, v in (await self._hash(f"{self.p}:stats")).items()}

    async def pending(self) -> dict[str, int]:
        """Messages waiting in each route's outbox."""
        out: dict[str, int] = {}
        for name in self.routes:
            threads = cast(list[Any], await self.r.zrange(self._k_outbox(name), 0, -1))
            n = 0
            for iid in threads:
                n += int(await cast(Awaitable[int], self.r.hlen(self._k_thread_outbox(name, _s(iid)))))
            out[name] = n
        return out

    async def _hash(self, key: str) -> dict[str, str]:
        raw = await cast(Awaitable[dict[Any, Any]], self.r.hgetall(key))
        return {_s(k): _s(v) for k, v in raw.items()}

    # -- into the outbox ------------------------------------------------------------------
    async def _admit(
        self, route: Route, incident: Incident, *, flushing: bool = False, budgeted: bool = True
    ) -> Delivery:
        name, iid, seq = route.name, incident.incident_id, incident.seq
        why = await self.controls.suppressed(name, incident)
        if why is not None:
            return Delivery(name, iid, seq, "filtered", error=why)
        rank = SEVERITY_RANK.get(incident.severity, 0)
        if budgeted and route.max_pages is not None and await self._fold(route, incident):
            return Delivery(name, iid, seq, "folded")
        if incident.status == "update" and not flushing:
            last = await self._hash(self._k_last(name, iid))
            if "seq" in last and int(last["seq"]) >= seq:
                return Delivery(name, iid, seq, "filtered", error=f"superseded by #{last['seq']}")
            louder = rank > max(int(last.get("rank", -1)), int(last.get("qrank", -1)))
            ref = max(float(last.get("at", 0)), float(last.get("qat", 0)))  # last delivered or queued
            if last and not louder and self.clock() - ref < self.settings.cooldown_seconds:
                await self._hold(route, incident, ref + self.settings.cooldown_seconds)
                return Delivery(name, iid, seq, "cooldown")
        now = self.clock()
        envelope = {
            "status": incident.status,
            "incident": incident.model_dump_json(),
            "queued_at": now,
            "expires_at": now + self.settings.delivery_horizon_seconds,
            "attempts": 0,
            "error": None,
        }
        keys = [
            self._k_thread_outbox(name, iid),
            self._k_outbox(name),
            self._k_delivered(name, iid, seq),
            self._k_last(name, iid),
            self._k_held(name, iid),
            self._k_held_index,
        ]
        ttl = int(self.settings.delivery_horizon_seconds + 86400)
        args = [seq, incident.status, json.dumps(envelope), now, ttl, self.settings.max_pending_threads, iid]
        args += [_member(name, iid), rank, DELIVERED_TTL_SECONDS]
        res = [_s(x) for x in await self.eval(_ENQUEUE, keys, args)]
        if res[0] == "duplicate":
            return Delivery(name, iid, seq, "duplicate")
        if res[0] == "superseded":
            return Delivery(name, iid, seq, "filtered", error=f"superseded by #{res[1]}")
        if res[0] == "full":
            error = f"outbox full ({self.settings.max_pending_threads} threads pending)"
            logger.error("alert %s #%s to route %s is dead: %s", iid, seq, name, error)
            return Delivery(name, iid, seq, "dead", error=error, incident=incident)
        for dropped in res[1:]:
            await self._report(Delivery(name, iid, int(dropped), "filtered", error=f"superseded by #{seq}"))
        self._wake_route(name)
        return Delivery(name, iid, seq, "queued")

    async def _fold(self, route: Route, incident: Incident) -> bool:
        """Whether the route's page budget folds this message into its next digest."""
        name, iid = route.name, incident.incident_id
        keys = [
            f"{self.p}:folded:{name}",
            f"{self.p}:pages:{name}",
            f"{self.p}:digest:{name}",
            self._k_digest_index,
            self._k_last(name, iid),
        ]
        now = self.clock()
        ttl = int(route.max_pages_window_seconds + self.settings.delivery_horizon_seconds + 86400)
        args = [iid, incident.status, now, route.max_pages_window_seconds, route.max_pages]
        args += [incident.model_dump_json(), now + route.digest_seconds, name, ttl, incident.seq]
        return bool(await self.eval(_FOLD, keys, args))

    async def _hold(self, route: Route, incident: Incident, due: float) -> None:
        keys = [self._k_held(route.name, incident.incident_id), self._k_held_index]
        args = [incident.seq, incident.model_dump_json(), due, _member(route.name, incident.incident_id)]
        await self.eval(_HOLD, keys, [*args, DELIVERED_TTL_SECONDS])

    # -- out of the outbox: one sender per route ------------------------------------------
    async def _route_loop(self, name: str) -> None:
        wake = self._wake[name]
        poll = self.settings.outbox_poll_seconds
        errors = 0
        while not self._closed:
            wake.clear()
            try:
                wait = await self._pump(name)
                errors = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down, or a bug: log, never end the sender
                errors += 1
                wait = min(30.0, 0.25 * 2 ** min(errors, 7))
                logger.error("alert sender %s: %s: %s (again in %.1f s)", name, type(exc).__name__, exc, wait)
            if wait > 0 and not wake.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(wait, poll)):
                        await wake.wait()

    async def _pump(self, name: str) -> float:
        """Work the due threads of a route once; seconds until it should look again (0: at once)."""
        route = self.routes[name]
        key = self._k_outbox(name)
        now = self.clock()
        due = cast(list[Any], await self.r.zrangebyscore(key, "-inf", now, start=0, num=64))
        worked = False
        for iid in due:
            worked = await self._work_thread(route, _s(iid)) or worked
        if worked:
            return 0.0
        nxt = cast(list[tuple[Any, float]], await self.r.zrange(key, 0, 0, withscores=True))
        if not nxt:
            return self.settings.outbox_poll_seconds
        return max(nxt[0][1] - self.clock(), 0.2)  # due but leased by another worker: look again soon

    def _lease_ms(self, route: Route) -> int:
        """Lease lifetime: longer than one bounded attempt (rate wait, timeout, Redis) with a margin."""
        attempt = self.settings.timeout_seconds + 1.0 + 1.0 / route.rate_per_second
        return int((attempt + max(5.0, attempt)) * 1000)

    async def _work_thread(self, route: Route, iid: str) -> bool:
        """Under the thread's lease, make one attempt at its first pending message (or retire it)."""
        name = route.name
        lease = _Lease(self, self._k_lease(name, iid), self._lease_ms(route))
        if not await lease.take():
            return False  # another worker is on this thread
        try:
            hkey, okey = self._k_thread_outbox(name, iid), self._k_outbox(name)
            msgs = await self._hash(hkey)
            if not msgs:
                await self.eval(_REMOVE, [hkey, okey], ["", iid, self.clock()])
                return True
            seq = min(int(k) for k in msgs)
            env = json.loads(msgs[str(seq)])
            attempts = int(env.get("attempts", 0))
            incident: Incident | None = None
            error: str | None
            try:
                incident = Incident.model_validate_json(env["incident"])
            except (ValueError, KeyError) as exc:
                error = f"unreadable pending message: {exc}"
            else:
                error = env.get("error") or "not delivered"
            done_key = self._k_delivered(name, iid, seq)
            if await self.r.exists(done_key):
                await self.eval(_REMOVE, [hkey, okey], [seq, iid, self.clock()])
                await self._report(Delivery(name, iid, seq, "duplicate", attempts))
                return True
            if incident is None or self.clock() >= float(env["expires_at"]):
                await self.eval(_REMOVE, [hkey, okey], [seq, iid, self.clock()])
                logger.error("alert %s #%s to route %s is dead after %d attempts: %s", iid, seq, name, attempts, error)
                await self._report(Delivery(name, iid, seq, "dead", attempts, error, incident=incident))
                return True
            why = await self.controls.suppressed(name, incident)
            if why is not None:  # silenced or acknowledged while it waited in the outbox
                await self.eval(_REMOVE, [hkey, okey], [seq, iid, self.clock()])
                await self._report(Delivery(name, iid, seq, "filtered", attempts, why))
                return True
            if incident.status in ("update", "escalated") and "seq" not in await self._hash(self._k_last(name, iid)):
                # Nothing of this thread reached this route (its OPEN is dead, or the route joined at a
                # higher severity): the first message it gets announces the crisis as an OPEN, so no
                # thread ever starts at UPDATE or ESCALATED for its readers.
                incident = incident.model_copy(update={"status": "open"})
            ok, error = await self._attempt(route, incident, done_key)
            attempts += 1
            now = self.clock()
            if ok:
                member = _member(name, iid)
                keys = [done_key, self._k_last(name, iid), self._k_held(name, iid), self._k_held_index]
                rank = SEVERITY_RANK.get(incident.severity, 0)
                await self.eval(_MARK_DELIVERED, keys, [DELIVERED_TTL_SECONDS, now, seq, rank, member])
                await self.eval(_REMOVE, [hkey, okey], [seq, iid, now])
                await self._report(Delivery(name, iid, seq, "delivered", attempts))
                return True
            gap = backoff(
                attempts, self.settings.retry_backoff_seconds, self.settings.retry_backoff_max_seconds, self.rng
            )
            retry_at = min(now + gap, float(env["expires_at"]))
            env.update(attempts=attempts, error=error)
            await self.eval(_RETRY_LATER, [hkey, okey], [seq, json.dumps(env), retry_at, iid])
            logger.warning("alert %s #%s to route %s: attempt %d failed: %s", iid, seq, name, attempts, error)
            await self._report(Delivery(name, iid, seq, "retrying", attempts, error, retry_at=retry_at))
            return True
        finally:
            await lease.release()

    async def _attempt(self, route: Route, incident: Incident, done_key: str) -> tuple[bool, str | None]:
        """One attempt at every URL of the route that has not taken the message yet."""
        urls = self._urls[route.name]
        parts_key = f"{done_key}:urls"
        pending = list(range(len(urls)))
        if len(urls) > 1:
            sent = {_s(t) for t in await cast(Awaitable[set[Any]], self.r.smembers(parts_key))}
            pending = [i for i in pending if f"u{i}" not in sent]
        msg = render(incident, sms=route.sms)
        key = self.idempotency_key(route.name, incident.incident_id, incident.seq)
        await self._limits[route.name].acquire()
        results = await asyncio.gather(*(self._notify(f"u{i}", urls[i], msg, key) for i in pending))
        ok = [f"u{i}" for i, (good, _) in zip(pending, results, strict=True) if good]
        if len(urls) > 1 and ok:
            async with self.r.pipeline(transaction=False) as pipe:
                pipe.sadd(parts_key, *ok)
                pipe.expire(parts_key, DELIVERED_TTL_SECONDS)
                await pipe.execute()
        if len(ok) == len(pending):
            return True, None
        return False, "; ".join(e for good, e in results if not good and e) or "channel refused the message"

    async def _notify(self, tag: str, url: str, msg: Message, key: str) -> tuple[bool, str | None]:
        """One Apprise call to one URL, with the message's idempotency key: (accepted, error)."""
        timeout = self.settings.timeout_seconds
        ap = apprise.Apprise(asset=self._asset)
        ap.add(_with_args(url, timeout, key))
        try:
            async with asyncio.timeout(timeout + 1.0):  # not wait_for: on 3.11 it can swallow a cancellation
                result = await ap.async_notify(
                    body=msg.body, title=msg.title, notify_type=msg.notify_type, timeout=timeout
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

    # -- Redis trouble: incidents kept in memory -------------------------------------------
    async def _backlog_loop(self) -> None:
        wake = self._wake[""]
        errors = 0
        while not self._closed:
            wake.clear()
            while self._backlog and not self._closed:
                incident = self._backlog[0]
                try:
                    out = await self._dispatch(incident)
                except (RedisError, OSError) as exc:
                    errors += 1
                    wait = min(5.0, 0.25 * 2 ** min(errors, 5))
                    logger.error(
                        "alert backlog (%d): Redis still failing: %s (again in %.1f s)", len(self._backlog), exc, wait
                    )
                    await asyncio.sleep(wait)
                    continue
                errors = 0
                self._backlog.popleft()
                await self._count_quietly(out)
                for d in out:
                    await self._report(d, count=False)
            await wake.wait()

    # -- outcomes -------------------------------------------------------------------------
    async def _report(self, d: Delivery, *, count: bool = True) -> None:
        if count:
            await self._count_quietly([d])
        if self.on_delivery is None:
            return
        try:
            res = self.on_delivery(d)
            if inspect.isawaitable(res):
                await res
        except Exception:  # the caller's hook must not stop a sender
            logger.exception("on_delivery hook failed for %s", d)

    async def _count_quietly(self, deliveries: Iterable[Delivery]) -> None:
        try:
            await self._count(deliveries)
        except (RedisError, OSError) as exc:
            logger.warning("alert stats not counted: %s", exc)

    async def _count(self, deliveries: Iterable[Delivery]) -> None:
        counted = [d.status for d in deliveries if d.status in COUNTED]
        if not counted:
            return
        async with self.r.pipeline(transaction=False) as pipe:
            for status in counted:
                pipe.hincrby(f"{self.p}:stats", status, 1)
            await pipe.execute()


def _with_args(url: str, timeout: float, key: str) -> str:
    """Add Apprise's socket read/connect timeouts (``rto``/``cto``) unless the URL sets them, and on
    Apprise's generic HTTP plugins (json, form, xml) the ``Idempotency-Key`` header (``+Header=value``;
    other plugins give ``+`` arguments other meanings, e.g. PagerDuty custom details).

    >>> _with_args("json://h/p?rto=3", 10, "k")
    'json://h/p?rto=3&cto=10&+Idempotency-Key=k'
    >>> _with_args("slack://a/b/c", 10, "k")
    'slack://a/b/c?rto=10&cto=10'
    """
    query = url.split("?", 1)[1] if "?" in url else ""
    keys = {kv.split("=", 1)[0] for kv in query.split("&") if kv}
    extra = [f"{k}={timeout:g}" for k in ("rto", "cto") if k not in keys]
    if url.split("://", 1)[0].lower() in _HEADER_SCHEMES:
        extra.append(f"+{IDEMPOTENCY_HEADER}={key}")
    return url + ("&" if "?" in url else "?") + "&".join(extra)


_HEADER_SCHEMES = frozenset({"json", "jsons", "form", "forms", "xml", "xmls"})


def _member(route: str, iid: str) -> str:
    return json.dumps([route, iid])


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def digest(route: Route, folded: list[Incident]) -> Incident:
    """One message for the threads a route's page budget folded: each thread's latest state.

    Its id comes from what it carries, so a digest queued twice (a worker that crashed between
    taking and queuing it) is a duplicate, not a second message.
    """
    folded = sorted(folded, key=lambda i: (-SEVERITY_RANK.get(i.severity, 0), i.opened_at, i.incident_id))
    ref = "|".join(f"{i.incident_id}#{i.seq}" for i in folded)
    window = f"{route.max_pages} per {route.max_pages_window_seconds / 3600:g} h"
    return Incident(
        incident_id=f"digest-{route.name}-{hashlib.sha256(ref.encode()).hexdigest()[:12]}",
        entity=", ".join(dict.fromkeys(i.entity for i in folded)),
        status="open",
        seq=1,
        severity=cast(Any, max((i.severity for i in folded), key=lambda v: SEVERITY_RANK.get(v, 0))),
        opened_at=min(i.opened_at for i in folded),
        updated_at=max(i.updated_at for i in folded),
        title=f"{len(folded)} more incident thread{'s' if len(folded) != 1 else ''} (page budget {window} reached)",
        summary="\n".join(f"{i.entity}: {i.status} {i.severity} - {i.title} ({thread_ref(i)})" for i in folded),
        evidence={"digest": {"route": route.name, "threads": [[i.incident_id, i.seq] for i in folded]}},
    )
