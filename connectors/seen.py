"""Replay protection for signed pushes: a signature is accepted once within its validity window.

Keys are the verified HMAC digests (a digest covers the timestamp and the body). States:
``pending`` while its records are being produced, ``done`` once the broker acknowledged them.
A reservation is released when producing failed, so the sender's retry is accepted.

- :class:`MemorySeen`: in-process, bounded, TTL; fails closed (``SeenCacheError``) when full of
  live entries rather than forgetting one that could then be replayed.
- :class:`RedisSeen`: shared by every webhook process (``SET NX PX``), used when a Redis URL is
  configured; a Redis that does not answer raises ``SeenCacheError`` naming its address.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["MemorySeen", "RedisSeen", "SeenCache", "SeenCacheError", "State"]

State = Literal["new", "pending", "done"]


class SeenCacheError(Exception):
    """The replay cache cannot answer: the request must not be accepted (fail closed)."""


class SeenCache(Protocol):
    async def reserve(self, key: str, ttl: float) -> State:
        """Atomically claim ``key`` for ``ttl`` s: ``new`` if claimed, else its current state."""
        ...

    async def done(self, key: str) -> None: ...

    async def release(self, key: str) -> None: ...


class MemorySeen:
    """Bounded in-process cache (one webhook process)."""

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[State, float]] = OrderedDict()  # key -> (state, expires)

    def _prune(self, now: float) -> None:
        while self._entries:
            key, (_, expires) = next(iter(self._entries.items()))
            if expires > now:
                # entries share one TTL so they expire in insertion order; a shorter TTL behind a
                # longer one is found on lookup
                break
            del self._entries[key]

    async def reserve(self, key: str, ttl: float) -> State:
        now = self.clock()
        self._prune(now)
        hit = self._entries.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        if len(self._entries) >= self.max_entries:
            raise SeenCacheError(f"replay cache full ({self.max_entries} live signatures); retry shortly")
        self._entries[key] = ("pending", now + ttl)
        return "new"

    async def done(self, key: str) -> None:
        hit = self._entries.get(key)
        if hit is not None:
            self._entries[key] = ("done", hit[1])

    async def release(self, key: str) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


class RedisSeen:
    """Shared cache in Redis (several webhook processes behind a load balancer)."""

    def __init__(self, client: redis.asyncio.Redis, *, prefix: str = "repmon:webhook:seen:", address: str = "") -> None:
        self.client = client
        self.prefix = prefix
        self.address = address or "redis"

    async def _call(self, fn: Callable[[], object]) -> object:
        from redis.exceptions import RedisError

        try:
            return await fn()  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            raise SeenCacheError(f"replay cache at {self.address} did not answer: {exc}") from exc

    async def reserve(self, key: str, ttl: float) -> State:
        k = self.prefix + key
        for _ in range(3):
            if await self._call(lambda: self.client.set(k, "pending", nx=True, px=max(1, int(ttl * 1000)))):
                return "new"
            state = await self._call(lambda: self.client.get(k))
            if state is not None:
                return "done" if state in (b"done", "done") else "pending"
        return "pending"  # claimed and expired three times in a row: let the sender retry

    async def done(self, key: str) -> None:
        k = self.prefix + key
        await self._call(lambda: self.client.set(k, "done", xx=True, keepttl=True))

    async def release(self, key: str) -> None:
        k = self.prefix + key
        await self._call(lambda: self.client.delete(k))
