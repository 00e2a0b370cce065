"""mastodon.v1: Mastodon statuses (hashtag timelines, keyword search, live streaming) -> mentions.

On one instance (``base_url``, e.g. ``https://mastodon.social``):

- ``accounts``: hashtags (``#northwind`` or ``northwind``), read from ``/api/v1/timelines/tag/<tag>``;
- ``query``: keyword search of statuses, ``/api/v2/search?type=statuses`` (the search is public,
  but without a user token it finds no statuses: ``credentials.access_token`` is required);
- ``options.streaming = true``: after catching up, the round stays on the streaming API
  (``/api/v1/streaming/hashtag?tag=<tag>``, server-sent events, one stream per hashtag, merged)
  and yields statuses as they come.
  When the stream drops, the runtime reconnects and the round first catches up from the cursor,
  so nothing posted while disconnected is missed.

A hashtag timeline is caught up forward from the newest id delivered (the cursor, per tag), with
``min_id``: Mastodon then returns the statuses *immediately* newer than it, 40 at a time, so a long
outage is read page by page without a gap (``since_id`` would return only the newest 40). A search
is read newest first by ``offset`` down to its cursor (see :meth:`MastodonSource._search`).
Reblogs are skipped (the original is delivered). Status HTML becomes text.

Credentials: ``access_token`` (optional for public hashtag timelines).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field

from connectors.http import Http
from connectors.registry import register
from connectors.source import Batch, Entry, RetryLater, Source, SourceError, SourceState, strip_html

__all__ = ["MastodonSource"]


class MastodonOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    streaming: bool = Field(default=False, description="Stay on the streaming API after catching up.")
    limit: int = Field(default=40, ge=1, le=40)
    max_pages: int = Field(default=50, ge=1)
    backlog: bool = Field(default=True, description="First run: read the newest page (else start from now).")
    since_id: str | None = Field(default=None, description="First run: read everything after this status id.")


def _id(value: Any) -> int:
    return int(str(value)) if str(value).isdigit() else 0


@register
class MastodonSource(Source):
    kind = "mastodon"
    name = "mastodon.v1"
    summary = "Mastodon hashtag timelines, keyword search and streaming (optional access_token)"
    Options = MastodonOptions
    optional_credentials = ("access_token",)
    needs = ("accounts", "query")
    default_base_url = "https://mastodon.social"
    options: MastodonOptions

    def __init__(self, spec: Any, **kw: Any) -> None:
        super().__init__(spec, **kw)
        if self.options.streaming:
            self.mode = "stream"  # type: ignore[misc]  # reconnect at once, not after poll_seconds

    def _headers(self) -> dict[str, str]:
        token = self.secret("access_token", required=False)
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def open(self, state: SourceState) -> None:
        if self.spec.query:
            try:
                self.secret("access_token")
            except SourceError as exc:
                # without a user token Mastodon answers a statuses search with no statuses (HTTP
                # 200), so an unset token would look like a quiet query: refuse it at start
                raise SourceError(f"keyword search (query) needs a user token: {exc}") from None

    def _status(self, st: Any) -> Entry | None:
        if not isinstance(st, dict) or not st.get("id") or not st.get("created_at"):
            return self.malformed(st, "Mastodon status without id or created_at")
        if st.get("reblog"):
            return None
        acct = st.get("account") or {}
        host = httpx.URL(self.base_url).host
        rec = {
            "kind": "mention",
            "text": strip_html(st.get("content") or "") or (st.get("spoiler_text") or ""),
            "occurred_at": st["created_at"],
            "author": acct.get("acct"),
            "channel": "mastodon",
            "url": st.get("url") or st.get("uri"),
            "reach": int(acct.get("followers_count") or 0),
            "lang": st.get("language"),
        }
        if st.get("in_reply_to_id"):
            rec["reply_to"] = f"mastodon:{host}:{st['in_reply_to_id']}"
        return self.record(st, rec, f"{host}:{st['id']}")

    def _timelines(self) -> list[tuple[str, str, dict[str, Any], str | None]]:
        """(cursor key, path, params, streaming tag)."""
        out: list[tuple[str, str, dict[str, Any], str | None]] = []
        for acc in self.spec.accounts:
            tag = acc.lstrip("#")
            out.append((f"tag:{tag}", f"/api/v1/timelines/tag/{tag}", {}, tag))
        if self.spec.query:
            out.append(
                (f"search:{self.spec.query}", "/api/v2/search", {"q": self.spec.query, "type": "statuses"}, None)
            )
        return out

    async def _catch_up(
        self, http: Http, cursor: dict[str, Any], key: str, path: str, params: dict[str, Any]
    ) -> AsyncIterator[Batch]:
        since = cursor.get(key, self.options.since_id)
        first = since is None
        for _ in range(self.options.max_pages):
            q = {**params, "limit": self.options.limit}
            if since is not None:
                q["min_id"] = since
            data = await http.get_json(f"{self.base_url}{path}", params=q, headers=self._headers())
            statuses = data.get("statuses", []) if isinstance(data, dict) else (data or [])
            if not statuses:
                return
            ids = [_id(s.get("id")) for s in statuses if isinstance(s, dict)]
            newest = str(max(ids)) if ids else since
            cursor[key] = newest
            entries = [] if first and not self.options.backlog else [self._status(s) for s in statuses]
            yield Batch([e for e in entries if e is not None], dict(cursor))
            if first or newest == since or len(statuses) < self.options.limit:
                return  # first run: the newest page only; else a short page is the present
            since = newest

    async def _search(
        self, http: Http, cursor: dict[str, Any], key: str, path: str, params: dict[str, Any]
    ) -> AsyncIterator[Batch]:
        """Keyword search, read newest first by ``offset`` down to the cursor.

        Unlike the timelines, Mastodon's statuses search orders its hits by id, newest first, and
        takes ``min_id`` only as a lower bound (it becomes an ``after:`` date filter:
        app/services/statuses_search_service.rb), so the first page is the newest ``limit`` hits
        after the cursor, not the ones right after it. The pages below it are read by ``offset``
        until one reaches the cursor or runs short. The cursor moves with the last page only: a
        restart in between reads the hits again (dropped as duplicates) instead of leaving a gap.
        A burst beyond ``max_pages`` pages between two polls keeps only its newest pages."""
        since = cursor.get(key, self.options.since_id)
        first = since is None
        newest = _id(since) if since is not None else 0
        for page in range(self.options.max_pages):
            q = {**params, "limit": self.options.limit}
            if since is not None:
                q["min_id"] = since
            if page:
                q["offset"] = page * self.options.limit  # needs a user token, which search needs anyway
            data = await http.get_json(f"{self.base_url}{path}", params=q, headers=self._headers())
            statuses = data.get("statuses", []) if isinstance(data, dict) else []
            ids = [_id(s.get("id")) for s in statuses if isinstance(s, dict)]
            newest = max([newest, *ids])
            last = (
                first
                or len(statuses) < self.options.limit
                or page + 1 >= self.options.max_pages
                or (since is not None and bool(ids) and min(ids) <= _id(since))
            )
            if last and newest:
                cursor[key] = str(newest)
            entries = [] if first and not self.options.backlog else [self._status(s) for s in statuses]
            yield Batch([e for e in entries if e is not None], dict(cursor) if last else None)
            if last:
                return

    async def _stream(self, cursor: dict[str, Any], key: str, tag: str) -> AsyncIterator[Batch]:
        assert self.client is not None
        url = f"{self.base_url}/api/v1/streaming/hashtag"
        timeout = httpx.Timeout(30.0, read=120.0)  # servers send a heartbeat comment every ~10 s
        async with self.client.stream("GET", url, params={"tag": tag}, headers=self._headers(), timeout=timeout) as r:
            if r.status_code in (401, 403):
                raise SourceError(f"HTTP {r.status_code} from {url}: check the token in credentials.access_token")
            if r.status_code != 200:
                raise RetryLater(f"streaming API answered HTTP {r.status_code}", None)
            event, data = "", []
            async for line in r.aiter_lines():
                if line.startswith(":"):
                    continue
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line:
                    if event == "update" and data:
                        raw = "\n".join(data)
                        try:
                            st = orjson.loads(raw)
                        except orjson.JSONDecodeError:
                            yield Batch([self.malformed(raw, "streaming update is not JSON")])
                        else:
                            e = self._status(st)
                            if e is not None:
                                if isinstance(st, dict) and _id(st.get("id")) > _id(cursor.get(key, 0)):
                                    cursor[key] = str(st["id"])
                                yield Batch([e], dict(cursor))
                    event, data = "", []
        raise RetryLater("the streaming connection closed", None)

    async def fetch(self, state: SourceState) -> AsyncIterator[Batch]:
        assert self.client is not None
        http = self.http("the token in credentials.access_token")
        cursor = dict(state.cursor)
        for key, path, params, _ in self._timelines():
            read = self._search if key.startswith("search:") else self._catch_up
            async for b in read(http, cursor, key, path, params):
                yield b
        tags = [(k, t) for k, _, _, t in self._timelines() if t]
        if self.options.streaming and tags:
            async for b in self._streams(cursor, tags):
                yield b

    async def _streams(self, cursor: dict[str, Any], tags: list[tuple[str, str]]) -> AsyncIterator[Batch]:
        """Every hashtag's stream at once, merged in arrival order. Each stream moves its own copy
        of the cursor; a batch goes out with the cursor of what was yielded so far (its own tag's id
        from it), never with an id of a batch still queued. The first stream to end (they end by
        raising: dropped, refused) ends the round and the others are closed with it; the next round
        catches every tag up from the cursor."""
        if len(tags) == 1:
            async for b in self._stream(cursor, *tags[0]):
                yield b
            return
        queue: asyncio.Queue[tuple[str, Batch] | Exception] = asyncio.Queue(maxsize=256)  # the sink sets the pace

        async def pump(key: str, tag: str) -> None:
            try:
                async for b in self._stream(dict(cursor), key, tag):
                    await queue.put((key, b))
            except Exception as exc:  # RetryLater, SourceError, a network error: the round's outcome
                await queue.put(exc)

        tasks = [asyncio.create_task(pump(k, t), name=f"{self.spec.name}:stream:{t}") for k, t in tags]
        try:
            while True:
                item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                key, b = item
                if b.cursor is not None and key in b.cursor:
                    cursor[key] = b.cursor[key]
                yield Batch(b.entries, dict(cursor) if b.cursor is not None else None)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
