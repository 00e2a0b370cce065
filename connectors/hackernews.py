"""hackernews.v1: Hacker News stories and comments -> mention records.

Two APIs, both public (no credential):

- ``query`` set: Algolia's HN search, newest first
  (``/api/v1/search_by_date?query=...&tags=(story,comment)&numericFilters=created_at_i>=<cursor>``),
  every page up to ``nbPages`` (at most ``max_pages``); the cursor (newest ``created_at_i``
  delivered) moves only once the last page is delivered, so a restart in the middle re-reads those
  pages and dedupe drops what was already sent; a burst beyond ``max_pages`` leaves a window that
  the next polls read (``gaps`` in the cursor), so nothing is skipped;
- ``options.firehose = true``: the official Firebase API, every new item in id order
  (``/v0/maxitem.json``, then ``/v0/item/<id>.json``), kept when its title or text contains one of
  ``keywords``; the cursor is the last item id read.

Config::

    [[sources]]
    name = "hn"
    kind = "hackernews"
    query = "northwind"
    poll_seconds = 120
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from connectors.registry import register
from connectors.source import Batch, Entry, Source, SourceError, SourceState, epoch, strip_html

__all__ = ["HackerNewsSource"]

MAX_GAPS = 20  # unread windows kept in the cursor; a source further behind than that drops the oldest


class HnOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tags: str = Field(default="(story,comment)", description="Algolia tags filter.")
    hits_per_page: int = Field(default=100, ge=1, le=1000)
    max_pages: int = Field(default=20, ge=1)
    firehose: bool = Field(default=False, description="Walk every new item with the Firebase API.")
    firebase_url: str = "https://hacker-news.firebaseio.com/v0"
    backlog: int = Field(default=200, ge=0, description="Firehose: items before maxitem read on the first run.")
    max_items: int = Field(default=2000, ge=1, description="Firehose: most items read per round.")
    concurrency: int = Field(default=16, ge=1, le=64)


@register
class HackerNewsSource(Source):
    kind = "hackernews"
    name = "hackernews.v1"
    summary = "Hacker News: Algolia search (query) or the Firebase items API (options.firehose, keywords)"
    Options = HnOptions
    default_base_url = "https://hn.algolia.com"
    options: HnOptions

    async def open(self, state: SourceState) -> None:
        if self.options.firehose and not self.spec.keywords:
            raise SourceError("options.firehose reads every HN item: set keywords to keep the ones about you")
        if not self.options.firehose and not self.spec.query:
            raise SourceError('set query = "..." (Algolia search) or options.firehose = true with keywords')

    def fetch(self, state: SourceState) -> AsyncIterator[Batch]:
        return self._firehose(state) if self.options.firehose else self._search(state)

    def _hit(self, h: Any) -> Entry:
        if not isinstance(h, dict) or not h.get("objectID") or h.get("created_at_i") is None:
            return self.malformed(h, "Algolia hit without objectID or created_at_i")
        text = strip_html(h.get("comment_text") or h.get("story_text") or "")
        title = h.get("title") or ""
        rec = {
            "kind": "mention",
            "text": f"{title}. {text}" if title and text else (title or text or h.get("story_title") or ""),
            "occurred_at": epoch(h["created_at_i"]),
            "author": h.get("author"),
            "channel": "hackernews",
            "url": h.get("url") or f"https://news.ycombinator.com/item?id={h['objectID']}",
            "reach": int(h.get("points") or 0),
        }
        if h.get("parent_id"):
            rec["reply_to"] = f"hackernews:{h['parent_id']}"
        return self.record(h, rec, str(h["objectID"]))

    async def _search(self, state: SourceState) -> AsyncIterator[Batch]:
        """New hits since the cursor, then the windows an earlier capped pass left unread.

        A pass reads at most ``max_pages`` pages, newest first. When a burst holds more than that,
        the hits between the cursor and the oldest hit read are still unread: that window is kept
        in the cursor (``gaps``) and read on the next polls, oldest windows last, until closed.
        """
        since = int(state.cursor.get("created_at_i", 0))
        gaps = [[int(a), int(b)] for a, b in state.cursor.get("gaps", [])][:MAX_GAPS]
        cursor: dict[str, Any] = {"created_at_i": since, **({"gaps": gaps} if gaps else {})}
        newest, oldest = since, None
        async for entries, times, last, capped in self._pages(since, None):
            newest = max([newest, *times])
            oldest = min([*times, *([oldest] if oldest is not None else [])]) if times else oldest
            if last:
                cursor["created_at_i"] = newest
                if capped and since and oldest is not None:  # a first run reads back no further
                    gaps = [[since, oldest], *gaps][:MAX_GAPS]
                    cursor["gaps"] = gaps
            yield Batch(entries, dict(cursor) if last else None)
        for gap in list(gaps):
            low = None
            async for entries, times, last, capped in self._pages(gap[0], gap[1]):
                low = min([*times, *([low] if low is not None else [])]) if times else low
                if last:
                    gaps = [g for g in gaps if g is not gap]
                    if capped and low is not None and low > gap[0]:
                        gaps.append([gap[0], low])
                    cursor.pop("gaps", None)
                    cursor.update({"gaps": gaps} if gaps else {})
                yield Batch(entries, dict(cursor) if last else None)

    async def _pages(self, since: int, until: int | None) -> AsyncIterator[tuple[list[Entry], list[int], bool, bool]]:
        """Pages of hits with ``since <= created_at_i (<= until)``, newest first: entries, their
        times, whether it is the pass's last page, and whether the pass stopped at ``max_pages``."""
        http = self.http()
        page, pages = 0, 1
        while page < min(pages, self.options.max_pages):
            params: dict[str, Any] = {
                "query": self.spec.query,
                "tags": self.options.tags,
                "hitsPerPage": self.options.hits_per_page,
                "page": page,
            }
            filters = [f"created_at_i>={since}"] if since else []
            if until is not None:
                filters.append(f"created_at_i<={until}")
            if filters:
                params["numericFilters"] = ",".join(filters)  # a comma is AND in Algolia's filters
            data = await http.get_json(f"{self.base_url}/api/v1/search_by_date", params=params)
            hits = data.get("hits", []) if isinstance(data, dict) else []
            pages = int(data.get("nbPages", 1)) if isinstance(data, dict) else 1
            entries = [self._hit(h) for h in hits]
            times = [h["created_at_i"] for h in hits if isinstance(h, dict) and isinstance(h.get("created_at_i"), int)]
            page += 1
            last = page >= min(pages, self.options.max_pages)
            yield entries, times, last, last and pages > self.options.max_pages

    def _item(self, it: Any, words: list[str]) -> Entry | None:
        if not isinstance(it, dict) or "id" not in it or "time" not in it:
            return self.malformed(it, "Firebase item without id or time")
        if it.get("deleted") or it.get("dead") or it.get("type") not in ("story", "comment", "poll", "job"):
            return None
        text = strip_html(it.get("text") or "")
        title = it.get("title") or ""
        body = f"{title}. {text}" if title and text else (title or text)
        if not any(w in body.lower() for w in words):
            return None
        rec = {
            "kind": "mention",
            "text": body,
            "occurred_at": epoch(it["time"]),
            "author": it.get("by"),
            "channel": "hackernews",
            "url": it.get("url") or f"https://news.ycombinator.com/item?id={it['id']}",
            "reach": int(it.get("score") or 0),
        }
        if it.get("parent"):
            rec["reply_to"] = f"hackernews:{it['parent']}"
        return self.record(it, rec, str(it["id"]))

    async def _firehose(self, state: SourceState) -> AsyncIterator[Batch]:
        assert self.client is not None
        http = self.http()
        fb = self.options.firebase_url.rstrip("/")
        top = await http.get_json(f"{fb}/maxitem.json")
        if not isinstance(top, int):
            raise SourceError(f"{fb}/maxitem.json did not return an item id ({str(top)[:60]!r})")
        last = int(state.cursor.get("item", top - self.options.backlog))
        end = min(top, last + self.options.max_items)
        words = [k.lower() for k in self.spec.keywords]
        sem = asyncio.Semaphore(self.options.concurrency)

        async def one(i: int) -> Any:
            async with sem:
                return await http.get_json(f"{fb}/item/{i}.json")

        chunk = 100
        for start in range(last + 1, end + 1, chunk):
            ids = list(range(start, min(end, start + chunk - 1) + 1))
            items = await asyncio.gather(*(one(i) for i in ids))
            entries = [e for e in (self._item(it, words) for it in items if it is not None) if e is not None]
            yield Batch(entries, {"item": ids[-1]})
