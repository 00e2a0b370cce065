"""webhook.v1: signed HTTP pushes (review platforms, shops, survey tools) -> the raw topic.

``repmon webhook`` serves ``POST /v1/events`` with aiohttp. The body is one JSON object, a JSON
array of objects, or NDJSON: records in repmon's raw contract (``repmon schema``), or any shape
when a replay mapping (``--mapping``, the same TOML as ``repmon replay``; :mod:`connectors.mapping`)
turns them into records.

Every request must be signed, Stripe-style, so a leaked URL cannot inject events and a captured
request cannot be replayed:

``X-Repmon-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>``

- the secret comes from the environment (``REPMON_WEBHOOK_SECRET``), never from a file; several
  comma-separated secrets are accepted at once, so a secret can be rotated without downtime;
- ``t`` must be at most ``tolerance`` seconds old (default 300) and at most ``skew`` seconds in
  the future (default 30: clock skew, not a licence to pre-sign);
- the header is checked (ASCII, ``t=`` digits, ``v1=`` 64 hex digits) before the body is read;
  the comparison is constant-time (:func:`hmac.compare_digest`);
- a signature is accepted once: its digest is kept for the whole validity window (in Redis when
  a Redis URL is configured, else in process; :mod:`connectors.seen`).

Responses:

- ``202 {"accepted": n, "invalid": m}`` only once the broker acknowledged every record of the
  request (acks=all, every send checked);
- ``503`` with ``Retry-After`` when it did not (broker down, refused, no answer within
  ``ack_timeout``) or the replay cache cannot answer: nothing is claimed, the signature may be
  sent again. Records that did reach Kafka keep their event ids, so the retry is deduplicated;
- ``200 {"duplicate": true}`` for a signature already accepted (nothing produced again);
  ``409`` while the same signature is still being produced;
- ``401`` for a missing, malformed, wrong, stale or future signature (nothing is produced);
- ``413`` over ``max_body`` bytes (from Content-Length before reading, and while reading) or over
  ``max_items`` items; ``408`` when the body does not arrive within ``read_timeout`` seconds;
- ``400`` when the body is not JSON at all. Nothing signed is lost: objects that are not valid
  records, and bodies that are not JSON, are still produced to the raw topic as they came, so the
  worker dead-letters them with the reason.

Producing runs in a thread: the event loop never waits on Kafka.

>>> body = b'{"kind": "mention"}'
>>> header = sign(body, b"s3cret", timestamp=1_700_000_000)
>>> _ = verify(body, header, [b"s3cret"], now=1_700_000_100, tolerance=300)
>>> verify(body, header, [b"other"], now=1_700_000_100, tolerance=300)
Traceback (most recent call last):
...
connectors.webhook.SignatureError: signature does not match
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

from connectors.base import DeliveryError, Malformed, Sink
from connectors.mapping import Mapping, to_item
from connectors.seen import MemorySeen, SeenCache, SeenCacheError

__all__ = ["HEADER", "SignatureError", "WebhookApp", "parse_header", "sign", "verify"]

logger = logging.getLogger(__name__)

HEADER = "X-Repmon-Signature"
_T = re.compile(r"[0-9]{1,12}")
_V1 = re.compile(r"[0-9a-f]{64}")


class SignatureError(Exception):
    """The request is not signed by a holder of the secret (or not recently)."""


class _TooLarge(Exception):
    pass


def sign(body: bytes, secret: bytes, *, timestamp: int | None = None) -> str:
    """The ``X-Repmon-Signature`` value for ``body`` (what a sender computes)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def parse_header(header: str | None, name: str = HEADER) -> tuple[int, list[str]]:
    """``t`` and the ``v1`` digests of a signature header; :class:`SignatureError` for any other shape.

    >>> parse_header("t=12,v1=" + "ab" * 32)
    (12, ['abababababababababababababababababababababababababababababababab'])
    """
    if not header:
        raise SignatureError(f"missing {name} header")
    if not header.isascii() or len(header) > 1024:
        raise SignatureError(f"{name} header is not t=<unix seconds>,v1=<64 hex digits> (non-ASCII or too long)")
    ts: list[str] = []
    macs: list[str] = []
    for item in header.split(","):
        k, sep, v = item.strip().partition("=")
        if not sep:
            raise SignatureError(f"{name} header item {item.strip()[:20]!r} is not key=value")
        if k == "t":
            ts.append(v)
        elif k == "v1":
            macs.append(v)
    if len(ts) != 1 or not _T.fullmatch(ts[0]):
        raise SignatureError("signature header has no valid t=<unix seconds>")
    if not macs:
        raise SignatureError("signature header has no v1=<HMAC-SHA256 hex>")
    if not all(_V1.fullmatch(v) for v in macs):
        raise SignatureError("signature v1 must be 64 lowercase hex digits (HMAC-SHA256)")
    return int(ts[0]), macs


def check_time(t: int, *, now: float, tolerance: float, skew: float = 30.0) -> None:
    """Past-only window: at most ``tolerance`` s old, at most ``skew`` s ahead (clock skew)."""
    if now - t > tolerance:
        raise SignatureError(f"signature timestamp is {int(now - t)} s off: too old (tolerance {int(tolerance)} s)")
    if t - now > skew:
        raise SignatureError(
            f"signature timestamp is {int(t - now)} s off: in the future (allowed clock skew {int(skew)} s)"
        )


def verify(
    body: bytes,
    header: str | None,
    secrets: Sequence[bytes],
    *,
    now: float,
    tolerance: float,
    skew: float = 30.0,
    name: str = HEADER,
) -> str:
    """Raise :class:`SignatureError` unless ``header`` signs ``body`` with one of ``secrets``;
    return the matching digest (the replay-cache key). Stripe's ``Stripe-Signature`` is the same
    scheme (``name`` is the header, for the messages)."""
    t, macs = parse_header(header, name)
    check_time(t, now=now, tolerance=tolerance, skew=skew)
    signed = f"{t}.".encode() + body
    for secret in secrets:
        expected = hmac.new(secret, signed, hashlib.sha256).hexdigest()
        for got in macs:
            if hmac.compare_digest(expected.encode(), got.encode()):
                return expected
    raise SignatureError("signature does not match")


async def read_body(request: web.Request, max_body: int, timeout: float) -> bytes:
    """A request's body within ``timeout`` seconds (a sender trickling bytes holds no connection
    for long; ``TimeoutError``) and at most ``max_body`` bytes, counted while reading as
    Content-Length may lie (``_TooLarge``)."""
    buf = bytearray()
    async with asyncio.timeout(timeout):
        async for chunk in request.content.iter_any():
            buf += chunk
            if len(buf) > max_body:
                raise _TooLarge(len(buf))
    return bytes(buf)


def _objects(body: bytes, max_items: int) -> list[Any]:
    """A JSON object, a JSON array, or NDJSON -> list of parsed items.

    ``ValueError`` if none parse; ``_TooLarge`` over ``max_items`` (counted before mapping).
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        lines = [ln for ln in body.splitlines() if ln.strip()]
        if len(lines) < 2:
            raise ValueError("body is not JSON, a JSON array or NDJSON") from None
        if len(lines) > max_items:
            raise _TooLarge(len(lines)) from None
        out: list[Any] = []
        for ln in lines:
            try:
                out.append(orjson.loads(ln))
            except orjson.JSONDecodeError:
                out.append(Malformed(ln, "unparsable NDJSON line"))
        return out
    items = data if isinstance(data, list) else [data]
    if len(items) > max_items:
        raise _TooLarge(len(items))
    return items


class WebhookApp:
    """The aiohttp application. ``sink`` is where records go (a KafkaSink in production);
    ``seen`` the replay cache (default: in process)."""

    def __init__(
        self,
        sink: Sink,
        secrets: Sequence[bytes],
        *,
        mapping: Mapping | None = None,
        tolerance: float = 300.0,
        skew: float = 30.0,
        max_body: int = 1 << 20,
        max_items: int = 1000,
        read_timeout: float = 30.0,
        ack_timeout: float = 30.0,
        retry_after: int = 30,
        seen: SeenCache | None = None,
    ) -> None:
        if not secrets or not all(secrets):
            raise ValueError("a webhook needs at least one non-empty secret (REPMON_WEBHOOK_SECRET)")
        self.sink = sink
        self.secrets = list(secrets)
        self.mapping = mapping
        self.tolerance = tolerance
        self.skew = skew
        self.max_body = max_body
        self.max_items = max_items
        self.read_timeout = read_timeout
        self.ack_timeout = ack_timeout
        self.retry_after = retry_after
        self.seen: SeenCache = seen if seen is not None else MemorySeen()
        self.stats = {"accepted": 0, "invalid": 0, "rejected": 0, "duplicate": 0, "failed": 0}
        self._lock = asyncio.Lock()  # one request at a time talks to the (thread-unsafe) sink
        self.app = web.Application(client_max_size=max_body)
        self.app.add_routes([web.post("/v1/events", self.handle), web.get("/healthz", self.health)])

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, **self.stats})

    def _produce(self, items: list[dict[str, Any] | Malformed]) -> None:
        for item in items:
            self.sink.send_any(item)
        self.sink.flush(self.ack_timeout)  # raises DeliveryError unless the broker acked every record

    async def _read(self, request: web.Request) -> bytes:
        return await read_body(request, self.max_body, self.read_timeout)

    def _reject(self, request: web.Request, status: int, error: str, **extra: Any) -> web.Response:
        self.stats["rejected"] += 1
        logger.warning("webhook request from %s rejected (%d): %s", request.remote, status, error)
        return web.json_response({"error": error, **extra}, status=status)

    def _unavailable(self, error: str) -> web.Response:
        self.stats["failed"] += 1
        logger.error("webhook request not accepted: %s", error)
        return web.json_response(
            {"error": f"{error}; nothing was accepted, send the same request again later"},
            status=503,
            headers={"Retry-After": str(self.retry_after)},
        )

    async def handle(self, request: web.Request) -> web.Response:
        now = time.time()
        header = request.headers.get(HEADER)
        try:  # the header's shape and age first: an unsigned or stale request is not even read
            t, _ = parse_header(header)
            check_time(t, now=now, tolerance=self.tolerance, skew=self.skew)
        except SignatureError as exc:
            return self._reject(request, 401, str(exc))
        too_large = f"body over {self.max_body} bytes (max_body)"
        if request.content_length is not None and request.content_length > self.max_body:
            return self._reject(request, 413, too_large)
        try:
            body = await self._read(request)
        except _TooLarge:
            return self._reject(request, 413, too_large)
        except TimeoutError:
            return self._reject(request, 408, f"body not received within {self.read_timeout:g} s")
        try:
            digest = verify(body, header, self.secrets, now=now, tolerance=self.tolerance, skew=self.skew)
        except SignatureError as exc:
            return self._reject(request, 401, str(exc))
        try:
            items: list[dict[str, Any] | Malformed] = [to_item(x, self.mapping) for x in _objects(body, self.max_items)]
            status = 202
        except _TooLarge as exc:
            return self._reject(
                request, 413, f"{exc.args[0]} items in one request, over the limit of {self.max_items} (max_items)"
            )
        except ValueError as exc:
            items, status = [Malformed(body, str(exc))], 400  # signed: keep it, the worker dead-letters it
        try:
            state = await self.seen.reserve(digest, self.tolerance + self.skew + 1)
        except SeenCacheError as exc:
            return self._unavailable(str(exc))
        if state == "done":
            self.stats["duplicate"] += 1
            return web.json_response({"accepted": 0, "invalid": 0, "duplicate": True}, status=200)
        if state == "pending":
            return web.json_response(
                {"error": "the same signed request is being processed; retry later"},
                status=409,
                headers={"Retry-After": "5"},
            )
        try:
            async with self._lock:
                await asyncio.to_thread(self._produce, items)
        except DeliveryError as exc:
            await self._forget(digest)
            return self._unavailable(str(exc))
        except BaseException:
            await self._forget(digest)
            raise
        try:
            await self.seen.done(digest)
        except SeenCacheError as exc:  # produced and acknowledged; a replay would be deduplicated downstream
            logger.error("%s", exc)
        invalid = sum(isinstance(x, Malformed) for x in items)
        self.stats["accepted"] += len(items) - invalid
        self.stats["invalid"] += invalid
        out: dict[str, Any] = {"accepted": len(items) - invalid, "invalid": invalid}
        if status == 400:
            out["error"] = "body is not JSON, a JSON array or NDJSON (kept for the dead-letter topic)"
        return web.json_response(out, status=status)

    async def _forget(self, digest: str) -> None:
        try:
            await self.seen.release(digest)
        except SeenCacheError as exc:
            logger.error("%s", exc)
