"""The state seam: per-entity state, pointers and blobs, as JSON documents.

Everything the detection keeps between ticks goes through this one small interface:

- **entity state** ``(name, entity) -> dict``: detector baselines (``det``), incident threads
  (``inc``);
- **pointers** ``name -> float``: e.g. ``closed``, the start of the last bucket judged;
- **blobs** ``name -> dict``: larger documents, e.g. the River watches.

:meth:`StateStore.save` writes entity states and pointers in one atomic step, so a new leader never
finds baselines that learned a bucket the pointer says was not judged.

Only JSON goes in and comes out (``orjson``): a Redis that anyone on the network can write must
not mean code execution in the worker, which unpickling what was read back would. Two
implementations: :class:`RedisState` for the worker and :class:`MemoryState` for the backtest and
the unit tests (no Redis needed).
"""

from __future__ import annotations

import asyncio
import copy
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
import redis.asyncio as aredis

__all__ = ["MemoryState", "RedisState", "StateStore", "as_doc"]

Doc = dict[str, Any]
ENCODE_OFF_LOOP = 40  # documents from which a save encodes them on a thread


class StateStore(ABC):
    """Entity state, pointers and blobs. Documents are JSON objects (plain dicts)."""

    @abstractmethod
    async def load(self, name: str, entities: Iterable[str]) -> dict[str, Doc | None]:
        """``{entity: state or None}`` for each entity."""

    @abstractmethod
    async def save(self, states: Mapping[str, Mapping[str, Doc]], pointers: Mapping[str, float]) -> None:
        """Write ``{name: {entity: state}}`` and the pointers in one atomic step."""

    @abstractmethod
    async def pointer(self, name: str) -> float | None: ...

    @abstractmethod
    async def load_blob(self, name: str) -> Doc | None: ...

    @abstractmethod
    async def save_blob(self, name: str, doc: Doc) -> None: ...

    async def load_blobs(self, names: Iterable[str]) -> dict[str, Doc | None]:
        """Several blobs at once (one round trip where the store can)."""
        return {n: await self.load_blob(n) for n in names}

    async def load_raw(self, name: str, entities: Iterable[str]) -> dict[str, Any]:
        """As :meth:`load`, each state possibly still encoded: :func:`as_doc` decodes one. Thousands
        of entities' documents decoded at once are millions of Python objects (seconds of work,
        and garbage collections that stall the process), so a caller that needs few decodes those."""
        return dict(await self.load(name, entities))

    async def load_blobs_raw(self, names: Iterable[str]) -> dict[str, Any]:
        """As :meth:`load_blobs`, each blob possibly still encoded (see :meth:`load_raw`)."""
        return dict(await self.load_blobs(names))

    async def save_blobs(self, docs: Mapping[str, Doc]) -> None:
        """Several blobs at once (one round trip where the store can)."""
        for n, d in docs.items():
            await self.save_blob(n, d)

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the store holds (a client it owns)."""


class MemoryState(StateStore):
    """In-process state: the backtest and unit tests. Documents are copied in and out, so a caller
    that mutates what it loaded does not change the store behind its back (as with Redis)."""

    def __init__(self) -> None:
        self.states: dict[tuple[str, str], Doc] = {}
        self.pointers: dict[str, float] = {}
        self.blobs: dict[str, Doc] = {}

    async def load(self, name: str, entities: Iterable[str]) -> dict[str, Doc | None]:
        return {e: copy.deepcopy(self.states.get((name, e))) for e in entities}

    async def save(self, states: Mapping[str, Mapping[str, Doc]], pointers: Mapping[str, float]) -> None:
        for name, per_entity in states.items():
            for e, st in per_entity.items():
                self.states[(name, e)] = copy.deepcopy(dict(st))
        self.pointers.update(pointers)

    async def pointer(self, name: str) -> float | None:
        return self.pointers.get(name)

    async def load_blob(self, name: str) -> Doc | None:
        return copy.deepcopy(self.blobs.get(name))

    async def save_blob(self, name: str, doc: Doc) -> None:
        self.blobs[name] = copy.deepcopy(doc)


class RedisState(StateStore):
    """State in Redis under ``{prefix}:state:{name}:{entity}``, ``{prefix}:ptr:{name}`` and
    ``{prefix}:blob:{name}``; every value is a JSON document."""

    def __init__(self, redis: aredis.Redis, prefix: str) -> None:
        self.r = redis
        self.p = prefix

    @staticmethod
    def pointer_key(prefix: str, name: str) -> str:
        """The Redis key of a pointer (tools that watch a run read it directly)."""
        return f"{prefix}:ptr:{name}"

    def _k_state(self, name: str, entity: str) -> str:
        return f"{self.p}:state:{name}:{entity}"

    async def load(self, name: str, entities: Iterable[str]) -> dict[str, Doc | None]:
        ents = list(entities)
        out: dict[str, Doc | None] = {}
        for i in range(0, len(ents), 1000):  # a bounded reply per round trip
            chunk = ents[i : i + 1000]
            vals = await self.r.mget([self._k_state(name, e) for e in chunk])
            docs = await asyncio.to_thread(_docs, vals) if len(vals) >= ENCODE_OFF_LOOP else _docs(vals)
            out.update(zip(chunk, docs, strict=True))
        return out

    async def load_raw(self, name: str, entities: Iterable[str]) -> dict[str, Any]:
        return await self._mget({e: self._k_state(name, e) for e in entities})

    async def load_blobs_raw(self, names: Iterable[str]) -> dict[str, Any]:
        return await self._mget({n: f"{self.p}:blob:{n}" for n in names})

    async def _mget(self, keys: dict[str, str]) -> dict[str, Any]:
        """The stored bytes of each key, in bounded replies (a few MB each)."""
        names = list(keys)
        out: dict[str, Any] = {}
        for i in range(0, len(names), 200):
            chunk = names[i : i + 200]
            out.update(zip(chunk, await self.r.mget([keys[n] for n in chunk]), strict=True))
        return out

    async def save(self, states: Mapping[str, Mapping[str, Doc]], pointers: Mapping[str, float]) -> None:
        docs = [(self._k_state(name, e), st) for name, per_entity in states.items() for e, st in per_entity.items()]

        def encode() -> list[tuple[str, bytes]]:
            return [(k, orjson.dumps(st)) for k, st in docs]

        # a detector is tens of KB of JSON: encoding a thousand entities' state takes a good part
        # of a second, which the event loop must not spend
        blobs = await asyncio.to_thread(encode) if len(docs) >= ENCODE_OFF_LOOP else encode()
        pairs: dict[str, bytes | str] = dict(blobs)
        pairs.update({self.pointer_key(self.p, name): repr(float(value)) for name, value in pointers.items()})
        if pairs:
            # one MSET is atomic, as a MULTI of SETs was, and is one command to pack and one reply
            # to read instead of two thousand (a closed bucket at 10,000 entities writes ~2,000)
            await self.r.mset(pairs)

    async def pointer(self, name: str) -> float | None:
        v = await self.r.get(self.pointer_key(self.p, name))
        return float(v) if v is not None else None

    async def load_blob(self, name: str) -> Doc | None:
        return _doc(await self.r.get(f"{self.p}:blob:{name}"))

    async def save_blob(self, name: str, doc: Doc) -> None:
        await self.r.set(f"{self.p}:blob:{name}", orjson.dumps(doc))

    async def save_blobs(self, docs: Mapping[str, Doc]) -> None:
        items = list(docs.items())

        def encode() -> list[tuple[str, bytes]]:
            return [(f"{self.p}:blob:{n}", orjson.dumps(d)) for n, d in items]

        blobs = await asyncio.to_thread(encode) if len(items) >= ENCODE_OFF_LOOP else encode()
        for i in range(0, len(blobs), 1000):
            async with self.r.pipeline(transaction=False) as pipe:
                for k, b in blobs[i : i + 1000]:
                    pipe.set(k, b)
                await pipe.execute()

    async def load_blobs(self, names: Iterable[str]) -> dict[str, Doc | None]:
        keys = list(names)
        out: dict[str, Doc | None] = {}
        for i in range(0, len(keys), 1000):  # a bounded reply per round trip
            chunk = keys[i : i + 1000]
            vals = await self.r.mget([f"{self.p}:blob:{n}" for n in chunk])
            docs = await asyncio.to_thread(_docs, vals) if len(vals) >= ENCODE_OFF_LOOP else _docs(vals)
            out.update(zip(chunk, docs, strict=True))
        return out


def as_doc(raw: Any) -> Doc | None:
    """A document from :meth:`StateStore.load_raw`: decoded if it is still bytes."""
    return raw if raw is None or isinstance(raw, dict) else _doc(raw)


def _docs(raws: list[Any]) -> list[Doc | None]:
    return [_doc(v) for v in raws]


def _doc(raw: bytes | str | None) -> Doc | None:
    """A stored JSON object, or None when absent or not a JSON object (never anything else).

    >>> _doc(b'{"a": 1}'), _doc(None), _doc(b"[1]"), _doc(b"\\x80\\x04garbage")
    ({'a': 1}, None, None, None)
    """
    if raw is None:
        return None
    try:
        v = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return v if isinstance(v, dict) else None
