"""Push kinds: platforms that POST to us (shops, payments, surveys, review sites).

``repmon connect`` serves every push source of the config on one aiohttp server
(``connect.listen``) at ``POST /hooks/<source name>``. A delivery is

1. checked before its body is read (:meth:`PushSource.precheck`: the signature header is there
   and well formed, a signed timestamp is fresh; ``401`` otherwise), ``413`` when Content-Length
   says it is over ``max_body``, ``408`` when the body does not arrive within ``read_timeout``;
   then verified over the raw bytes with the platform's own signature scheme, constant time
   (:func:`hmac.compare_digest`); a bad, stale or missing signature is ``401`` and nothing is read
   further;
2. parsed into rows (:meth:`PushSource.rows`) and mapped by the kind's mapping (JMESPath columns,
   :mod:`connectors.mapping`), overridable per source with ``mapping = "file.toml"``, so a new
   payload shape needs config, not code; rows the mapping's ``when`` rejects (event types it
   does not map) are skipped, rows that cannot become records are dead-lettered with the reason;
3. handed to the runtime as a batch: ids already delivered (a delivery sent twice: the same event
   ids) are dropped, so a delivery is accepted once, and the answer waits for the broker:
   ``202 {"accepted", "invalid", "duplicates"}``; ``200 {"duplicate": true}`` when every item had
   been accepted before; ``503`` + ``Retry-After`` when Kafka did not acknowledge (the platform
   retries; nothing was claimed).

The generic kind ``webhook`` is repmon's own scheme (:mod:`connectors.webhook`).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import math
import time
from abc import abstractmethod
from collections.abc import AsyncIterator, Callable
from collections.abc import Mapping as MappingT
from pathlib import Path
from typing import Any, ClassVar

import httpx
import orjson
from aiohttp import web

from connectors.base import DeliveryError, Malformed
from connectors.mapping import Mapping, load_mapping, skipped, to_item
from connectors.source import Batch, Entry, RetryLater, Source, SourceError, SourceState
from connectors.webhook import (
    HEADER,
    SignatureError,
    _objects,
    _TooLarge,
    check_time,
    parse_header,
    read_body,
    verify,
)
from contract.records import make_event_id

__all__ = ["GenericPush", "PushServer", "PushSource", "hmac_b64"]


def hmac_b64(secret: bytes, body: bytes, digest: str = "sha256") -> str:
    """base64 of HMAC(secret, body): Shopify's, Typeform's (after ``sha256=``), SurveyMonkey's (sha1)."""
    return base64.b64encode(hmac.new(secret, body, digest).digest()).decode()


def same(expected: str, got: str | None) -> bool:
    """Constant-time comparison of two signature strings."""
    return got is not None and hmac.compare_digest(expected.encode(), got.strip().encode())


class PushSource(Source):
    """A platform that pushes. Subclasses set ``default_mapping`` and implement :meth:`verify`."""

    mode = "push"
    credentials: ClassVar[tuple[str, ...]] = ("secret",)
    default_mapping: ClassVar[dict[str, Any]] = {}
    tolerance: ClassVar[float] = 300.0
    max_items: ClassVar[int] = 1000
    #: the header that carries the platform's signature (checked before the body is read)
    signature_header: ClassVar[str | None] = None

    def __init__(self, spec: Any, **kw: Any) -> None:
        super().__init__(spec, **kw)
        if spec.mapping:
            try:
                self.mapping: Mapping | None = load_mapping(Path(spec.mapping))
            except ValueError as exc:
                raise SourceError(str(exc)) from None
        else:
            self.mapping = Mapping(**self.default_mapping) if self.default_mapping else None
        self._queue: asyncio.Queue[Batch] = asyncio.Queue()
        self.secrets: list[bytes] = []
        self._ready = asyncio.Event()  # set once open() read the secrets (or the source stopped)
        self._stopped: str | None = None
        self.refused: str | None = None  # set when the platform's API refused our credential
        self.stats = {"accepted": 0, "invalid": 0, "duplicates": 0, "rejected": 0, "skipped": 0}

    async def open(self, state: SourceState) -> None:
        raw = self.secret(self.credentials[0]) or ""
        # comma-separated secrets are all accepted: rotate without downtime
        self.secrets = [s.strip().encode() for s in raw.split(",") if s.strip()]
        self._ready.set()

    def stopped(self, reason: str) -> None:
        self._stopped = reason
        self._ready.set()

    def precheck(self, headers: MappingT[str, str], now: float) -> None:
        """What can be refused before the body is read (an unsigned delivery costs no read):
        :class:`~connectors.webhook.SignatureError` when the signature header is missing or
        cannot be a signature."""
        if self.signature_header is None:
            return
        got = headers.get(self.signature_header)
        if not got:
            raise SignatureError(f"missing {self.signature_header} header")
        if not got.isascii() or len(got) > 1024:
            raise SignatureError(f"{self.signature_header} header is not a signature (non-ASCII or too long)")

    @abstractmethod
    def verify(self, headers: MappingT[str, str], body: bytes, now: float) -> None:
        """Raise :class:`~connectors.webhook.SignatureError` unless the platform signed ``body``."""

    def rows(self, headers: MappingT[str, str], body: bytes) -> list[Any]:
        """The JSON objects one delivery holds (``ValueError`` when it is not JSON)."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ValueError("body is not JSON") from None
        return data if isinstance(data, list) else [data]

    async def expand(self, rows: list[Any]) -> list[Any]:
        """Complete rows that only name what happened (SurveyMonkey's events carry ids, not
        answers) from the platform's API; the rows as they are by default. Raises
        :class:`~connectors.source.RetryLater` (the delivery gets 503 and is sent again) or
        :class:`~connectors.source.SourceError` (the source stops: a refused credential)."""
        return rows

    async def entries(self, headers: MappingT[str, str], body: bytes) -> tuple[list[Entry], int]:
        """Mapped entries of a verified delivery, and how many rows the mapping skipped."""
        try:
            rows = self.rows(headers, body)
        except ValueError as exc:
            return [Entry(make_event_id(self.kind, None, body.decode(errors="replace")), Malformed(body, str(exc)))], 0
        rows = await self.expand(rows[: self.max_items])
        out: list[Entry] = []
        skip = 0
        for row in rows:
            if skipped(self.mapping, row):
                skip += 1
                continue
            if isinstance(row, dict) and "_error" in row:  # expand() could not complete it
                bad = Malformed(orjson.dumps(row, default=str), str(row["_error"]))
                out.append(Entry(make_event_id(self.kind, None, row), bad))
                continue
            item = to_item(row, self.mapping)
            if isinstance(item, Malformed):
                out.append(Entry(make_event_id(self.kind, None, row), item))
            else:
                if self.spec.brand and "brand" not in item:
                    item["brand"] = self.spec.brand
                out.append(Entry(str(item["event_id"]), item, None))
        return out, skip

    async def unavailable(self) -> str | None:
        """Why this source cannot take a delivery now (not started yet, stopped), or None."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout=10)
        except TimeoutError:
            return f"source {self.spec.name} is not running yet"
        if self._stopped is not None:
            return f"source {self.spec.name} is stopped: {self._stopped}"
        return None

    async def receive(self, headers: MappingT[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """One delivery -> (HTTP status, JSON answer)."""
        down = await self.unavailable()
        if down is not None:
            return 503, {"error": down}
        try:
            self.verify(headers, body, time.time())
        except SignatureError as exc:
            self.stats["rejected"] += 1
            return 401, {"error": str(exc)}
        try:
            entries, skip = await self.entries(headers, body)
        except SourceError as exc:
            self.refused = str(exc)  # fetch() raises it: the runtime stops the source with this line
            await self._queue.put(Batch([], None))
            return 503, {"error": f"source {self.spec.name} is stopped: {exc}"}
        except (RetryLater, httpx.HTTPError) as exc:
            out: dict[str, Any] = {"error": f"{exc}; nothing was accepted, send it again later"}
            delay = exc.delay if isinstance(exc, RetryLater) else None
            if delay:
                out["retry_after"] = math.ceil(delay)
            return 503, out
        self.stats["skipped"] += skip
        if not entries:
            return 200, {"accepted": 0, "invalid": 0, "duplicates": 0, "skipped": skip}
        done: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()
        await self._queue.put(Batch(entries, None, done))
        try:
            outcome = await done
        except DeliveryError as exc:
            return 503, {"error": f"{exc}; nothing was accepted, send it again later"}
        for k in ("accepted", "invalid", "duplicates"):
            self.stats[k] += outcome[k]
        if outcome["duplicates"] == len(entries):
            return 200, {**outcome, "duplicate": True}
        return 202, {**outcome, "skipped": skip}

    async def fetch(self, state: SourceState) -> AsyncIterator[Batch]:
        while True:
            batch = await self._queue.get()
            if self.refused is not None:
                raise SourceError(self.refused)
            yield batch


class PushServer:
    """``POST /hooks/<name>`` for every push source; ``GET /healthz``."""

    def __init__(
        self,
        sources: list[PushSource],
        *,
        max_body: int = 1 << 20,
        retry_after: int = 30,
        read_timeout: float = 30.0,
        health: Callable[[], tuple[bool, dict[str, Any]]] | None = None,
    ) -> None:
        self.sources = {s.spec.name: s for s in sources}
        self._health = health  # the runtime's (Kafka, Redis, every source's state), if any
        self.retry_after = retry_after
        self.max_body = max_body
        self.read_timeout = read_timeout
        self.app = web.Application(client_max_size=max_body)
        self.app.add_routes([web.post("/hooks/{name}", self.handle), web.get("/healthz", self.health)])
        self._runner: web.AppRunner | None = None

    async def health(self, request: web.Request) -> web.Response:
        """200 while the runtime says ok (Kafka and Redis answer), else 503: a load balancer then
        sends the platform's retries to another instance. ``push``: each push source's counts."""
        ok, doc = self._health() if self._health is not None else (True, {"status": "ok"})
        doc = {**doc, "push": {name: s.stats for name, s in self.sources.items()}}
        return web.json_response(doc, status=200 if ok else 503)

    async def handle(self, request: web.Request) -> web.Response:
        src = self.sources.get(request.match_info["name"])
        if src is None:
            return web.json_response({"error": f"no push source named {request.match_info['name']!r}"}, status=404)
        down = await src.unavailable()
        if down is not None:
            return web.json_response({"error": down}, status=503, headers={"Retry-After": str(self.retry_after)})
        try:
            src.precheck(request.headers, time.time())
        except SignatureError as exc:
            src.stats["rejected"] += 1
            return web.json_response({"error": str(exc)}, status=401)
        too_large = {"error": f"body over {self.max_body} bytes"}
        if request.content_length is not None and request.content_length > self.max_body:
            src.stats["rejected"] += 1
            return web.json_response(too_large, status=413)
        try:
            body = await read_body(request, self.max_body, self.read_timeout)
        except _TooLarge:
            src.stats["rejected"] += 1
            return web.json_response(too_large, status=413)
        except TimeoutError:
            src.stats["rejected"] += 1
            return web.json_response({"error": f"body not received within {self.read_timeout:g} s"}, status=408)
        status, out = await src.receive(request.headers, body)
        headers = {"Retry-After": str(out.pop("retry_after", self.retry_after))} if status == 503 else None
        return web.json_response(out, status=status, headers=headers)

    async def start(self, host: str, port: int) -> int:
        """Serve; return the port (``0`` picks a free one)."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


from connectors.registry import register  # noqa: E402 - the base classes above must exist first


@register
class GenericPush(PushSource):
    """repmon's own scheme: ``X-Repmon-Signature: t=<unix>,v1=<hex HMAC-SHA256("<t>." + body)>``;
    the body is records in the raw contract (or any shape with ``mapping``)."""

    kind = "webhook"
    name = "webhook.v1"
    summary = "generic signed push (X-Repmon-Signature t=,v1=; raw-contract records or a mapping)"

    def precheck(self, headers: MappingT[str, str], now: float) -> None:
        t, _ = parse_header(headers.get(HEADER))
        check_time(t, now=now, tolerance=self.tolerance)

    def verify(self, headers: MappingT[str, str], body: bytes, now: float) -> None:
        verify(body, headers.get(HEADER), self.secrets, now=now, tolerance=self.tolerance)

    def rows(self, headers: MappingT[str, str], body: bytes) -> list[Any]:
        try:
            return _objects(body, self.max_items)
        except _TooLarge as exc:
            raise ValueError(f"{exc.args[0]} items in one delivery, over {self.max_items}") from None
