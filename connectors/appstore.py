"""appstore.v1: Apple App Store customer reviews -> review records (rating 1-5).

Apple's public customer-review feed, newest first, 50 reviews a page, pages 1-10:
``/{country}/rss/customerreviews/page={n}/id={app id}/sortby=mostrecent/json``. An entry holds
``id``, ``updated``, ``im:rating``, ``title``, ``content``, ``author.name``, ``im:version`` (each
as ``{"label": ...}``). Pages are read until one reaches the newest review already delivered (the
cursor, per app and country). ``accounts`` are the numeric app ids; ``options.countries`` the
storefronts (reviews are per country). No credential.

Config::

    [[sources]]
    name = "ios-app"
    kind = "appstore"
    accounts = ["284882215"]
    options = { countries = ["us", "gb"] }
    poll_seconds = 3600
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from connectors.registry import register
from connectors.source import Batch, Entry, Source, SourceState

__all__ = ["AppStoreSource"]


class AppStoreOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    countries: list[str] = Field(default_factory=lambda: ["us"], min_length=1)
    max_pages: int = Field(default=10, ge=1, le=10)
    product: str | None = Field(default=None, description="Product hint put on the reviews (the app's name).")


def _utc(value: str) -> str:
    """Apple dates carry a Pacific offset that changes with DST: compare them in UTC."""
    try:
        return datetime.fromisoformat(value).astimezone(UTC).isoformat()
    except ValueError:
        return ""


def _label(entry: dict[str, Any], key: str) -> Any:
    v = entry.get(key)
    return v.get("label") if isinstance(v, dict) else None


@register
class AppStoreSource(Source):
    kind = "appstore"
    name = "appstore.v1"
    summary = "Apple App Store customer reviews (public feed per app id and country) -> reviews"
    Options = AppStoreOptions
    needs = ("accounts",)
    default_base_url = "https://itunes.apple.com"
    options: AppStoreOptions

    def _review(self, e: Any, app: str, country: str) -> Entry:
        if not isinstance(e, dict) or not _label(e, "id") or not _label(e, "updated"):
            return self.malformed(e, "App Store entry without id or updated")
        if _label(e, "im:rating") is None:
            return self.malformed(e, f"App Store entry {_label(e, 'id')} has no im:rating", str(_label(e, "id")))
        title, body = _label(e, "title") or "", _label(e, "content") or ""
        author = e.get("author", {}).get("name", {}) if isinstance(e.get("author"), dict) else {}
        rec = {
            "kind": "review",
            "text": f"{title}. {body}" if title and body else (title or body),
            "rating": _label(e, "im:rating"),
            "occurred_at": _label(e, "updated"),
            "platform": "appstore",
            "location": country,
            "author": author.get("label") if isinstance(author, dict) else None,
            "product": self.options.product,
        }
        rec = {k: v for k, v in rec.items() if v is not None}
        with contextlib.suppress(TypeError, ValueError):  # else left as sent: validation names it
            rec["rating"] = int(rec["rating"])
        return self.record(e, rec, f"{app}:{_label(e, 'id')}")

    async def fetch(self, state: SourceState) -> AsyncIterator[Batch]:
        http = self.http()
        cursor = dict(state.cursor)
        for app in self.spec.accounts:
            for country in self.options.countries:
                key = f"{country}:{app}"
                since = cursor.get(key, "")
                newest = since
                for page in range(1, self.options.max_pages + 1):
                    url = f"{self.base_url}/{country}/rss/customerreviews/page={page}/id={app}/sortby=mostrecent/json"
                    data = await http.get_json(url)
                    entries = (data or {}).get("feed", {}).get("entry", []) if isinstance(data, dict) else []
                    if isinstance(entries, dict):  # a feed with one review has an object, not a list
                        entries = [entries]
                    times = [t for e in entries if isinstance(e, dict) and (t := _utc(str(_label(e, "updated") or "")))]
                    newest = max([newest, *times])
                    reached = not entries or (bool(times) and min(times) <= since)
                    last = reached or page == self.options.max_pages
                    if last:
                        cursor[key] = newest
                    yield Batch([self._review(e, app, country) for e in entries], dict(cursor) if last else None)
                    if last:
                        break
