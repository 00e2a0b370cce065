"""The contract of a live source (``repmon connect``): pull, stream and push kinds.

A :class:`Source` is a :class:`~connectors.base.Connector` that talks to a platform with asyncio.
It is built from one ``[[sources]]`` entry (:class:`~infra.settings.SourceSpec`) and

- :meth:`Source.open` checks and prepares what it needs (credentials, tokens); :meth:`Source.close`
  releases it;
- :meth:`Source.fetch` is one *round*: a poll (every page up to what the cursor says is known) for
  pull kinds, one connection for stream kinds, the deliveries received for push kinds. It yields
  :class:`Batch` es: records plus the cursor that holds once they are delivered. The runtime
  (:mod:`connectors.runtime`) drops ids it has already delivered, produces the rest through the
  sink, and only after the broker acknowledged them stores the ids and the cursor in Redis, so a
  restart resumes where the last acknowledged batch ended: no gap, no duplicate;
- errors say what to do: :class:`SourceError` (bad credential, 4xx, bad options) stops this
  source with one line, :class:`RetryLater` (429, 5xx, network) makes the runtime wait.

Credentials come from the environment variables the spec names, never from the file.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from connectors.base import Connector, Item, Malformed
from connectors.mapping import to_item
from contract.records import make_event_id
from infra.settings import SourceSpec

__all__ = [
    "Batch",
    "Entry",
    "NoOptions",
    "RetryLater",
    "Source",
    "SourceError",
    "SourceState",
    "off_loop",
    "strip_html",
]

T = TypeVar("T")

USER_AGENT = "repmon/0.1 (+https://github.com/repmon/repmon; reputation monitoring)"


_CPU = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="source-cpu")


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run CPU work (feed parsing, mapping thousands of items) in the one CPU thread of the process.

    One thread, not one per call: several CPU-bound threads contending for the GIL would each
    delay the event loop thread's every wake-up (the convoy effect), which is what blocks it.
    """
    return await asyncio.get_running_loop().run_in_executor(_CPU, fn, *args)


class SourceError(Exception):
    """This source cannot go on (bad credential, refused request, bad options): stop it, say why.

    ``status``: the HTTP status the platform refused with, when it was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetryLater(Exception):
    """A transient failure (rate limit, 5xx, network): try the round again after ``delay`` s."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass(slots=True)
class Entry:
    """One item of a batch: ``key`` is what dedupe remembers (the event id where there is one)."""

    key: str
    item: Item
    occurred_at: datetime | None = None


@dataclass(slots=True)
class Batch:
    """Items plus the cursor that is true once they are delivered (``None``: cursor unchanged)."""

    entries: list[Entry]
    cursor: dict[str, Any] | None = None
    done: asyncio.Future[dict[str, int]] | None = None  # push kinds: resolved with the outcome


@dataclass
class SourceState:
    """What a source keeps between rounds and restarts (JSON, stored in Redis by the runtime)."""

    cursor: dict[str, Any] = field(default_factory=dict)


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


def strip_html(text: str) -> str:
    """Text of an HTML fragment (Mastodon statuses, feed summaries), entities decoded.

    >>> strip_html("<p>Northwind <b>lost</b> my bag &amp; more</p><p>again</p>")
    'Northwind lost my bag & more again'
    """
    import html

    blocks = re.sub(r"<br\s*/?>|</?(?:p|div|li|ul|ol|h[1-6]|blockquote)\b[^>]*>", " ", text, flags=re.I)
    no_tags = re.sub(r"<[^>]+>", "", blocks)
    return re.sub(r"\s+", " ", html.unescape(no_tags)).strip()


class Source(Connector):
    """Base of every live source. Subclasses set ``kind``, ``name``, ``Options``, ``credentials``,
    ``summary`` and implement :meth:`fetch`."""

    Options: ClassVar[type[BaseModel]] = NoOptions
    #: credential roles this kind needs (names of env vars are given per source in the config)
    credentials: ClassVar[tuple[str, ...]] = ()
    optional_credentials: ClassVar[tuple[str, ...]] = ()
    #: what the spec must give (any of), e.g. ("query", "accounts")
    needs: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""
    mode: ClassVar[str] = "pull"  # pull | stream | push
    default_base_url: ClassVar[str] = ""

    def __init__(
        self,
        spec: SourceSpec,
        *,
        client: httpx.AsyncClient | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.spec = spec
        self.client = client
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # tests record the waits here
        self._http: Any = None
        self.env = os.environ if env is None else env
        self.base_url = (spec.base_url or self.default_base_url).rstrip("/")
        if self.needs and not any(getattr(spec, n) for n in self.needs):
            raise SourceError(f"set {' or '.join(self.needs)} (the {self.kind} source has nothing to follow)")
        try:
            self.options = self.Options.model_validate(spec.options)
        except ValidationError as exc:
            bad = "; ".join(f"options.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise SourceError(bad) from None
        unknown = set(spec.credentials) - set(self.credentials) - set(self.optional_credentials)
        if unknown:
            raise SourceError(
                f"credentials {sorted(unknown)} are not used by kind {self.kind}; "
                f"it takes {list(self.credentials + self.optional_credentials) or 'none'}"
            )

    # -- credentials --------------------------------------------------------------------------
    def secret(self, role: str, *, required: bool = True) -> str | None:
        """The value of the environment variable the config names for ``role``."""
        var = self.spec.credentials.get(role)
        if var is None:
            if required:
                raise SourceError(
                    f'credentials.{role} is not set: add credentials = {{ {role} = "ENV_VAR_NAME" }} '
                    f"naming the environment variable that holds it"
                )
            return None
        value = self.env.get(var, "")
        if not value and required:
            raise SourceError(f"environment variable {var} (credentials.{role}) is empty or not set: export it")
        return value or None

    # -- helpers for subclasses ---------------------------------------------------------------
    def http(self, hint: str = "") -> Any:
        """This source's :class:`~connectors.http.Http` (kept across rounds: it remembers a spent quota)."""
        from connectors.http import Http

        if self._http is None or self._http.client is not self.client:
            assert self.client is not None, "the runtime gives every source its HTTP client"
            self._http = Http(self.client, self.spec.name, sleep=self.sleep, hint=hint)
        return self._http

    def record(self, raw: Any, rec: dict[str, Any], native_id: str, platform: str | None = None) -> Entry:
        """A raw-record dict (validated; :class:`Malformed` with the reason otherwise) as an entry."""
        src = platform or self.kind
        rec = {"source": src, "event_id": make_event_id(src, native_id), **rec}
        if self.spec.brand and "brand" not in rec:
            rec["brand"] = self.spec.brand
        item = to_item(rec)
        when = None
        if not isinstance(item, Malformed):
            when = _as_datetime(rec.get("occurred_at"))
            return Entry(rec["event_id"], item, when)
        payload = orjson.loads(item.payload) if item.payload.startswith(b"{") else {}
        return Entry(rec["event_id"], Malformed(orjson.dumps({**payload, "_raw": raw}, default=str), item.reason))

    def malformed(self, raw: Any, reason: str, native_id: str | None = None) -> Entry:
        """Input the platform sent that cannot be read: dead-lettered with ``reason``."""
        payload = orjson.dumps({"_error": reason, "_source": self.spec.name, "_raw": raw}, default=str)
        return Entry(make_event_id(self.kind, native_id, raw), Malformed(payload, reason))

    # -- the contract -------------------------------------------------------------------------
    async def open(self, state: SourceState) -> None:
        """Check credentials and options; raise :class:`SourceError` when the source cannot run."""

    async def close(self) -> None:
        """Release what :meth:`open` took (always called, also after an error)."""

    def stopped(self, reason: str) -> None:
        """The runtime stopped this source for ``reason`` (push kinds answer 503 from then on)."""

    @abstractmethod
    def fetch(self, state: SourceState) -> AsyncIterator[Batch]:
        """One round (see the module doc)."""

    def stream(self) -> Iterator[Item]:
        """One round without a runtime (a fresh cursor, no dedupe): the items, for ``Connector.run``."""

        async def one_round() -> list[Item]:
            own = self.client is None
            if own:
                self.client = httpx.AsyncClient(timeout=30, headers={"User-Agent": USER_AGENT})
            state = SourceState()
            try:
                await self.open(state)
                return [e.item async for b in self.fetch(state) for e in b.entries]
            finally:
                await self.close()
                if own and self.client is not None:
                    await self.client.aclose()
                    self.client = None

        yield from asyncio.run(one_round())


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def epoch(value: float) -> str:
    """ISO time of a Unix timestamp (seconds)."""
    return datetime.fromtimestamp(float(value), UTC).isoformat()
