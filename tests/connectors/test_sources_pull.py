"""Pull sources against local servers speaking each platform's documented API, cursor in real Redis.

Each kind: mapping of the documented payload, pagination, 429 + Retry-After, 5xx, a malformed
item dead-lettered while the rest goes on, and a restart from the cursor through real Kafka
(exactly the expected ids arrive, once).
"""

from __future__ import annotations

import asyncio
import copy
import email.utils
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from connectors.appstore import AppStoreSource
from connectors.base import KafkaSink, ListSink
from connectors.googleplay import GooglePlaySource
from connectors.hackernews import HackerNewsSource
from connectors.mastodon import MastodonSource
from connectors.reddit import RedditSource
from connectors.rss import RssSource
from connectors.source import Source
from infra.kafka import ensure_topics
from tests.connectors.srckit import Platform, Waits, fixture, ids_of, one_round, read_topic, spec
from tools.bench_connect import rsa_key_pair

pytestmark = pytest.mark.integration

ENV = {"RD_ID": "app-id", "RD_SECRET": "app-secret", "MASTO_TOKEN": "tok"}


def sent(sink: ListSink) -> list[dict[str, Any]]:
    return [orjson.loads(v) for _, v in sink.items]


# -- RSS ------------------------------------------------------------------------------------------
RSS_ITEM = """<item><title>{title}</title><link>https://news.example.com/{n}</link>
<guid isPermaLink="false">news-{n}</guid><pubDate>{date}</pubDate><description>{title}</description></item>"""


def rss_feed(ns: list[int]) -> str:
    items = "".join(
        RSS_ITEM.format(
            n=n, title=f"Northwind story {n}", date=email.utils.formatdate(1796270000 + 60 * n, usegmt=True)
        )
        for n in ns
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>{items}</channel></rss>'


async def test_rss_and_atom_map_entries_dead_letter_the_undated_and_get_conditionally(aredis: Any, unique: str) -> None:
    async with Platform() as p:

        async def news(request: web.Request) -> web.Response:
            if request.headers.get("If-None-Match") == '"v1"':
                return web.Response(status=304)
            return web.Response(text=fixture("google_news_rss.xml"), headers={"ETag": '"v1"'})

        modified = "Thu, 03 Dec 2026 05:00:00 GMT"

        async def blog(request: web.Request) -> web.Response:
            if request.headers.get("If-Modified-Since") == modified:
                return web.Response(status=304)
            return web.Response(text=fixture("blog_atom.xml"), headers={"Last-Modified": modified})

        p.route("GET", "/rss/search", news)
        p.route("GET", "/forum.atom", blog)
        src = RssSource(
            spec(
                "rss",
                feeds=[f"{p.url}/rss/search?q=northwind", f"{p.url}/forum.atom"],
                keywords=["Northwind"],
                poll_seconds=0.01,
                brand="northwind",
            )
        )
        sink = ListSink()
        _, states = await one_round([src], sink, aredis, unique, rounds=2)
        assert all(s == "done" for s in states.values()), states
        got = sent(sink)
        good = [g for g in got if "_error" not in g]
        assert sorted(g["event_id"] for g in good) == [
            "rss:CBMiK2h0dHBzOi8vbmV3cy5leGFtcGxlLmNvbS9ub3J0aHdpbmQtb3V0YWdl",
            "rss:CBMiKmh0dHBzOi8vZGFpbHkuZXhhbXBsZS5vcmcvbm9ydGh3aW5kLXJlYm9vaw",
            "rss:tag:forum.example.com,2026:post-1",
        ]
        post = next(g for g in good if g["event_id"].endswith("post-1"))
        assert post["text"] == "Northwind lost my bag again. Third time this year, no answer from support."
        assert post["occurred_at"] == "2026-12-03T03:00:00+00:00" and post["author"] == "frequentflyer"
        assert post["brand"] == "northwind" and post["kind"] == "mention"
        bad = [g for g in got if "_error" in g]
        assert len(bad) == 1 and "no published or updated date" in bad[0]["_error"]
        # the second round asked with the validators and got 304s: nothing new, nothing re-sent
        assert [r.headers.get("If-None-Match") for r in p.hits("/rss/search")] == [None, '"v1"']
        assert [r.headers.get("If-Modified-Since") for r in p.hits("/forum.atom")] == [None, modified]
        assert len(sink.items) == 4


async def test_rss_honours_retry_after_and_backs_off_on_5xx(aredis: Any, unique: str) -> None:
    async with Platform() as p:

        async def feed(request: web.Request) -> web.Response:
            return web.Response(text=rss_feed([1, 2]))

        p.route("GET", "/feed", feed)
        p.fail("/feed", 429, {"Retry-After": "7"})
        p.fail("/feed", 502)
        src = RssSource(spec("rss", feeds=[f"{p.url}/feed"]))
        waits = Waits()
        src.sleep = waits
        sink = ListSink()
        _, states = await one_round([src], sink, aredis, unique)
        assert states[src.spec.name] == "done"
        assert waits.seconds[0] == 7.0 and len(waits.seconds) == 2 and 1.0 <= waits.seconds[1] <= 2.0
        assert sorted(ids_of([v for _, v in sink.items])) == ["rss:news-1", "rss:news-2"]


def grown(base: list[dict[str, Any]], n: int, vary: Callable[[dict[str, Any], int], None]) -> list[dict[str, Any]]:
    """The fixture's items plus ``n`` newer copies of its first one, ``vary`` giving each its id and time."""
    out = copy.deepcopy(base)
    for i in range(n):
        c = copy.deepcopy(base[0])
        vary(c, i)
        out.append(c)
    return out


# -- restart from the cursor, through Kafka, for every pull kind ---------------------------------
class Feed:
    """A platform whose content grows between two runs; ``build`` adds its routes."""

    def __init__(self, build: Callable[[Platform, Feed], None], make: Callable[[str], Source]) -> None:
        self.build = build
        self.make = make
        self.items: list[Any] = []
        self.extra: Any = None


def _rss(p: Platform, f: Feed) -> None:
    async def h(request: web.Request) -> web.Response:
        return web.Response(text=rss_feed(f.items))

    p.route("GET", "/feed", h)


def _algolia(p: Platform, f: Feed) -> None:
    async def h(request: web.Request) -> web.Response:
        q = request.query
        since, until = 0, 1 << 62
        for cond in filter(None, q.get("numericFilters", "").split(",")):  # a comma is AND, as in Algolia
            if ">=" in cond:
                since = int(cond.split(">=")[1])
            elif "<=" in cond:
                until = int(cond.split("<=")[1])
        per, page = int(q["hitsPerPage"]), int(q["page"])
        hits = sorted(
            (h for h in f.items if since <= h.get("created_at_i", 0) <= until), key=lambda h: -h.get("created_at_i", 0)
        )
        pages = max(1, -(-len(hits) // per))
        return web.json_response({"hits": hits[page * per : (page + 1) * per], "nbPages": pages, "page": page})

    p.route("GET", "/api/v1/search_by_date", h)


def _hn_items(n: int) -> list[dict[str, Any]]:
    def vary(h: dict[str, Any], i: int) -> None:
        h["objectID"], h["created_at_i"] = str(42100000 + i), 1796274000 + 60 * i

    return grown(fixture("hn_algolia_hits.json")["hits"], n, vary)


def _firebase(p: Platform, f: Feed) -> None:
    async def top(request: web.Request) -> web.Response:
        return web.json_response(max(i["id"] for i in f.items))

    async def item(request: web.Request) -> web.Response:
        i = int(request.path.rsplit("/", 1)[1].removesuffix(".json"))
        found = next((x for x in f.items if x["id"] == i), None)
        return web.json_response(found)

    p.route("GET", "/v0/maxitem.json", top)
    p.route("GET", "/v0/item/{id}", item)


def _reddit(p: Platform, f: Feed) -> None:
    async def token(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Basic YXBwLWlkOmFwcC1zZWNyZXQ=":  # app-id:app-secret
            return web.json_response({"error": 401, "message": "Unauthorized"}, status=401)
        return web.json_response({"access_token": "t0k", "token_type": "bearer", "expires_in": 86400, "scope": "*"})

    p.route("POST", "/api/v1/access_token", token)
    p.route("GET", "/r/travel/new", _reddit_listing(lambda: f.items))


def _reddit_listing(items: Callable[[], list[dict[str, Any]]]) -> Callable[[web.Request], Any]:
    """A Reddit listing of ``items()``, newest first, ``limit`` a page, continued by ``after``."""

    async def listing(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "bearer t0k"
        kids = sorted(items(), key=lambda c: -c["data"].get("created_utc", 0))
        limit = int(request.query["limit"])
        start = 0
        if "after" in request.query:
            start = next(i for i, c in enumerate(kids) if c["data"].get("name") == request.query["after"]) + 1
        page = kids[start : start + limit]
        after = page[-1]["data"].get("name") if start + limit < len(kids) else None
        return web.json_response(
            {"kind": "Listing", "data": {"after": after, "children": page}},
            headers={"X-Ratelimit-Remaining": "598.0", "X-Ratelimit-Reset": "300"},
        )

    return listing


def _reddit_items(n: int) -> list[dict[str, Any]]:
    def vary(c: dict[str, Any], i: int) -> None:
        c["data"]["name"], c["data"]["created_utc"] = f"t3_new{i}", 1796274000.0 + 60 * i

    return grown(fixture("reddit_listing.json")["children"], n, vary)


def _mastodon_page(items: list[dict[str, Any]], request: web.Request) -> list[dict[str, Any]]:
    """Mastodon's paging: ``min_id`` gives the statuses immediately newer than it, else the newest;
    newest first either way."""
    limit = int(request.query["limit"])
    sts = sorted(items, key=lambda s: int(s["id"]))
    if "min_id" in request.query:
        newer = [s for s in sts if int(s["id"]) > int(request.query["min_id"])][:limit]
    else:
        newer = sts[-limit:]
    return list(reversed(newer))


def _mastodon(p: Platform, f: Feed) -> None:
    async def tag(request: web.Request) -> web.Response:
        return web.json_response(_mastodon_page(f.items, request))

    p.route("GET", "/api/v1/timelines/tag/northwind", tag)


def _mastodon_search(p: Platform, f: Feed) -> None:
    async def search(request: web.Request) -> web.Response:
        assert request.query["q"] == "northwind" and request.query["type"] == "statuses"
        auth = request.headers.get("Authorization")
        if auth is None:  # search is public, but statuses are only searched for a user
            return web.json_response({"accounts": [], "statuses": [], "hashtags": []})
        if auth != "Bearer tok":
            return web.json_response({"error": "The access token is invalid"}, status=401)
        if f.extra == "no offsets" and "offset" in request.query:
            return web.json_response({"error": "Record not found"}, status=404)
        # as the server does it: hits newest first, min_id a lower bound, paged by offset
        # (app/services/statuses_search_service.rb), not the timelines' "immediately newer"
        since = int(request.query.get("min_id", 0))
        hits = sorted((s for s in f.items if int(s["id"]) > since), key=lambda s: -int(s["id"]))
        offset, limit = int(request.query.get("offset", 0)), int(request.query["limit"])
        return web.json_response({"accounts": [], "statuses": hits[offset : offset + limit], "hashtags": []})

    p.route("GET", "/api/v2/search", search)


def _mastodon_search_items(n: int) -> list[dict[str, Any]]:
    base = fixture("mastodon_search.json")["statuses"][0]
    out = []
    for i in range(n):
        s = copy.deepcopy(base)
        s["id"] = str(113700000000000100 + i)
        out.append(s)
    return out


def _mastodon_searcher(url: str, name: str = "mds-restart", env: dict[str, str] | None = None) -> MastodonSource:
    return MastodonSource(
        spec(
            "mastodon",
            url,
            name=name,
            query="northwind",
            credentials={"access_token": "MASTO_TOKEN"},
            options={"limit": 3},
        ),
        env=ENV if env is None else env,
    )


def _mastodon_items(n: int, start: int = 0) -> list[dict[str, Any]]:
    base = fixture("mastodon_statuses.json")["statuses"][0]
    out = []
    for i in range(start, start + n):
        s = copy.deepcopy(base)
        s["id"] = str(113600000000000000 + i)
        out.append(s)
    return out


def _appstore(p: Platform, f: Feed) -> None:
    async def page(request: web.Request) -> web.Response:
        n = int(p.arg(request, "page").removeprefix("page="))
        assert p.arg(request, "app") == "id=284882215"
        entries = sorted(f.items, key=lambda e: e["updated"]["label"], reverse=True)  # one offset: sorts as time
        return web.json_response({"feed": {"entry": entries[(n - 1) * 2 : n * 2]}})

    p.route("GET", "/gb/rss/customerreviews/{page}/{app}/sortby=mostrecent/json", page)


def _appstore_items(n: int) -> list[dict[str, Any]]:
    def vary(e: dict[str, Any], i: int) -> None:
        e["id"]["label"], e["updated"]["label"] = str(11800000100 + i), f"2026-12-02T20:{10 + i:02d}:00-07:00"

    return grown(fixture("appstore_reviews.json")["entry"], n, vary)


def _googleplay(p: Platform, f: Feed) -> None:
    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("refresh_token") != "gp-refresh" or form.get("grant_type") != "refresh_token":
            return web.json_response({"error": "invalid_grant"}, status=400)
        return web.json_response({"access_token": "ya29.test", "expires_in": 3599, "token_type": "Bearer"})

    async def reviews(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer ya29.test"
        rs = sorted(
            f.items,
            key=lambda r: -int(r["comments"][0].get("userComment", {}).get("lastModified", {}).get("seconds", 0)),
        )
        start = int(request.query.get("token", 0))
        body: dict[str, Any] = {"reviews": rs[start : start + 2]}
        if start + 2 < len(rs):
            body["tokenPagination"] = {"nextPageToken": str(start + 2)}
        return web.json_response(body)

    p.route("POST", "/token", token)
    p.route("GET", "/androidpublisher/v3/applications/com.northwind.go/reviews", reviews)


def _googleplay_items(n: int) -> list[dict[str, Any]]:
    def vary(r: dict[str, Any], i: int) -> None:
        r["reviewId"] = f"gp:new-{i}"
        r["comments"][0]["userComment"]["lastModified"]["seconds"] = str(1796273000 + 60 * i)

    return grown(fixture("googleplay_reviews.json")["reviews"], n, vary)


GP_ENV = {"GP_ID": "cid", "GP_SECRET": "csecret", "GP_REFRESH": "gp-refresh"}


def _src(cls: type[Source], **kw: Any) -> Callable[[str], Source]:
    return lambda url: cls(spec(cls.kind, url, name=f"{cls.kind}-restart", poll_seconds=0.01, **kw), env=ENV)


CASES = {
    # kind: (feed builder, make source, items of run 1, items of run 2, expected ids)
    "rss": (
        _rss,
        lambda url: RssSource(spec("rss", name="rss-restart", feeds=[f"{url}/feed"])),
        [1, 2, 3],
        [2, 3, 4, 5],
        [f"rss:news-{i}" for i in range(1, 6)],
    ),
    "hackernews": (
        _algolia,
        _src(HackerNewsSource, query="northwind", options={"hits_per_page": 2}),
        _hn_items(0),
        _hn_items(3),
        [f"hackernews:{i}" for i in ("42000001", "42000002", "42000003", "42100000", "42100001", "42100002")],
    ),
    "hackernews-firehose": (
        _firebase,
        lambda url: HackerNewsSource(
            spec(
                "hackernews",
                name="hnf-restart",
                keywords=["northwind"],
                options={"firehose": True, "firebase_url": f"{url}/v0", "backlog": 10},
            )
        ),
        fixture("hn_firebase_items.json")["items"][:3],
        fixture("hn_firebase_items.json")["items"],
        ["hackernews:43000001", "hackernews:43000003", "hackernews:43000005"],
    ),
    "reddit": (
        _reddit,
        lambda url: RedditSource(
            spec(
                "reddit",
                url,
                name="rd-restart",
                accounts=["r/travel"],
                options={"limit": 2, "auth_url": url},
                credentials={"client_id": "RD_ID", "client_secret": "RD_SECRET"},
            ),
            env=ENV,
        ),
        _reddit_items(0),
        _reddit_items(3),
        [
            "reddit:t3_1h9x0z",
            "reddit:t3_1h9x2b",
            "reddit:t3_1h9x3c",
            "reddit:t3_new0",
            "reddit:t3_new1",
            "reddit:t3_new2",
        ],
    ),
    "mastodon": (
        _mastodon,
        lambda url: MastodonSource(
            spec("mastodon", url, name="md-restart", accounts=["#northwind"], options={"limit": 3})
        ),
        _mastodon_items(3),
        _mastodon_items(10),
        [f"mastodon:127.0.0.1:{113600000000000000 + i}" for i in range(10)],
    ),
    "mastodon-search": (
        _mastodon_search,
        _mastodon_searcher,
        _mastodon_search_items(3),
        _mastodon_search_items(10),
        [f"mastodon:127.0.0.1:{113700000000000100 + i}" for i in range(10)],
    ),
    "appstore": (
        _appstore,
        lambda url: AppStoreSource(
            spec("appstore", url, name="as-restart", accounts=["284882215"], options={"countries": ["gb"]})
        ),
        _appstore_items(0),
        _appstore_items(3),
        [
            "appstore:284882215:11800000000",
            "appstore:284882215:11800000001",
            "appstore:284882215:11800000100",
            "appstore:284882215:11800000101",
            "appstore:284882215:11800000102",
        ],
    ),
    "googleplay": (
        _googleplay,
        lambda url: GooglePlaySource(
            spec(
                "googleplay",
                url,
                name="gp-restart",
                accounts=["com.northwind.go"],
                options={"token_url": f"{url}/token"},
                credentials={"client_id": "GP_ID", "client_secret": "GP_SECRET", "refresh_token": "GP_REFRESH"},
            ),
            env=GP_ENV,
        ),
        _googleplay_items(0),
        _googleplay_items(3),
        [
            "googleplay:com.northwind.go:gp:AOqpTOG1-0001:1796272200",
            "googleplay:com.northwind.go:gp:AOqpTOG1-0002:1796271000",
            *[f"googleplay:com.northwind.go:gp:new-{i}:{1796273000 + 60 * i}" for i in range(3)],
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_restart_resumes_from_the_cursor_with_no_gap_and_no_duplicate(
    case: str, aredis: Any, unique: str, kafka_bootstrap: str
) -> None:
    build, make, first, second, expected = CASES[case]
    topic = f"src-restart-{unique}"
    ensure_topics(kafka_bootstrap, [topic], 1)
    feed = Feed(build, make)
    async with Platform() as p:
        build(p, feed)
        for items in (first, second):  # two processes in turn, the same Redis
            feed.items = copy.deepcopy(items)
            sink = KafkaSink(kafka_bootstrap, topic)
            try:
                _, states = await one_round([make(p.url)], sink, aredis, unique)
            finally:
                sink.close()
            assert all(s == "done" for s in states.values()), states
    got = [i for i in ids_of(read_topic(kafka_bootstrap, topic)) if i != "<malformed>"]
    assert sorted(got) == sorted(expected)  # every expected id, each once
    assert len(got) == len(set(got))


# the content path of each kind, where the platform answers 429 and then 5xx first
FAULT_PATHS = {
    "rss": "/feed",
    "hackernews": "/api/v1/search_by_date",
    "hackernews-firehose": "/v0/maxitem.json",
    "reddit": "/r/travel/new",
    "mastodon": "/api/v1/timelines/tag/northwind",
    "mastodon-search": "/api/v2/search",
    "appstore": "/gb/rss/customerreviews/page=1/id=284882215/sortby=mostrecent/json",
    "googleplay": "/androidpublisher/v3/applications/com.northwind.go/reviews",
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_every_pull_kind_honours_retry_after_backs_off_on_5xx_and_loses_nothing(
    case: str, aredis: Any, unique: str
) -> None:
    """The same content twice, from two fresh cursors: once served plainly, once behind a 429 with
    ``Retry-After: 3`` and then a 503 on the content path. The second run waits what the platform
    said, then backs off, then delivers exactly what the first run did."""
    build, make, _, items, _ = CASES[case]
    assert set(FAULT_PATHS) == set(CASES)
    runs: list[list[str]] = []
    for faulty in (False, True):
        feed = Feed(build, make)
        feed.items = copy.deepcopy(items)
        async with Platform() as p:
            build(p, feed)
            if faulty:
                p.fail(FAULT_PATHS[case], 429, {"Retry-After": "3"})
                p.fail(FAULT_PATHS[case], 503)
            src = make(p.url)
            waits = Waits()
            src.sleep = waits
            sink = ListSink()
            _, states = await one_round([src], sink, aredis, f"{unique}{int(faulty)}")
            assert states[src.spec.name] == "done", states
            if faulty:
                hits = p.hits(FAULT_PATHS[case])
                assert len(hits) >= 3  # the 429, the 503, then the content
                assert waits.seconds[0] == 3.0, waits.seconds  # what Retry-After said
                assert len(waits.seconds) >= 2 and 0 < waits.seconds[1] <= 5.0  # the 5xx backoff
            else:
                assert waits.seconds == []
        runs.append(sorted(i for i in ids_of([v for _, v in sink.items]) if i != "<malformed>"))
    assert runs[0] and runs[1] == runs[0]
    assert len(set(runs[1])) == len(runs[1])


async def test_a_hn_burst_beyond_max_pages_arrives_whole_over_the_next_polls(aredis: Any, unique: str) -> None:
    """Two pages of two hits per poll, and 13 new hits between two polls: the capped pass leaves
    a window in the cursor, the next polls read it, and every hit arrives once."""
    feed = Feed(_algolia, _src(HackerNewsSource, query="northwind", options={"hits_per_page": 2, "max_pages": 2}))
    async with Platform() as p:
        _algolia(p, feed)
        got: list[str] = []
        for items, rounds in ((_hn_items(0), 1), (_hn_items(13), 4)):
            feed.items = copy.deepcopy(items)
            sink = ListSink()
            _, states = await one_round([feed.make(p.url)], sink, aredis, unique, rounds=rounds)
            assert all(v == "done" for v in states.values()), states
            got += [i for i in ids_of([v for _, v in sink.items]) if i != "<malformed>"]
    want = [f"hackernews:{i}" for i in ("42000001", "42000002", "42000003")]
    want += [f"hackernews:{42100000 + i}" for i in range(13)]
    assert sorted(got) == sorted(want) and len(got) == len(set(got))


async def test_a_reddit_burst_beyond_max_pages_arrives_whole_over_the_next_polls(aredis: Any, unique: str) -> None:
    """The same with Reddit's listings: the next polls continue from the ``after`` token where the
    capped pass stopped, down to the cursor it had to reach."""
    make = CASES["reddit"][1]

    def capped(url: str) -> Source:
        src = make(url)
        src.options = src.options.model_copy(update={"max_pages": 2})
        src.spec = src.spec.model_copy(update={"poll_seconds": 0.01})
        return src

    feed = Feed(_reddit, capped)
    async with Platform() as p:
        _reddit(p, feed)
        got: list[str] = []
        for items, rounds in ((_reddit_items(0), 1), (_reddit_items(13), 4)):
            feed.items = copy.deepcopy(items)
            sink = ListSink()
            _, states = await one_round([capped(p.url)], sink, aredis, unique, rounds=rounds)
            assert all(v == "done" for v in states.values()), states
            got += [i for i in ids_of([v for _, v in sink.items]) if i != "<malformed>"]
    want = ["reddit:t3_1h9x0z", "reddit:t3_1h9x2b", "reddit:t3_1h9x3c", *[f"reddit:t3_new{i}" for i in range(13)]]
    assert sorted(got) == sorted(want) and len(got) == len(set(got))


def _with_bad(case: str, items: list[Any]) -> list[Any]:
    """The case's content plus an item the platform could send that its mapping cannot read."""
    out = copy.deepcopy(items)
    if case == "hackernews-firehose":
        out.append({"id": max(i["id"] for i in out) + 1, "type": "story", "title": "northwind"})  # no time
    elif case == "reddit":
        out.append({"kind": "t3", "data": {"created_utc": 1796279999.0, "title": "northwind"}})  # no name
    return out


# kind: what its dead letter says (App Store and Google Play fixtures hold their own bad entries)
BAD_REASONS = {
    "hackernews-firehose": ["Firebase item without id or time"],
    "reddit": ["Reddit listing child without data.name or data.created_utc"],
    "appstore": ["App Store entry"],
    "googleplay": ["Play review"],
}


@pytest.mark.parametrize("case", sorted(BAD_REASONS))
async def test_a_malformed_item_is_dead_lettered_with_its_reason_and_the_rest_arrives(
    case: str, aredis: Any, unique: str
) -> None:
    build, make, _, items, expected = CASES[case]
    feed = Feed(build, make)
    feed.items = _with_bad(case, items)
    async with Platform() as p:
        build(p, feed)
        sink = ListSink()
        _, states = await one_round([make(p.url)], sink, aredis, unique)
        assert all(v == "done" for v in states.values()), states
    got = sent(sink)
    reasons = [g["_error"] for g in got if "_error" in g]
    assert reasons and all(any(want in r for want in BAD_REASONS[case]) for r in reasons), reasons
    # the rest is delivered: the second run's content holds every expected id of the case
    assert sorted(g["event_id"] for g in got if "_error" not in g) == sorted(expected)


# -- per-kind behaviour ---------------------------------------------------------------------------
async def test_hn_search_maps_hits_pages_and_dead_letters_a_hit_without_id(aredis: Any, unique: str) -> None:
    feed = Feed(_algolia, _src(HackerNewsSource))
    feed.items = fixture("hn_algolia_hits.json")["hits"]
    async with Platform() as p:
        _algolia(p, feed)
        src = HackerNewsSource(spec("hackernews", p.url, query="northwind", options={"hits_per_page": 3}))
        sink = ListSink()
        await one_round([src], sink, aredis, unique)
        assert [r.query["page"] for r in p.hits("/api/v1/search_by_date")] == ["0", "1"]
    got = sent(sink)
    by_id = {g.get("event_id"): g for g in got}
    assert by_id["hackernews:42000003"]["text"] == "Flew Northwind yesterday, the app crashed at check-in."
    assert by_id["hackernews:42000003"]["reply_to"] == "hackernews:42000001"
    assert by_id["hackernews:42000001"]["reach"] == 120
    bad = [g for g in got if "_error" in g]
    assert len(bad) == 1 and "objectID" in bad[0]["_error"]
    cursor = orjson.loads(await aredis.get(f"{unique}:src:{src.spec.name}:cursor"))
    assert cursor == {"created_at_i": 1796273400}


async def test_a_bad_credential_stops_that_source_with_one_line_and_the_others_keep_running(
    aredis: Any, unique: str
) -> None:
    feed = Feed(_reddit, _src(RedditSource))
    feed.items = _reddit_items(0)
    hn = Feed(_algolia, _src(HackerNewsSource))
    hn.items = _hn_items(0)
    async with Platform() as p:
        _reddit(p, feed)
        _algolia(p, hn)
        creds = {"client_id": "RD_ID", "client_secret": "RD_SECRET"}
        wrong = RedditSource(
            spec("reddit", p.url, name="rd-wrong", accounts=["travel"], credentials=creds, options={"auth_url": p.url}),
            env={**ENV, "RD_SECRET": "not-it"},
        )
        unset = RedditSource(
            spec("reddit", p.url, name="rd-unset", accounts=["travel"], credentials=creds, options={"auth_url": p.url}),
            env={"RD_ID": "x"},
        )
        good = HackerNewsSource(spec("hackernews", p.url, name="hn-good", query="northwind"))
        sink = ListSink()
        rt, states = await one_round([wrong, unset, good], sink, aredis, unique)
    assert states["rd-wrong"].startswith("stopped: HTTP 401 from POST http://127.0.0.1:")
    assert "check the OAuth app's client id and secret" in states["rd-wrong"] and "\n" not in states["rd-wrong"]
    assert (
        states["rd-unset"]
        == "stopped: environment variable RD_SECRET (credentials.client_secret) is empty or not set: export it"
    )
    assert states["hn-good"] == "done"
    assert {i for i in ids_of([v for _, v in sink.items]) if i.startswith("hackernews:")} == {
        "hackernews:42000001",
        "hackernews:42000002",
        "hackernews:42000003",
    }
    assert rt.metrics.value("repmon_source_up", "rd-wrong", "reddit") == 0


async def test_reddit_pages_with_after_and_waits_for_a_spent_quota(aredis: Any, unique: str) -> None:
    feed = Feed(_reddit, _src(RedditSource))
    feed.items = _reddit_items(2)
    async with Platform() as p:
        _reddit(p, feed)

        async def spent(request: web.Request) -> web.Response:
            return web.json_response(
                {"kind": "Listing", "data": {"after": None, "children": feed.items[:1]}},
                headers={"X-Ratelimit-Remaining": "0", "X-Ratelimit-Reset": "42"},
            )

        p.route("GET", "/search", spent)
        src = RedditSource(
            spec(
                "reddit",
                p.url,
                query="northwind",
                accounts=["travel"],
                options={"limit": 2, "auth_url": p.url},
                credentials={"client_id": "RD_ID", "client_secret": "RD_SECRET"},
            ),
            env=ENV,
        )
        waits = Waits()
        src.sleep = waits
        sink = ListSink()
        _, states = await one_round([src], sink, aredis, unique)
        assert states[src.spec.name] == "done"
        afters = [r.query.get("after") for r in p.hits("/r/travel/new")]
    assert afters == [None, "t3_new0", "t3_1h9x2b"]
    assert waits.seconds and 41 < waits.seconds[0] <= 42  # the search said the quota is spent for 42 s
    got = sent(sink)
    post = next(g for g in got if g.get("event_id") == "reddit:t3_1h9x3c")
    assert post["text"] == "Northwind cancelled my flight with 2 hours notice And no hotel voucher."
    assert post["url"] == "https://www.reddit.com/r/travel/comments/1h9x3c/northwind_cancelled/"
    assert sum("_error" in g for g in got) == 1


async def test_mastodon_catches_up_then_streams_and_resumes_after_the_stream_drops(aredis: Any, unique: str) -> None:
    statuses = fixture("mastodon_statuses.json")["statuses"]
    feed = Feed(_mastodon, _src(MastodonSource))
    feed.items = [statuses[0]]
    live = _mastodon_items(2, start=50)
    async with Platform() as p:
        _mastodon(p, feed)

        async def stream(request: web.Request) -> web.StreamResponse:
            assert request.query["tag"] == "northwind" and request.headers["Authorization"] == "Bearer tok"
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b":thump\n\n")
            for st in (*live, statuses[2]):  # two statuses and a reblog (skipped)
                await resp.write(b"event: update\ndata: " + orjson.dumps(st) + b"\n\n")
            await resp.write(b"event: update\ndata: {not json\n\n")
            await resp.write(b"event: delete\ndata: 113500000000000001\n\n")
            return resp  # the connection drops

        p.route("GET", "/api/v1/streaming/hashtag", stream)

        def mk() -> MastodonSource:
            return MastodonSource(
                spec(
                    "mastodon",
                    p.url,
                    name="md-live",
                    accounts=["northwind"],
                    credentials={"access_token": "MASTO_TOKEN"},
                    options={"streaming": True},
                ),
                env=ENV,
            )

        sink = ListSink()
        _, states = await one_round([mk()], sink, aredis, unique)
        assert states["md-live"].startswith("retrying: the streaming connection closed")
        # posted while disconnected: the next connection's catch-up reads it by min_id
        feed.items = [statuses[0], *live, *_mastodon_items(1, start=60)]
        await one_round([mk()], sink, aredis, unique)
    got = sent(sink)
    ids = [g["event_id"] for g in got if "_error" not in g]
    host = "127.0.0.1"
    assert ids.count(f"mastodon:{host}:113600000000000060") == 1
    assert (
        sorted(set(ids))
        == sorted(ids)
        == sorted(
            [
                f"mastodon:{host}:113500000000000001",
                f"mastodon:{host}:113600000000000050",
                f"mastodon:{host}:113600000000000051",
                f"mastodon:{host}:113600000000000060",
            ]
        )
    )
    first = next(g for g in got if g.get("event_id") == f"mastodon:{host}:113500000000000001")
    assert first["text"] == "Stuck at the gate for 3 hours, thanks #northwind" and first["reach"] == 210
    assert any(isinstance(g, dict) and "not JSON" in g.get("_error", "") for g in got)


async def test_mastodon_keyword_search_maps_the_statuses_and_sends_the_user_token(aredis: Any, unique: str) -> None:
    feed = Feed(_mastodon_search, _mastodon_searcher)
    feed.items = fixture("mastodon_search.json")["statuses"]
    async with Platform() as p:
        _mastodon_search(p, feed)
        sink = ListSink()
        _, states = await one_round([_mastodon_searcher(p.url, "mds-map")], sink, aredis, unique)
        hits = p.hits("/api/v2/search")
    assert states == {"mds-map": "done"}
    assert hits and all(r.headers.get("Authorization") == "Bearer tok" for r in hits)
    host = "127.0.0.1"
    by_id = {g["event_id"]: g for g in sent(sink)}
    assert sorted(by_id) == [f"mastodon:{host}:113700000000000001", f"mastodon:{host}:113700000000000002"]
    first, reply = by_id[f"mastodon:{host}:113700000000000001"], by_id[f"mastodon:{host}:113700000000000002"]
    assert first["text"] == "Northwind refunded my cancelled flight in two days. Credit where due."
    assert (first["kind"], first["author"], first["reach"]) == ("mention", "cai", 480)
    assert first["url"] == "https://mastodon.example/@cai/113700000000000001"
    assert reply["reply_to"] == f"mastodon:{host}:113700000000000001" and reply["author"] == "dee@other.example"


async def test_a_mastodon_search_cut_below_its_newest_page_is_read_again_whole(aredis: Any, unique: str) -> None:
    """A pass that fails after the newest page of a burst leaves the cursor where it was: the next
    process reads the whole burst, its older pages included, each status delivered once."""
    feed = Feed(_mastodon_search, _mastodon_searcher)
    feed.items = _mastodon_search_items(3)
    sink = ListSink()
    key = f"{unique}:src:mds-cut:cursor"
    async with Platform() as p:
        _mastodon_search(p, feed)
        await one_round([_mastodon_searcher(p.url, "mds-cut")], sink, aredis, unique)
        before = orjson.loads(await aredis.get(key))
        feed.items, feed.extra = _mastodon_search_items(10), "no offsets"
        _, states = await one_round([_mastodon_searcher(p.url, "mds-cut")], sink, aredis, unique)
        assert states["mds-cut"].startswith("stopped: HTTP 404"), states
        assert orjson.loads(await aredis.get(key)) == before  # the newest page alone moved nothing
        feed.extra = None
        _, states = await one_round([_mastodon_searcher(p.url, "mds-cut")], sink, aredis, unique)
        assert states["mds-cut"] == "done"
    ids = ids_of([v for _, v in sink.items])
    assert sorted(set(ids)) == sorted(f"mastodon:127.0.0.1:{113700000000000100 + i}" for i in range(10))
    assert len(ids) == len(set(ids))


async def test_mastodon_keyword_search_without_a_user_token_stops_with_one_line(aredis: Any, unique: str) -> None:
    """Mastodon answers a statuses search without a token with no statuses, not an error: a search
    source without one is stopped at start (one line, nothing asked), a refused token at its 401;
    a hashtag source beside them needs no token and keeps running."""
    search = Feed(_mastodon_search, _mastodon_searcher)
    search.items = _mastodon_search_items(2)
    tags = Feed(_mastodon, _src(MastodonSource))
    tags.items = _mastodon_items(2)
    async with Platform() as p:
        _mastodon_search(p, search)
        _mastodon(p, tags)
        sources = [
            MastodonSource(spec("mastodon", p.url, name="mds-none", query="northwind")),
            _mastodon_searcher(p.url, "mds-unset", env={}),
            _mastodon_searcher(p.url, "mds-wrong", env={"MASTO_TOKEN": "stale"}),
            MastodonSource(spec("mastodon", p.url, name="md-public", accounts=["northwind"])),
        ]
        sink = ListSink()
        _, states = await one_round(sources, sink, aredis, unique)
        asked = [r.headers.get("Authorization") for r in p.hits("/api/v2/search")]
        public = [r.headers.get("Authorization") for r in p.hits("/api/v1/timelines/tag/northwind")]
    assert states["mds-none"] == (
        "stopped: keyword search (query) needs a user token: credentials.access_token is not set: "
        'add credentials = { access_token = "ENV_VAR_NAME" } naming the environment variable that holds it'
    )
    assert states["mds-unset"] == (
        "stopped: keyword search (query) needs a user token: "
        "environment variable MASTO_TOKEN (credentials.access_token) is empty or not set: export it"
    )
    assert states["mds-wrong"].startswith("stopped: HTTP 401 from GET http://127.0.0.1:"), states
    assert "check the token in credentials.access_token" in states["mds-wrong"]
    assert all("\n" not in s for s in states.values())
    assert asked == ["Bearer stale"]  # the two without a token asked nothing
    assert states["md-public"] == "done" and public == [None]
    assert sorted(ids_of([v for _, v in sink.items])) == sorted(f"mastodon:127.0.0.1:{s['id']}" for s in tags.items)


async def test_app_store_and_google_play_reviews_reach_the_topic_as_reviews_with_an_integer_rating(
    aredis: Any, unique: str, kafka_bootstrap: str
) -> None:
    """Apple sends the rating as a string label, Google as a number: both arrive as ``kind:
    "review"`` with an integer ``rating``, the review's text and the product hint of the source."""
    topic = f"src-reviews-{unique}"
    ensure_topics(kafka_bootstrap, [topic], 1)
    apple = Feed(_appstore, CASES["appstore"][1])
    apple.items = fixture("appstore_reviews.json")["entry"]
    play = Feed(_googleplay, CASES["googleplay"][1])
    play.items = fixture("googleplay_reviews.json")["reviews"]
    async with Platform() as p:
        _appstore(p, apple)
        _googleplay(p, play)
        sources = [
            AppStoreSource(
                spec(
                    "appstore",
                    p.url,
                    name="as-reviews",
                    accounts=["284882215"],
                    options={"countries": ["gb"], "product": "Northwind Go"},
                )
            ),
            GooglePlaySource(
                spec(
                    "googleplay",
                    p.url,
                    name="gp-reviews",
                    accounts=["com.northwind.go"],
                    options={"token_url": f"{p.url}/token", "product": "Northwind Go"},
                    credentials={"client_id": "GP_ID", "client_secret": "GP_SECRET", "refresh_token": "GP_REFRESH"},
                ),
                env=GP_ENV,
            ),
        ]
        sink = KafkaSink(kafka_bootstrap, topic)
        try:
            _, states = await one_round(sources, sink, aredis, unique)
        finally:
            sink.close()
    assert states == {"as-reviews": "done", "gp-reviews": "done"}
    got = [orjson.loads(v) for v in read_topic(kafka_bootstrap, topic)]
    good = {g["event_id"]: g for g in got if "_error" not in g}
    fields = ("kind", "rating", "text", "product", "platform", "author")
    assert {k: tuple(g.get(f) for f in fields) for k, g in good.items()} == {
        "appstore:284882215:11800000001": (
            "review",
            1,
            "Crashes at check-in. Every time I try to get my boarding pass the app closes.",
            "Northwind Go",
            "appstore",
            "jetsetter88",
        ),
        "appstore:284882215:11800000000": (
            "review",
            5,
            "Great. Rebooked in two taps.",
            "Northwind Go",
            "appstore",
            "happyflyer",
        ),
        "googleplay:com.northwind.go:gp:AOqpTOG1-0001:1796272200": (
            "review",
            2,
            "Login loop since the update",
            "Northwind Go",
            "googleplay",
            "Ana P.",
        ),
        "googleplay:com.northwind.go:gp:AOqpTOG1-0002:1796271000": (
            "review",
            4,
            "Funciona bien",
            "Northwind Go",
            "googleplay",
            None,
        ),
    }
    assert all(type(g["rating"]) is int for g in good.values())
    assert good["googleplay:com.northwind.go:gp:AOqpTOG1-0002:1796271000"]["lang"] == "es"
    assert good["appstore:284882215:11800000001"]["location"] == "gb"
    assert sum("_error" in g for g in got) == 2  # each fixture's entry without a rating or a user comment


async def test_reddit_comments_are_read_page_by_page_and_each_arrives_once(
    aredis: Any, unique: str, kafka_bootstrap: str
) -> None:
    """``options.comments``: each subreddit's ``/comments`` listing beside its posts, paged by
    ``after``; a second process reads only the comment posted since, through Kafka."""
    topic = f"src-comments-{unique}"
    ensure_topics(kafka_bootstrap, [topic], 1)
    comments = fixture("reddit_comments.json")["children"]
    feed = Feed(_reddit, CASES["reddit"][1])
    feed.items = _reddit_items(0)
    served: list[dict[str, Any]] = []
    async with Platform() as p:
        _reddit(p, feed)
        p.route("GET", "/r/travel/comments", _reddit_listing(lambda: served))
        for now in (comments[1:], comments):  # the newest comment is posted between the two runs
            served = copy.deepcopy(now)
            src = RedditSource(
                spec(
                    "reddit",
                    p.url,
                    name="rd-comments",
                    accounts=["r/travel"],
                    options={"limit": 2, "auth_url": p.url, "comments": True},
                    credentials={"client_id": "RD_ID", "client_secret": "RD_SECRET"},
                ),
                env=ENV,
            )
            sink = KafkaSink(kafka_bootstrap, topic)
            try:
                _, states = await one_round([src], sink, aredis, unique)
            finally:
                sink.close()
            assert states == {"rd-comments": "done"}
        afters = [r.query.get("after") for r in p.hits("/r/travel/comments")]
    # run 1: two pages of two, the second from the first's after; run 2: one page reaches the cursor
    assert afters == [None, "t1_m1c003", None]
    got = [orjson.loads(v) for v in read_topic(kafka_bootstrap, topic)]
    ids = [g["event_id"] for g in got if "_error" not in g]
    assert sorted(i for i in ids if i.startswith("reddit:t1_")) == [f"reddit:t1_m1c00{i}" for i in range(1, 6)]
    assert len(ids) == len(set(ids))  # comments and posts, each once
    posts = {i for i in ids if i.startswith("reddit:t3_")}
    assert posts == {"reddit:t3_1h9x0z", "reddit:t3_1h9x2b", "reddit:t3_1h9x3c"}
    by_id = {g["event_id"]: g for g in got if "_error" not in g}
    newest = by_id["reddit:t1_m1c005"]
    assert newest["text"] == "Northwind gave me a voucher after I asked twice."
    assert newest["reply_to"] == "reddit:t3_1h9x3c" and newest["author"] == "seatback" and newest["reach"] == 14
    assert newest["url"] == "https://www.reddit.com/r/travel/comments/1h9x3c/northwind_cancelled/m1c005/"
    assert by_id["reddit:t1_m1c004"]["reply_to"] == "reddit:t1_m1c003"
    assert by_id["reddit:t1_m1c003"]["reach"] == 0  # a negative score is no reach


def test_a_source_is_a_connector_one_round_runs_through_the_sync_contract() -> None:
    import http.server
    import threading

    body = fixture("blog_atom.xml").encode()

    class Feed(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/atom+xml")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Feed)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        src = RssSource(spec("rss", feeds=[f"http://127.0.0.1:{srv.server_address[1]}/forum.atom"]))
        sink = ListSink()
        stats = src.run(sink)
    finally:
        srv.shutdown()
    assert (stats.read, stats.sent, stats.invalid) == (2, 2, 0)
    assert ids_of([v for _, v in sink.items]) == [
        "rss:tag:forum.example.com,2026:post-1",
        "rss:tag:forum.example.com,2026:post-2",
    ]


# -- Google Play with a service account ----------------------------------------------------------
class _GoogleToken:
    """Google's token endpoint for service accounts: an access token only for a JWT signed by
    the account's key with the documented claims (RFC 7523 bearer grant)."""

    def __init__(self, public_pem: str, expires_in: int = 3600) -> None:
        self.public_pem, self.expires_in = public_pem, expires_in
        self.issued: list[str] = []
        self.refused: list[str] = []

    async def __call__(self, request: web.Request) -> web.Response:
        import jwt

        form = await request.post()
        aud = str(request.url.with_query(None))
        try:
            assert form.get("grant_type") == "urn:ietf:params:oauth:grant-type:jwt-bearer"
            claims = jwt.decode(str(form.get("assertion")), self.public_pem, algorithms=["RS256"], audience=aud)
            assert claims["iss"] == "reviews@northwind-play.iam.gserviceaccount.com"
            assert claims["scope"] == "https://www.googleapis.com/auth/androidpublisher"
            assert claims["exp"] - claims["iat"] == 3600
        except (AssertionError, jwt.PyJWTError, KeyError) as exc:
            self.refused.append(repr(exc))
            return web.json_response({"error": "invalid_grant", "error_description": "Invalid JWT"}, status=400)
        token = f"ya29.sa-{len(self.issued)}"
        self.issued.append(token)
        return web.json_response({"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"})


def _play_with_service_account(p: Platform, feed: Feed, token: _GoogleToken) -> None:
    async def reviews(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") not in {f"Bearer {t}" for t in token.issued}:
            return web.json_response({"error": {"code": 401}}, status=401)
        return web.json_response({"reviews": feed.items})

    p.route("POST", "/sa-token", token)
    p.route("GET", "/androidpublisher/v3/applications/com.northwind.go/reviews", reviews)


def _sa_source(url: str, key: str, name: str = "gp-sa") -> GooglePlaySource:
    return GooglePlaySource(
        spec(
            "googleplay",
            url,
            name=name,
            accounts=["com.northwind.go"],
            poll_seconds=0.01,
            credentials={"service_account": "GP_SA_KEY"},
        ),
        env={"GP_SA_KEY": key},
    )


def _sa_key(private_pem: str, token_uri: str) -> str:
    return orjson.dumps(
        {
            "type": "service_account",
            "client_email": "reviews@northwind-play.iam.gserviceaccount.com",
            "private_key_id": "k1",
            "private_key": private_pem,
            "token_uri": token_uri,
        }
    ).decode()


@pytest.mark.parametrize(("expires_in", "renewed"), [(3600, False), (30, True)])
async def test_google_play_logs_in_with_a_service_account_and_keeps_its_token_until_it_expires(
    aredis: Any, unique: str, expires_in: int, renewed: bool
) -> None:
    private, public = rsa_key_pair()
    token = _GoogleToken(public, expires_in)
    feed = Feed(_googleplay, lambda url: _sa_source(url, ""))
    feed.items = [r for r in _googleplay_items(2) if r.get("reviewId")]
    async with Platform() as p:
        _play_with_service_account(p, feed, token)
        src = _sa_source(p.url, _sa_key(private, f"{p.url}/sa-token"))
        sink = ListSink()
        _, states = await one_round([src], sink, aredis, unique, rounds=3)
    assert states["gp-sa"] == "done", (states, token.refused)
    assert token.refused == []
    got = {i for i in ids_of([v for _, v in sink.items]) if i != "<malformed>"}
    assert {"googleplay:com.northwind.go:gp:new-0:1796273000", "googleplay:com.northwind.go:gp:new-1:1796273060"} <= got
    # an hour-long token serves every poll; one that expires within the minute is renewed
    assert (len(token.issued) > 1) == renewed, token.issued


async def test_google_play_with_the_wrong_or_a_malformed_key_stops_with_one_line(aredis: Any, unique: str) -> None:
    _, public = rsa_key_pair()
    other, _ = rsa_key_pair()
    token = _GoogleToken(public)
    feed = Feed(_googleplay, lambda url: _sa_source(url, ""))
    feed.items = _googleplay_items(1)
    async with Platform() as p:
        _play_with_service_account(p, feed, token)
        uri = f"{p.url}/sa-token"
        sources = [
            _sa_source(p.url, _sa_key(other, uri), "gp-wrong"),
            _sa_source(p.url, "{not json", "gp-notjson"),
            _sa_source(p.url, orjson.dumps({"client_email": "x@y"}).decode(), "gp-nokey"),
            _sa_source(p.url, _sa_key("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", uri), "gp-bad"),
        ]
        _, states = await one_round(sources, ListSink(), aredis, unique)
    assert states["gp-wrong"].startswith("stopped: HTTP 400 from POST") and "invalid_grant" in states["gp-wrong"]
    assert token.refused and token.issued == []
    assert states["gp-notjson"] == (
        "stopped: $GP_SA_KEY is not JSON; "
        "put the service account's JSON key (from the Cloud console) itself in $GP_SA_KEY"
    )
    assert states["gp-nokey"].startswith("stopped: $GP_SA_KEY has no private_key;")
    assert states["gp-bad"].startswith("stopped: $GP_SA_KEY: private_key is not an RSA key")
    assert all("\n" not in s for s in states.values())


async def test_mastodon_streams_every_hashtag_of_a_source(aredis: Any, unique: str) -> None:
    """Two hashtags, one source: both streams are open at once and a status posted under either
    arrives live; when one stream drops, the round ends and the next catches both tags up."""
    north, sky = _mastodon_items(1, start=70), _mastodon_items(1, start=80)
    timelines: dict[str, list[dict[str, Any]]] = {"northwind": [], "skyline": []}
    sink = ListSink()
    host = "127.0.0.1"
    async with Platform() as p:

        async def tag(request: web.Request) -> web.Response:
            name = request.path.rsplit("/", 1)[1]
            since = int(request.query.get("min_id", 0))
            return web.json_response([s for s in timelines[name] if int(s["id"]) > since][::-1])

        async def stream(request: web.Request) -> web.StreamResponse:
            name = request.query["tag"]
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for st in north if name == "northwind" else sky:
                await resp.write(b"event: update\ndata: " + orjson.dumps(st) + b"\n\n")
            if name == "skyline":  # stays open until the client closes it
                while True:
                    await resp.write(b":thump\n\n")
                    await asyncio.sleep(0.05)
            # the northwind stream drops once the skyline status has reached the sink: both were live
            want = f"mastodon:{host}:{sky[0]['id']}"
            async with asyncio.timeout(10):
                while want not in ids_of([v for _, v in sink.items]):
                    await asyncio.sleep(0.02)
            return resp

        p.route("GET", "/api/v1/timelines/tag/{name}", tag)
        p.route("GET", "/api/v1/streaming/hashtag", stream)

        def mk() -> MastodonSource:
            return MastodonSource(
                spec("mastodon", p.url, name="md-tags", accounts=["#northwind", "skyline"], options={"streaming": True})
            )

        _, states = await one_round([mk()], sink, aredis, unique)
        assert states["md-tags"].startswith("retrying: the streaming connection closed"), states
        assert sorted(r.query["tag"] for r in p.hits("/api/v1/streaming/hashtag")) == ["northwind", "skyline"]
        live = ids_of([v for _, v in sink.items])
        assert sorted(live) == sorted(f"mastodon:{host}:{s['id']}" for s in (*north, *sky))
        # posted while the streams were down, one per tag: the next round's catch-up reads both
        later_n, later_s = _mastodon_items(1, start=71), _mastodon_items(1, start=81)
        timelines["northwind"], timelines["skyline"] = [*north, *later_n], [*sky, *later_s]
        north, sky = [], [{**later_s[0]}]  # the skyline stream repeats its newest: delivered once
        await one_round([mk()], sink, aredis, unique)
    ids = ids_of([v for _, v in sink.items])
    assert sorted(ids) == sorted(set(ids))
    assert {f"mastodon:{host}:{s['id']}" for s in (*later_n, *later_s)} <= set(ids)


async def test_lag_behind_the_source_is_the_age_of_the_newest_item_delivered(aredis: Any, unique: str) -> None:
    feed = Feed(_rss, lambda url: RssSource(spec("rss", name="rss-lag", feeds=[f"{url}/feed"])))
    feed.items = [1, 2, 3]
    async with Platform() as p:
        _rss(p, feed)
        rt, states = await one_round([feed.make(p.url)], ListSink(), aredis, unique)
    assert states["rss-lag"] == "done"
    lag = rt.metrics.value("repmon_source_lag_seconds", "rss-lag", "rss")
    newest = 1796270000 + 60 * 3  # story 3's pubDate
    assert abs(lag - max(0.0, time.time() - newest)) < 30
    assert b'repmon_source_lag_seconds{kind="rss",source="rss-lag"}' in rt.metrics.exposition()
