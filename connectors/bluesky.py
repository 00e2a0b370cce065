"""bluesky.v1: Bluesky posts from the Jetstream firehose (keyword filter here) -> mention records.

Jetstream (https://github.com/bluesky-social/jetstream) serves the network's commits as JSON over
a WebSocket: ``/subscribe?wantedCollections=app.bsky.feed.post&cursor=<time_us>``. Every post
created anywhere arrives; the ones whose text contains one of ``keywords`` (any case) become
mentions. The cursor is the ``time_us`` of the last event read; a reconnect asks from a few
seconds before it (Jetstream's advice for gapless replay: events are not strictly ordered across
its shards) and dedupe by the post's ``at://`` URI drops the overlap.

``options.backfill = true`` with ``query`` first reads the search API
(``app.bsky.feed.searchPosts?q=...&sort=latest``) for what was posted since the last post seen,
so a first start or a long outage (past Jetstream's retention) does not leave a gap. Instances of
the search API may require a token: ``credentials.access_token`` (optional).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from connectors.registry import register
from connectors.source import Batch, Entry, RetryLater, Source, SourceError, SourceState

__all__ = ["BlueskySource"]

POST = "app.bsky.feed.post"
MAX_GAPS = 20  # unfinished back-fill windows kept in the cursor; further behind, the oldest are dropped


class BlueskyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    search_url: str = "https://public.api.bsky.app/xrpc"
    backfill: bool = Field(default=False, description="Read the search API (query) before streaming.")
    max_pages: int = Field(default=10, ge=1)
    rewind_seconds: float = Field(default=5.0, ge=0, description="Reconnect this far before the cursor.")
    batch_size: int = Field(default=500, ge=1)
    batch_seconds: float = Field(default=0.25, gt=0, description="Longest an item waits to be produced.")


@register
class BlueskySource(Source):
    kind = "bluesky"
    name = "bluesky.v1"
    summary = "Bluesky: Jetstream firehose with cursor, keywords filtered here; search API back-fill (query)"
    Options = BlueskyOptions
    optional_credentials = ("access_token",)
    needs = ("keywords",)
    mode = "stream"
    default_base_url = "wss://jetstream2.us-east.bsky.network"
    options: BlueskyOptions

    def _post(self, raw: str | bytes) -> Entry | int | None:
        """A matching post, ``None`` (not a new post, or not about us), or the event's time_us."""
        try:
            ev = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self.malformed(raw if isinstance(raw, str) else raw.decode(errors="replace"), "not JSON")
        if not isinstance(ev, dict):
            return self.malformed(ev, "event is not a JSON object")
        c = ev.get("commit") or {}
        if ev.get("kind") != "commit" or c.get("collection") != POST or c.get("operation") != "create":
            return int(ev["time_us"]) if isinstance(ev.get("time_us"), int) else None
        rec = c.get("record") or {}
        text = rec.get("text") or ""
        if not any(k in text.lower() for k in self._words):
            return int(ev["time_us"]) if isinstance(ev.get("time_us"), int) else None
        did, rkey = ev.get("did"), c.get("rkey")
        if not did or not rkey or not rec.get("createdAt"):
            return self.malformed(ev, "Jetstream post without did, rkey or record.createdAt")
        langs = rec.get("langs") or []
        reply = (rec.get("reply") or {}).get("parent", {}).get("uri")
        out = {
            "kind": "mention",
            "text": text,
            "occurred_at": rec["createdAt"],
            "author": did,
            "channel": "bluesky",
            "url": f"https://bsky.app/profile/{did}/post/{rkey}",
            "lang": langs[0][:2] if langs else None,
        }
        if reply:
            out["reply_to"] = f"bluesky:{reply}"
        return self.record(ev, out, f"at://{did}/{POST}/{rkey}")

    async def open(self, state: SourceState) -> None:
        self._words = [k.lower() for k in self.spec.keywords]
        if self.options.backfill and not self.spec.query:
            raise SourceError('options.backfill searches: set query = "..." too')

    async def _backfill(self, state: SourceState) -> AsyncIterator[Batch]:
        """What the search API has since the last back-fill (newest first), then the windows
        earlier back-fills could not finish within ``max_pages`` (``search_gaps`` in the cursor,
        each ``[since, until]``): a burst larger than one back-fill arrives whole over the next
        ones, and nothing between is skipped."""
        http = self.http("the token in credentials.access_token")
        token = self.secret("access_token", required=False)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        cursor = dict(state.cursor)
        since = cursor.get("search_since")
        gaps = [[str(a), str(b)] for a, b in cursor.get("search_gaps", [])][:MAX_GAPS]
        newest, oldest, complete = since, None, False
        async for entries, created, last in self._pages(http, headers, since, None):
            newest = max([c for c in (newest, *created) if c], default=None)
            oldest = min([c for c in (oldest, *created) if c], default=None)
            complete = last
            yield Batch(entries, None)
        if not complete and since and oldest:
            gaps = [[since, _just_after(oldest)], *gaps][:MAX_GAPS]  # the rest of this window
        cursor["search_since"] = newest
        yield Batch([], _with_gaps(cursor, gaps))
        for gap in list(gaps):
            low, complete = None, False
            async for entries, created, last in self._pages(http, headers, gap[0], gap[1]):
                low = min([c for c in (low, *created) if c], default=None)
                complete = last
                yield Batch(entries, None)
            if complete:
                gaps = [g for g in gaps if g is not gap]
            elif low:
                gap[1] = _just_after(low)
            yield Batch([], _with_gaps(cursor, gaps))

    async def _pages(
        self, http: Any, headers: dict[str, str], since: str | None, until: str | None
    ) -> AsyncIterator[tuple[list[Entry], list[str], bool]]:
        """Up to ``max_pages`` pages of hits in ``[since, until)``, newest first: each page's
        entries, the creation times it held, and whether it was the window's last."""
        page_cursor = None
        for _ in range(self.options.max_pages):
            params: dict[str, Any] = {"q": self.spec.query, "sort": "latest", "limit": 100}
            if since:
                params["since"] = since
            if until:
                params["until"] = until
            if page_cursor:
                params["cursor"] = page_cursor
            data = await http.get_json(
                f"{self.options.search_url}/app.bsky.feed.searchPosts", params=params, headers=headers
            )
            posts = data.get("posts", []) if isinstance(data, dict) else []
            created = [str(c) for p in posts if isinstance(p, dict) and (c := (p.get("record") or {}).get("createdAt"))]
            page_cursor = data.get("cursor") if isinstance(data, dict) else None
            last = not page_cursor or not posts
            yield [self._search_hit(p) for p in posts], created, last
            if last:
                return

    def _search_hit(self, p: Any) -> Entry:
        rec = p.get("record") if isinstance(p, dict) else None
        if not isinstance(rec, dict) or not p.get("uri") or not rec.get("createdAt"):
            return self.malformed(p, "search hit without uri or record.createdAt")
        author = p.get("author") or {}
        rkey = str(p["uri"]).rsplit("/", 1)[-1]
        langs = rec.get("langs") or []
        out = {
            "kind": "mention",
            "text": rec.get("text") or "",
            "occurred_at": rec["createdAt"],
            "author": author.get("did"),
            "channel": "bluesky",
            "url": f"https://bsky.app/profile/{author.get('did')}/post/{rkey}",
            "lang": langs[0][:2] if langs else None,
        }
        return self.record(p, out, str(p["uri"]))

    async def fetch(self, state: SourceState) -> AsyncIterator[Batch]:
        if self.options.backfill:
            async for b in self._backfill(state):
                yield b
        cursor = dict(state.cursor)
        params = f"wantedCollections={POST}"
        if cursor.get("time_us"):
            params += f"&cursor={int(cursor['time_us'] - self.options.rewind_seconds * 1_000_000)}"
        url = f"{self.base_url}/subscribe?{params}"
        try:
            async with connect(url, max_size=2**22, open_timeout=30) as ws:
                async for b in self._batches(ws, cursor):
                    yield b
        except InvalidStatus as exc:
            code = exc.response.status_code
            if 400 <= code < 500 and code != 429:
                raise SourceError(f"Jetstream at {self.base_url} refused the connection: HTTP {code}") from None
            raise RetryLater(f"Jetstream answered HTTP {code}") from None
        except (WebSocketException, OSError) as exc:
            raise RetryLater(f"Jetstream connection failed: {type(exc).__name__}: {exc}") from None
        raise RetryLater("the Jetstream connection closed")

    async def _batches(self, ws: Any, cursor: dict[str, Any]) -> AsyncIterator[Batch]:
        entries: list[Entry] = []
        started = time.monotonic()
        moved = False
        while True:
            left = self.options.batch_seconds - (time.monotonic() - started)
            msg = None
            closed = False
            try:
                msg = await asyncio.wait_for(ws.recv(), timeout=max(0.001, left))
            except TimeoutError:
                pass
            except ConnectionClosed:
                closed = True
            if msg is not None:
                got = self._post(msg)
                if isinstance(got, Entry):
                    entries.append(got)
                    with contextlib.suppress(Exception):
                        cursor["time_us"] = max(int(cursor.get("time_us", 0)), int(orjson.loads(msg)["time_us"]))
                    moved = True
                elif isinstance(got, int):
                    cursor["time_us"] = max(int(cursor.get("time_us", 0)), got)
                    moved = True
            full = len(entries) >= self.options.batch_size
            due = time.monotonic() - started >= self.options.batch_seconds
            if (full or due or closed) and (entries or moved):
                yield Batch(entries, dict(cursor))
                entries, moved = [], False
            if full or due:
                started = time.monotonic()
            if closed:
                return


def _just_after(ts: str) -> str:
    """An ISO time one millisecond after ``ts``: the API's ``until`` excludes its own instant, and
    posts made in the same millisecond as the oldest one read must still be read (again: their ids
    dedupe)."""
    try:
        t = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return ts
    return (t + timedelta(milliseconds=1)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _with_gaps(cursor: dict[str, Any], gaps: list[list[str]]) -> dict[str, Any]:
    out = {k: v for k, v in cursor.items() if k != "search_gaps"}
    return {**out, "search_gaps": [list(g) for g in gaps]} if gaps else out
