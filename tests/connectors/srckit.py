"""Helpers of the source tests: a local platform server, specs, one runtime round, topic reads."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiohttp import web

from connectors.base import Sink
from connectors.runtime import CursorStore, Runtime
from connectors.source import Source
from infra.kafka import read_to_end
from infra.settings import SourceSpec

FIXTURES = Path(__file__).parent / "fixtures"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def fixture(name: str) -> Any:
    text = (FIXTURES / name).read_text(encoding="utf-8")
    return json.loads(text) if name.endswith(".json") else text


class Platform:
    """An aiohttp server on 127.0.0.1 (ephemeral port) standing in for a platform's API.

    ``faults`` are answered first, in order, by path: ``(status, headers)`` per request.
    """

    def __init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.requests: list[web.Request] = []
        self.faults: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Add a route (also while serving); ``{name}`` matches one path segment."""
        self.routes.append((method, re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$"), handler))

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        for method, rx, handler in self.routes:
            m = rx.match(request.path)
            if m and method == request.method:
                queue = self.faults.get(request.path)
                if queue:
                    status, headers = queue.pop(0)
                    return web.Response(status=status, headers=headers, text=f"fault {status}")
                return await handler(request)
        return web.Response(status=404, text="no such route")

    def arg(self, request: web.Request, name: str) -> str:
        """The ``{name}`` segment of the route ``request`` matched."""
        for method, rx, _ in self.routes:
            m = rx.match(request.path)
            if m and method == request.method and name in m.groupdict():
                return m.group(name)
        raise KeyError(name)

    def fail(self, path: str, status: int, headers: dict[str, str] | None = None, times: int = 1) -> None:
        self.faults.setdefault(path, []).extend([(status, headers or {})] * times)

    async def __aenter__(self) -> Platform:
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def hits(self, path: str) -> list[web.Request]:
        return [r for r in self.requests if r.path == path]


def spec(kind: str, base_url: str | None = None, **kw: Any) -> SourceSpec:
    return SourceSpec(name=kw.pop("name", f"{kind}-{uuid.uuid4().hex[:6]}"), kind=kind, base_url=base_url, **kw)


class Waits:
    """Records every backoff or rate-limit wait a source asks for, without waiting."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)
        await asyncio.sleep(0)


async def one_round(
    sources: list[Source], sink: Sink, aredis: Any, prefix: str, *, rounds: int = 1
) -> tuple[Runtime, dict[str, str]]:
    """Run each source ``rounds`` rounds through a runtime with its cursor in the real Redis."""
    async with httpx.AsyncClient(timeout=10) as client:
        for s in sources:
            s.client = client
            if not isinstance(s.sleep, Waits):
                s.sleep = Waits()
        rt = Runtime(sources, sink, CursorStore(aredis, prefix), first_retry_seconds=0.01)
        states = await rt.run(rounds=rounds)
    return rt, states


def ids_of(payloads: list[bytes]) -> list[str]:
    out = []
    for p in payloads:
        try:
            d = orjson.loads(p)
        except orjson.JSONDecodeError:
            out.append("<unparsable>")
            continue
        out.append(d.get("event_id") or "<malformed>")
    return out


def read_topic(bootstrap: str, topic: str) -> list[bytes]:
    """Every record of ``topic`` up to its end offset at call time."""
    return read_to_end(bootstrap, topic)
