"""googleplay.v1: Google Play reviews (Play Developer API) -> review records (rating 1-5).

``GET /androidpublisher/v3/applications/<package>/reviews`` (https://developers.google.com/android-publisher/api-ref/rest/v3/reviews/list)
returns the reviews of the last week, newest first, paged by ``tokenPagination.nextPageToken``;
a review is ``{reviewId, authorName, comments: [{userComment: {text, starRating, lastModified:
{seconds}, reviewerLanguage, appVersionName}}]}``. An edited review is a new event (the native id
carries its ``lastModified``). Pages are read until one reaches the newest review delivered.

Credentials (an OAuth client with the ``androidpublisher`` scope, refreshed here over HTTP):
``client_id``, ``client_secret``, ``refresh_token``. ``accounts`` are package names.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from connectors.registry import register
from connectors.source import Batch, Entry, Source, SourceError, SourceState, epoch

__all__ = ["GooglePlaySource"]


class GooglePlayOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token_url: str = "https://oauth2.googleapis.com/token"  # noqa: S105 - an endpoint, not a secret
    max_pages: int = Field(default=20, ge=1)
    product: str | None = Field(default=None, description="Product hint put on the reviews (the app's name).")


@register
class GooglePlaySource(Source):
    kind = "googleplay"
    name = "googleplay.v1"
    summary = "Google Play reviews (Play Developer API; OAuth client_id, client_secret, refresh_token)"
    Options = GooglePlayOptions
    credentials = ("client_id", "client_secret", "refresh_token")
    needs = ("accounts",)
    default_base_url = "https://androidpublisher.googleapis.com"
    options: GooglePlayOptions

    _token: str | None = None
    _expires = 0.0

    async def open(self, state: SourceState) -> None:
        for role in self.credentials:
            self.secret(role)

    async def _auth(self) -> dict[str, str]:
        if self._token is None or time.monotonic() > self._expires - 60:
            resp = await self.http("the OAuth client and refresh token").request(
                "POST",
                self.options.token_url,
                data={
                    "grant_type": "refresh_token",
                    "client_id": self.secret("client_id"),
                    "client_secret": self.secret("client_secret"),
                    "refresh_token": self.secret("refresh_token"),
                },
            )
            body = resp.json() if resp is not None else {}
            if not isinstance(body, dict) or "access_token" not in body:
                raise SourceError(f"Google gave no access token ({str(body)[:100]}); check the refresh token")
            self._token = str(body["access_token"])
            self._expires = time.monotonic() + float(body.get("expires_in", 3600))
        return {"Authorization": f"Bearer {self._token}"}

    def _review(self, r: Any, package: str) -> Entry:
        comments = r.get("comments") if isinstance(r, dict) else None
        user = next((c["userComment"] for c in comments or [] if isinstance(c, dict) and "userComment" in c), None)
        if not isinstance(r, dict) or not r.get("reviewId") or not isinstance(user, dict):
            return self.malformed(r, "Play review without reviewId or userComment")
        seconds = (user.get("lastModified") or {}).get("seconds")
        if seconds is None:
            return self.malformed(r, f"Play review {r['reviewId']} has no lastModified", str(r["reviewId"]))
        lang = user.get("reviewerLanguage")
        rec = {
            "kind": "review",
            "text": (user.get("text") or "").strip(),
            "rating": user.get("starRating"),
            "occurred_at": epoch(float(seconds)),
            "platform": "googleplay",
            "author": r.get("authorName") or None,
            "lang": lang.split("_")[0][:2] if isinstance(lang, str) and lang else None,
            "product": self.options.product,
        }
        rec = {k: v for k, v in rec.items() if v is not None}
        return self.record(r, rec, f"{package}:{r['reviewId']}:{seconds}")

    async def fetch(self, state: SourceState) -> AsyncIterator[Batch]:
        http = self.http("the OAuth client and refresh token")
        cursor = dict(state.cursor)
        for package in self.spec.accounts:
            since = float(cursor.get(package, 0))
            newest = since
            token = None
            for page in range(self.options.max_pages):
                params: dict[str, Any] = {"maxResults": 100}
                if token:
                    params["token"] = token
                url = f"{self.base_url}/androidpublisher/v3/applications/{package}/reviews"
                data = await http.get_json(url, params=params, headers=await self._auth())
                reviews = data.get("reviews", []) if isinstance(data, dict) else []
                times = []
                for r in reviews:
                    for c in r.get("comments", []) if isinstance(r, dict) else []:
                        s = (
                            (c.get("userComment") or {}).get("lastModified", {}).get("seconds")
                            if isinstance(c, dict)
                            else None
                        )
                        if s is not None:
                            times.append(float(s))
                newest = max([newest, *times])
                token = (data.get("tokenPagination") or {}).get("nextPageToken") if isinstance(data, dict) else None
                last = not token or (bool(times) and min(times) <= since) or page + 1 >= self.options.max_pages
                if last:
                    cursor[package] = newest
                yield Batch([self._review(r, package) for r in reviews], dict(cursor) if last else None)
                if last:
                    break
