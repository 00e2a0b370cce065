"""reddit.v1: Reddit posts and comments through the OAuth JSON API -> mention records.

An OAuth "script" or "web" app (https://www.reddit.com/prefs/apps): the runtime gets an app-only
bearer token (``grant_type=client_credentials``, HTTP Basic with the client id and secret) and
renews it before it expires. What it follows:

- ``query``: site-wide search, newest first (``/search?q=...&sort=new``);
- ``accounts``: subreddits (``r/name`` or ``name``), their newest posts (``/r/<name>/new``), and
  with ``options.comments = true`` their newest comments (``/r/<name>/comments``).

Each listing is read page by page (``after=``) until a page reaches what the cursor says was
delivered (``created_utc`` per listing), at most ``options.max_pages``; a burst beyond that is
continued on the next polls from where paging stopped, so nothing is skipped. Reddit's rate headers
(``X-Ratelimit-Remaining``/``-Reset``) are honoured by :mod:`connectors.http`.

Credentials: ``client_id``, ``client_secret`` (env var names); Reddit requires a descriptive
User-Agent (``options.user_agent``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from connectors.http import Http
from connectors.registry import register
from connectors.source import USER_AGENT, Batch, Entry, Source, SourceError, SourceState, epoch

__all__ = ["RedditSource"]

MAX_RESUMES = 20  # unread runs kept per listing; a source further behind than that drops the oldest


class RedditOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comments: bool = Field(default=False, description="Also read each subreddit's newest comments.")
    max_pages: int = Field(default=10, ge=1)
    limit: int = Field(default=100, ge=1, le=100)
    auth_url: str = "https://www.reddit.com"
    user_agent: str = USER_AGENT


@register
class RedditSource(Source):
    kind = "reddit"
    name = "reddit.v1"
    summary = "Reddit search and subreddit new posts/comments (OAuth app: client_id, client_secret)"
    Options = RedditOptions
    credentials = ("client_id", "client_secret")
    needs = ("query", "accounts")
    default_base_url = "https://oauth.reddit.com"
    options: RedditOptions

    _token: str | None = None
    _expires = 0.0

    async def open(self, state: SourceState) -> None:
        self.secret("client_id")
        self.secret("client_secret")

    async def _auth(self, http: Http) -> dict[str, str]:
        if self._token is None or time.monotonic() > self._expires - 60:
            assert self.client is not None
            resp = await http.request(
                "POST",
                f"{self.options.auth_url.rstrip('/')}/api/v1/access_token",
                data={"grant_type": "client_credentials"},
                auth=(self.secret("client_id") or "", self.secret("client_secret") or ""),
                headers={"User-Agent": self.options.user_agent},
            )
            body = resp.json() if resp is not None else {}
            if not isinstance(body, dict) or "access_token" not in body:
                raise SourceError(
                    f"Reddit gave no access token ({str(body)[:100]}); check the app's id and secret "
                    f"in ${self.spec.credentials.get('client_id')} and ${self.spec.credentials.get('client_secret')}"
                )
            self._token = str(body["access_token"])
            self._expires = time.monotonic() + float(body.get("expires_in", 3600))
        return {"Authorization": f"bearer {self._token}", "User-Agent": self.options.user_agent}

    def _listings(self) -> list[tuple[str, str, dict[str, Any]]]:
        out: list[tuple[str, str, dict[str, Any]]] = []
        if self.spec.query:
            out.append((f"search:{self.spec.query}", "/search", {"q": self.spec.query, "sort": "new", "type": "link"}))
        for acc in self.spec.accounts:
            sub = acc.removeprefix("/").removeprefix("r/")
            out.append((f"r/{sub}", f"/r/{sub}/new", {}))
            if self.options.comments:
                out.append((f"r/{sub}/comments", f"/r/{sub}/comments", {}))
        return out

    def _child(self, child: Any) -> Entry:
        d = child.get("data") if isinstance(child, dict) else None
        if not isinstance(d, dict) or not d.get("name") or d.get("created_utc") is None:
            return self.malformed(child, "Reddit listing child without data.name or data.created_utc")
        is_comment = child.get("kind") == "t1"
        text = d.get("body", "") if is_comment else " ".join(x for x in (d.get("title"), d.get("selftext")) if x)
        rec = {
            "kind": "mention",
            "text": text,
            "occurred_at": epoch(d["created_utc"]),
            "author": d.get("author"),
            "channel": "reddit",
            "url": f"https://www.reddit.com{d['permalink']}" if d.get("permalink") else d.get("url"),
            "reach": max(0, int(d.get("score") or 0)),
        }
        if is_comment and d.get("parent_id"):
            rec["reply_to"] = f"reddit:{d['parent_id']}"
        return self.record(child, rec, str(d["name"]))

    async def fetch(self, state: SourceState) -> AsyncIterator[Batch]:
        """Each listing from its newest post down to the cursor, then the runs an earlier capped
        pass left unread (``<listing>:resume``: where paging stopped, and the cursor it had to
        reach), continued from Reddit's ``after`` token until they meet their cursor."""
        assert self.client is not None
        cursor = dict(state.cursor)
        for key, path, params in self._listings():
            since = float(cursor.get(key, 0))
            resumes = [dict(r) for r in cursor.get(f"{key}:resume", [])][:MAX_RESUMES]
            newest = since
            async for entries, times, last, after in self._pages(path, params, since, None):
                newest = max([newest, *times])
                if last:
                    cursor[key] = newest
                    if after and since:  # capped before reaching the cursor (a first run reads no further)
                        resumes = [{"after": after, "since": since}, *resumes][:MAX_RESUMES]
                    self._set_resumes(cursor, key, resumes)
                yield Batch(entries, dict(cursor) if last else None)
            for r in list(resumes):
                async for entries, _, last, after in self._pages(path, params, float(r["since"]), str(r["after"])):
                    if last:
                        resumes = [x for x in resumes if x is not r]
                        if after:
                            resumes.append({"after": after, "since": r["since"]})
                        self._set_resumes(cursor, key, resumes)
                    yield Batch(entries, dict(cursor) if last else None)

    @staticmethod
    def _set_resumes(cursor: dict[str, Any], key: str, resumes: list[dict[str, Any]]) -> None:
        cursor.pop(f"{key}:resume", None)
        if resumes:
            cursor[f"{key}:resume"] = resumes

    async def _pages(
        self, path: str, params: dict[str, Any], since: float, after: str | None
    ) -> AsyncIterator[tuple[list[Entry], list[float], bool, str | None]]:
        """Pages of a listing from ``after`` (None: the newest) until one reaches ``since``, at most
        ``max_pages``: entries, their times, whether it is the last page, and, when the pass
        stopped at ``max_pages`` with more to read, the token to continue from."""
        http = self.http("the OAuth app's client id and secret")
        for page in range(self.options.max_pages):
            q = {**params, "limit": self.options.limit, "raw_json": 1}
            if after:
                q["after"] = after
            data = await http.get_json(f"{self.base_url}{path}", params=q, headers=await self._auth(http))
            listing = data.get("data", {}) if isinstance(data, dict) else {}
            children = listing.get("children") or []
            entries = [self._child(c) for c in children]
            times = [
                float(c["data"]["created_utc"])
                for c in children
                if isinstance(c, dict) and isinstance(c.get("data"), dict) and c["data"].get("created_utc")
            ]
            after = listing.get("after")
            reached = bool(times) and min(times) <= since
            capped = page + 1 >= self.options.max_pages
            last = not after or reached or capped
            yield entries, times, last, (after if last and capped and not reached else None)
            if last:
                return
