"""webhook.v1: signed HTTP pushes (review platforms, shops, survey tools) -> the raw topic.

``repmon webhook`` serves ``POST /v1/events`` with aiohttp. The body is one JSON object, a JSON
array of objects, or NDJSON: records in repmon's raw contract (``repmon schema``), or any shape
when a replay mapping (``--mapping``, the same TOML as ``repmon replay``) turns them into records.

Every request must be signed, Stripe-style, so a leaked URL cannot inject events and a captured
request cannot be replayed later:

``X-Repmon-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>``

- the secret comes from the environment (``REPMON_WEBHOOK_SECRET``), never from a file; several
  comma-separated secrets are accepted at once, so a secret can be rotated without downtime;
- ``t`` must be within ``tolerance`` seconds of now (default 300);
- the comparison is constant-time (:func:`hmac.compare_digest`).

Responses: ``202`` with ``{"accepted": n, "invalid": m}`` once the broker has acknowledged every
message (acks=all); ``401`` for a missing, wrong or stale signature (nothing is produced);
``413`` over ``max_body`` bytes; ``400`` when the body is not JSON at all. Nothing signed is lost:
objects that are not valid records, and bodies that are not JSON, are still produced to the raw
topic as they came, so the worker dead-letters them with the reason. Producing runs in a thread:
the event loop never waits on Kafka.

>>> body = b'{"kind": "mention"}'
>>> header = sign(body, b"s3cret", timestamp=1_700_000_000)
>>> verify(body, header, [b"s3cret"], now=1_700_000_100, tolerance=300)
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
import time
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

from connectors.base import Malformed, Sink
from connectors.mapping import Mapping, to_item

__all__ = ["HEADER", "SignatureError", "WebhookApp", "sign", "verify"]

logger = logging.getLogger(__name__)

HEADER = "X-Repmon-Signature"


class SignatureError(Exception):
    """The request is not signed by a holder of the secret (or not recently)."""


def sign(body: bytes, secret: bytes, *, timestamp: int | None = None) -> str:
    """The ``X-Repmon-Signature`` value for ``body`` (what a sender computes)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(body: bytes, header: str | None, secrets: Sequence[bytes], *, now: float, tolerance: float) -> None:
    """Raise :class:`SignatureError` unless ``header`` signs ``body`` with one of ``secrets``."""
    if not header:
        raise SignatureError(f"missing {HEADER} header")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        k, _, v = item.strip().partition("=")
        parts.setdefault(k, []).append(v)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        raise SignatureError("signature header has no valid t=<unix seconds>") from None
    if abs(now - t) > tolerance:
        raise SignatureError(f"signature timestamp is {int(now - t)} s off (tolerance {int(tolerance)} s)")
    signed = f"{t}.".encode() + body
    for secret in secrets:
        expected = hmac.new(secret, signed, hashlib.sha256).hexdigest()
        if any(hmac.compare_digest(expected, got) for got in parts.get("v1", [])):
            return
    raise SignatureError("signature does not match")


def _objects(body: bytes) -> list[Any]:
    """A JSON object, a JSON array, or NDJSON -> list of parsed items (ValueError if none parse)."""
    try:
        data = orjson.loads(body)
        return data if isinstance(data, list) else [data]
    except orjson.JSONDecodeError:
        lines = [ln for ln in body.splitlines() if ln.strip()]
        if len(lines) < 2:
            raise ValueError("body is not JSON, a JSON array or NDJSON") from None
        out: list[Any] = []
        for ln in lines:
            try:
                out.append(orjson.loads(ln))
            except orjson.JSONDecodeError:
                out.append(Malformed(ln, "unparsable NDJSON line"))
        return out


class WebhookApp:
    """The aiohttp application. ``sink`` is where records go (a KafkaSink in production)."""

    def __init__(
        self,
        sink: Sink,
        secrets: Sequence[bytes],
        *,
        mapping: Mapping | None = None,
        tolerance: float = 300.0,
        max_body: int = 1 << 20,
    ) -> None:
        if not secrets or not all(secrets):
            raise ValueError("a webhook needs at least one non-empty secret (REPMON_WEBHOOK_SECRET)")
        self.sink = sink
        self.secrets = list(secrets)
        self.mapping = mapping
        self.tolerance = tolerance
        self.max_body = max_body
        self.stats = {"accepted": 0, "invalid": 0, "rejected": 0}
        self._lock = asyncio.Lock()  # one request at a time talks to the (thread-unsafe) sink
        self.app = web.Application(client_max_size=max_body)
        self.app.add_routes([web.post("/v1/events", self.handle), web.get("/healthz", self.health)])

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, **self.stats})

    def _produce(self, items: list[dict[str, Any] | Malformed]) -> None:
        for item in items:
            self.sink.send_any(item)
        self.sink.flush()  # acks=all: 202 means the broker has every message

    async def handle(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > self.max_body:
            return web.json_response({"error": f"body over {self.max_body} bytes"}, status=413)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": f"body over {self.max_body} bytes"}, status=413)
        try:
            verify(body, request.headers.get(HEADER), self.secrets, now=time.time(), tolerance=self.tolerance)
        except SignatureError as exc:
            self.stats["rejected"] += 1
            logger.warning("webhook request from %s rejected: %s", request.remote, exc)
            return web.json_response({"error": str(exc)}, status=401)
        try:
            items: list[dict[str, Any] | Malformed] = [to_item(x, self.mapping) for x in _objects(body)]
            status = 202
        except ValueError as exc:
            items, status = [Malformed(body, str(exc))], 400  # signed: keep it, the worker dead-letters it
        invalid = sum(isinstance(x, Malformed) for x in items)
        async with self._lock:
            await asyncio.to_thread(self._produce, items)
        self.stats["accepted"] += len(items) - invalid
        self.stats["invalid"] += invalid
        out: dict[str, Any] = {"accepted": len(items) - invalid, "invalid": invalid}
        if status == 400:
            out["error"] = "body is not JSON, a JSON array or NDJSON (kept for the dead-letter topic)"
        return web.json_response(out, status=status)
