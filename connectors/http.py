"""HTTP for pull sources: rate limits, backoff, conditional GET, one-line errors.

:class:`Http` wraps a shared :class:`httpx.AsyncClient` for one source:

- ``429`` and ``503`` wait what ``Retry-After`` says (seconds or an HTTP date), else until
  ``X-RateLimit-Reset``, else an exponential backoff with jitter; other ``5xx`` and network errors
  back off exponentially; after ``retries`` tries :class:`~connectors.source.RetryLater` tells the
  runtime to try the round later;
- a response that says the quota is spent (``X-RateLimit-Remaining: 0``, Reddit's
  ``X-Ratelimit-Remaining`` is a float) makes the *next* request wait for the reset;
- ``401``/``403`` and every other ``4xx`` raise :class:`~connectors.source.SourceError`: retrying
  cannot help, the source stops with a message naming the URL and what to check;
- ``conditional=True`` sends ``If-None-Match``/``If-Modified-Since`` from the validators kept in
  the source's cursor and returns ``None`` on ``304 Not Modified``.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from connectors.source import RetryLater, SourceError

__all__ = ["Http", "retry_after"]

Sleep = Callable[[float], Awaitable[None]]


def _header(headers: httpx.Headers, *names: str) -> str | None:
    for n in names:
        v = headers.get(n)
        if v is not None and v.strip():
            return v.strip()
    return None


def retry_after(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (delta or HTTP date) or ``X-RateLimit-Reset``.

    ``X-RateLimit-Reset`` is epoch seconds on most APIs and seconds-from-now on Reddit: a value
    below 10^9 is taken as a delta.

    >>> retry_after(httpx.Headers({"Retry-After": "7"}))
    7.0
    >>> retry_after(httpx.Headers({"X-RateLimit-Reset": "1000000030"}), now=1_000_000_000)
    30.0
    >>> retry_after(httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), now=1445412470)
    10.0
    """
    now = time.time() if now is None else now
    ra = _header(headers, "Retry-After")
    if ra is not None:
        try:
            return max(0.0, float(ra))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(ra)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                return max(0.0, when.timestamp() - now)
    reset = _header(headers, "X-RateLimit-Reset", "X-Ratelimit-Reset", "RateLimit-Reset")
    if reset is not None:
        try:
            r = float(reset)
        except ValueError:
            return None
        return max(0.0, r - now) if r > 1e9 else max(0.0, r)
    return None


def _quota_spent(headers: httpx.Headers) -> bool:
    rem = _header(headers, "X-RateLimit-Remaining", "X-Ratelimit-Remaining", "RateLimit-Remaining")
    if rem is None:
        return False
    try:
        return float(rem) < 1.0
    except ValueError:
        return False


class Http:
    """One source's view of the shared client (see the module doc)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        source: str,
        *,
        retries: int = 4,
        base_delay: float = 1.0,
        max_delay: float = 900.0,
        sleep: Sleep = asyncio.sleep,
        hint: str = "",
        max_wait: float | None = None,
    ) -> None:
        self.client = client
        # a caller that must answer soon (a push delivery) gives up instead of waiting longer
        # than this for the platform: RetryLater carries the wait the platform asked for
        self.max_wait = max_wait
        self.source = source
        self.retries = retries
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.hint = hint  # what to check on 401/403, e.g. "the token in $REDDIT_CLIENT_SECRET"
        self._not_before = 0.0  # monotonic time before which no request is sent (spent quota)
        self.waited: list[float] = []  # every wait, in seconds (observability and tests)

    async def _wait(self, seconds: float) -> None:
        seconds = min(self.max_delay, max(0.0, seconds))
        self.waited.append(seconds)
        await self.sleep(seconds)

    def _backoff(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * 2**attempt) * (0.5 + random.random() / 2)

    async def request(
        self,
        method: str,
        url: str,
        *,
        conditional: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> httpx.Response | None:
        """The response (2xx), ``None`` for ``304`` on a conditional GET; raises as the module says."""
        hdrs = dict(headers or {})
        key = str(httpx.URL(url, params=kw.get("params")))
        if conditional is not None:
            known = conditional.get(key) or {}
            if known.get("etag"):
                hdrs["If-None-Match"] = known["etag"]
            if known.get("modified"):
                hdrs["If-Modified-Since"] = known["modified"]
        last = ""
        for attempt in range(self.retries + 1):
            pause = self._not_before - time.monotonic()
            if pause > 0:
                await self._wait(pause)
            try:
                resp = await self.client.request(method, url, headers=hdrs, **kw)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                if attempt < self.retries:
                    await self._wait(self._backoff(attempt))
                continue
            if _quota_spent(resp.headers):
                wait = retry_after(resp.headers)
                if wait:
                    self._not_before = time.monotonic() + min(wait, self.max_delay)
            code = resp.status_code
            if code == 304:
                return None
            if 200 <= code < 300:
                if conditional is not None:
                    etag, modified = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
                    if etag or modified:
                        conditional[key] = {"etag": etag, "modified": modified}
                return resp
            where = f"{method} {resp.request.url.copy_with(query=None)}"
            if code in (429, 503) or code >= 500:
                last = f"HTTP {code} from {where}"
                wait = retry_after(resp.headers) if code in (429, 503) else None
                if self.max_wait is not None and wait is not None and wait > self.max_wait:
                    raise RetryLater(f"{last}: asked to wait {wait:.0f} s", wait)
                if attempt < self.retries:
                    await self._wait(wait if wait is not None else self._backoff(attempt))
                    continue
                raise RetryLater(last, wait)
            body = resp.text[:200].replace("\n", " ")
            if code in (401, 403):
                refused = f"HTTP {code} from {where}: the platform refused the credential"
                raise SourceError(f"{refused}; check {self.hint or 'it'} ({body})", code)
            raise SourceError(
                f"HTTP {code} from {where}: {body or resp.reason_phrase}; check the source's settings", code
            )
        raise RetryLater(f"{last} after {self.retries + 1} tries")

    async def get_json(self, url: str, **kw: Any) -> Any:
        """GET and parse JSON (``None`` on 304); a body that is not JSON is a transient error."""
        resp = await self.request("GET", url, **kw)
        if resp is None:
            return None
        try:
            return resp.json()
        except ValueError:
            raise RetryLater(f"GET {url}: the body is not JSON ({resp.text[:80]!r})") from None
