"""rss.v1: RSS 2.0 / Atom / RDF feeds (news searches, blogs, forums) -> mention records.

Every feed in ``feeds`` is fetched with a conditional GET (``ETag``/``Last-Modified`` kept in the
cursor; ``304`` costs nothing) and parsed by feedparser in a worker thread, so a large feed never
blocks the event loop. An entry's native id is its ``id``/``guid``, else its link, so the same
article in two feeds (a search feed and a blog feed) is delivered once. ``keywords``, when set,
keep only entries whose title or summary contains one of them (any case).

Config::

    [[sources]]
    name = "news"
    kind = "rss"
    feeds = ["https://news.google.com/rss/search?q=northwind+airlines&hl=en-US&gl=US&ceid=US:en"]
    poll_seconds = 300
"""

from __future__ import annotations

import calendar
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import feedparser

from connectors.registry import register
from connectors.source import Batch, Entry, Source, SourceState, off_loop, strip_html

__all__ = ["RssSource"]


def _when(entry: Any) -> str | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        t = entry.get(key)
        if t:
            return datetime.fromtimestamp(calendar.timegm(t), UTC).isoformat()
    return None


@register
class RssSource(Source):
    kind = "rss"
    name = "rss.v1"
    summary = "RSS/Atom feeds: news searches, blogs, forums (conditional GET)"
    needs = ("feeds",)

    async def fetch(self, state: SourceState) -> AsyncIterator[Batch]:
        assert self.client is not None
        http = self.http()
        validators = dict(state.cursor.get("http", {}))
        words = [k.lower() for k in self.spec.keywords]
        for url in self.spec.feeds:
            resp = await http.request("GET", url, conditional=validators)
            if resp is None:
                continue
            # parsing and mapping a large feed is CPU work: off the event loop
            entries = await off_loop(self._entries, resp.content, url, words)
            for i in range(0, max(1, len(entries)), self.batch):
                last = i + self.batch >= len(entries)
                yield Batch(entries[i : i + self.batch], {**state.cursor, "http": dict(validators)} if last else None)

    batch = 500  # entries per batch: a 5000-entry feed is produced and acknowledged in steps

    def _entries(self, content: bytes, feed: str, words: list[str]) -> list[Entry]:
        parsed = feedparser.parse(content)
        return [x for x in (self._entry(e, feed, words) for e in parsed.entries) if x is not None]

    def _entry(self, e: Any, feed: str, words: list[str]) -> Entry | None:
        native = e.get("id") or e.get("link")
        title = strip_html(e.get("title", "") or "")
        summary = strip_html(e.get("summary", "") or "")
        text = f"{title}. {summary}" if title and summary and summary != title else (title or summary)
        if not native:
            return self.malformed(dict(e), f"feed entry without id, guid or link ({feed})")
        if words and not any(w in text.lower() for w in words):
            return None  # not about us
        when = _when(e)
        if when is None:
            return self.malformed(dict(e), f"feed entry {native} has no published or updated date ({feed})", native)
        rec = {
            "kind": "mention",
            "text": text,
            "occurred_at": when,
            "url": e.get("link"),
            "author": e.get("author"),
            "channel": "news",
        }
        return self.record(dict(e), rec, native, platform="rss")
