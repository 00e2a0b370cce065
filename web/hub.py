"""Live events to many browsers, each with bounded memory, and nothing missed across reconnects.

Every event gets an id ``<boot>-<n>``: ``boot`` is random per process, ``n`` counts up. The hub keeps
the last ``keep`` events (the replay buffer). A client that connects with ``Last-Event-ID`` is first
sent what it missed from the buffer; one whose id the buffer no longer holds (too old, or from an
earlier process) is sent a ``reset`` event, on which the page reloads its data from the API, so a
reconnect never silently loses an event.

Each client has a queue of at most ``queue_size`` events. A client that falls that far behind (a
stalled tab, a slow network) is cut off rather than buffered without bound: its browser reconnects
(``EventSource`` does so by itself, sending ``Last-Event-ID``) and catches up from the replay
buffer. Publishing never waits for a client.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["Hub", "HubFull", "LiveEvent"]


@dataclass(frozen=True, slots=True)
class LiveEvent:
    id: str
    event: str
    data: str


class HubFull(RuntimeError):
    """More live clients than ``max_clients``."""


@dataclass(eq=False)
class _Client:
    queue: asyncio.Queue[LiveEvent]
    cut: asyncio.Event = field(default_factory=asyncio.Event)


class Hub:
    def __init__(self, *, keep: int = 5000, queue_size: int = 256, max_clients: int = 500) -> None:
        self.boot = uuid.uuid4().hex[:8]
        self._n = 0
        self._ring: collections.deque[LiveEvent] = collections.deque(maxlen=keep)
        self._clients: set[_Client] = set()
        self.queue_size = queue_size
        self.max_clients = max_clients
        self.cut_off = 0  # clients dropped for being too far behind (they reconnect and catch up)

    @property
    def clients(self) -> int:
        return len(self._clients)

    @property
    def last_id(self) -> str:
        return f"{self.boot}-{self._n}"

    def publish(self, event: str, data: dict[str, Any]) -> LiveEvent:
        self._n += 1
        ev = LiveEvent(f"{self.boot}-{self._n}", event, orjson.dumps(data, default=str).decode())
        self._ring.append(ev)
        for c in self._clients:
            if c.cut.is_set():
                continue
            try:
                c.queue.put_nowait(ev)
            except asyncio.QueueFull:
                c.cut.set()
                self.cut_off += 1
        return ev

    def _missed(self, last_event_id: str | None) -> list[LiveEvent]:
        if not last_event_id:
            return []
        boot, _, n = last_event_id.partition("-")
        oldest = self._ring[0] if self._ring else None
        if boot != self.boot or not n.isdigit() or int(n) > self._n:
            return [LiveEvent(self.last_id, "reset", '{"why": "unknown event id"}')]
        seen = int(n)
        if oldest is not None and seen < int(oldest.id.partition("-")[2]) - 1:
            return [LiveEvent(self.last_id, "reset", '{"why": "events missed beyond the replay buffer"}')]
        return [ev for ev in self._ring if int(ev.id.partition("-")[2]) > seen]

    async def subscribe(self, last_event_id: str | None = None) -> AsyncIterator[LiveEvent]:
        """Events from after ``last_event_id`` (or from now) until the client falls too far behind."""
        if len(self._clients) >= self.max_clients:
            raise HubFull(f"{self.max_clients} live clients already connected (web.max_sse_clients)")
        client = _Client(asyncio.Queue(self.queue_size))
        backlog = self._missed(last_event_id)  # no await between this and registering: nothing slips between
        self._clients.add(client)
        return self._stream(client, backlog)

    async def _stream(self, client: _Client, backlog: list[LiveEvent]) -> AsyncIterator[LiveEvent]:
        try:
            for ev in backlog:
                yield ev
            # cut (a full queue): end the stream; the browser reconnects with Last-Event-ID and catches up
            while not client.cut.is_set():
                yield await client.queue.get()
        finally:
            self._clients.discard(client)
