"""Bluesky: Jetstream over a local WebSocket server (cursor, local keyword filter, reconnect) and
the search API back-fill, into real Kafka with the cursor in real Redis."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve

from connectors.base import KafkaSink, ListSink
from connectors.bluesky import BlueskySource
from infra.kafka import ensure_topics
from tests.connectors.srckit import Platform, Waits, fixture, ids_of, one_round, read_topic, spec

pytestmark = pytest.mark.integration

EVENTS = fixture("jetstream_events.json")["events"]
FIRST = "at://did:plc:eygmaihciaxprqvxpfvl6flk/app.bsky.feed.post/3lcq2vuowo2b"
REPLY = "at://did:plc:4f6zq2yq5bqegv6rfzfpxdao/app.bsky.feed.post/3lcq2vuowo2e"


class Jetstream:
    """Sends ``self.events`` (those after the requested cursor) on each connection, then closes."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.paths: list[str] = []
        self.url = ""

    async def handler(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        self.paths.append(path)
        q = parse_qs(urlsplit(path).query)
        assert q["wantedCollections"] == ["app.bsky.feed.post"]
        since = int(q.get("cursor", ["0"])[0])
        for ev in self.events:
            if isinstance(ev, str):
                await ws.send(ev)
            elif ev["time_us"] > since:
                await ws.send(orjson.dumps(ev).decode())
        await ws.close()


async def test_jetstream_keeps_matching_posts_and_a_reconnect_resumes_from_the_cursor(
    aredis: Any, unique: str, kafka_bootstrap: str
) -> None:
    topic = f"bsky-{unique}"
    ensure_topics(kafka_bootstrap, [topic], 1)
    js = Jetstream()
    js.events = [*EVENTS, "{not json"]
    async with serve(js.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]

        def make() -> BlueskySource:
            return BlueskySource(spec("bluesky", f"ws://127.0.0.1:{port}", name="bsky", keywords=["northwind"]))

        sink = KafkaSink(kafka_bootstrap, topic)
        try:
            _, states = await one_round([make()], sink, aredis, unique)
            assert states["bsky"].startswith("retrying: the Jetstream connection closed")
            cursor = orjson.loads(await aredis.get(f"{unique}:src:bsky:cursor"))
            assert cursor == {"time_us": EVENTS[-1]["time_us"]}
            # posted while disconnected; Jetstream replays from the rewound cursor, so the last
            # events come again and must not be delivered twice
            late = copy.deepcopy(EVENTS[0])
            late["time_us"] = EVENTS[-1]["time_us"] + 1_000_000
            late["commit"]["rkey"] = "3lcq2vuowo2z"
            js.events = [*EVENTS, late]
            await one_round([make()], sink, aredis, unique)
        finally:
            sink.close()
    assert "cursor" not in js.paths[0]
    assert f"cursor={EVENTS[-1]['time_us'] - 5_000_000}" in js.paths[1]
    got = [orjson.loads(v) for v in read_topic(kafka_bootstrap, topic)]
    good = {g["event_id"]: g for g in got if "_error" not in g}
    assert sorted(good) == sorted(
        [
            f"bluesky:{FIRST}",
            f"bluesky:{REPLY}",
            "bluesky:at://did:plc:eygmaihciaxprqvxpfvl6flk/app.bsky.feed.post/3lcq2vuowo2z",
        ]
    )
    assert sum(1 for g in got if "_error" not in g) == 3  # each once
    reply = good[f"bluesky:{REPLY}"]
    assert (
        reply["lang"] == "pt"
        and reply["reply_to"] == f"bluesky:{FIRST}"
        and reply["text"] == "A NORTHWIND perdeu minha mala"
    )
    assert reply["url"] == "https://bsky.app/profile/did:plc:4f6zq2yq5bqegv6rfzfpxdao/post/3lcq2vuowo2e"
    reasons = sorted(g["_error"] for g in got if "_error" in g)
    assert reasons == ["Jetstream post without did, rkey or record.createdAt", "not JSON"]  # once each


SEARCH = "/xrpc/app.bsky.feed.searchPosts"
POSTS = fixture("bluesky_search.json")["posts"]


def search_api(p: Platform) -> None:
    """The search API on ``p``: the first post on page one, the rest on page two (cursor ``p2``)."""

    async def search(request: web.Request) -> web.Response:
        assert request.query["q"] == "northwind" and request.query["sort"] == "latest"
        if request.query.get("cursor") == "p2":
            return web.json_response({"posts": POSTS[1:]})
        return web.json_response({"posts": POSTS[:1], "cursor": "p2"})

    p.route("GET", SEARCH, search)


def backfilling(p: Platform, port: int, name: str) -> BlueskySource:
    return BlueskySource(
        spec(
            "bluesky",
            f"ws://127.0.0.1:{port}",
            name=name,
            keywords=["northwind"],
            query="northwind",
            options={"backfill": True, "search_url": f"{p.url}/xrpc"},
        )
    )


async def test_backfill_reads_the_search_api_pages_before_streaming(aredis: Any, unique: str) -> None:
    js = Jetstream()
    js.events = [EVENTS[0]]
    async with Platform() as p, serve(js.handler, "127.0.0.1", 0) as server:
        search_api(p)
        src = backfilling(p, server.sockets[0].getsockname()[1], "bsky-bf")
        sink = ListSink()
        await one_round([src], sink, aredis, unique)
    assert sorted(ids_of([v for _, v in sink.items])) == sorted(
        [f"bluesky:{POSTS[0]['uri']}", f"bluesky:{POSTS[1]['uri']}", f"bluesky:{FIRST}"]
    )
    cursor = orjson.loads(await aredis.get(f"{unique}:src:bsky-bf:cursor"))
    assert cursor["search_since"] == "2026-12-03T04:00:00.000Z"


async def test_backfill_honours_retry_after_backs_off_on_5xx_and_loses_nothing(aredis: Any, unique: str) -> None:
    """The same search pages and stream twice, from two fresh cursors: once served plainly, once
    with the search API answering ``429`` + ``Retry-After: 3`` and then ``503`` first. The second
    run waits what the API said, then backs off, then delivers exactly what the first run did."""
    runs: list[list[str]] = []
    cursors: list[Any] = []
    for faulty in (False, True):
        js = Jetstream()
        js.events = [EVENTS[0]]
        async with Platform() as p, serve(js.handler, "127.0.0.1", 0) as server:
            search_api(p)
            if faulty:
                p.fail(SEARCH, 429, {"Retry-After": "3"})
                p.fail(SEARCH, 503)
            src = backfilling(p, server.sockets[0].getsockname()[1], "bsky-faults")
            waits = Waits()
            src.sleep = waits
            sink = ListSink()
            prefix = f"{unique}{int(faulty)}"
            _, states = await one_round([src], sink, aredis, prefix)
            # the back-fill went through; the round ended where Jetstream closed the stream
            assert states["bsky-faults"] == "retrying: the Jetstream connection closed", states
            pages = [r.query.get("cursor") for r in p.hits(SEARCH)]
        if faulty:
            # the 429 and the 503 were for page one, asked again until it came, then page two
            assert pages == [None, None, None, "p2"], pages
            assert waits.seconds[0] == 3.0, waits.seconds  # what Retry-After said
            assert len(waits.seconds) == 2 and 0 < waits.seconds[1] <= 5.0, waits.seconds  # the 5xx backoff
        else:
            assert pages == [None, "p2"] and waits.seconds == [], (pages, waits.seconds)
        runs.append(sorted(ids_of([v for _, v in sink.items])))
        cursors.append(orjson.loads(await aredis.get(f"{prefix}:src:bsky-faults:cursor")))
    assert runs[0] == sorted([f"bluesky:{POSTS[0]['uri']}", f"bluesky:{POSTS[1]['uri']}", f"bluesky:{FIRST}"])
    assert runs[1] == runs[0]  # every item, each once
    assert cursors[1] == cursors[0] and cursors[0]["search_since"] == "2026-12-03T04:00:00.000Z"


def synthetic_post(i: int) -> dict[str, Any]:
    """Post ``i`` of a burst, one a second: its uri and creation time are its own."""
    at = datetime(2026, 12, 3, 5, 0, tzinfo=UTC) + timedelta(seconds=i)
    did = "did:plc:eygmaihciaxprqvxpfvl6flk"
    return {
        "uri": f"at://{did}/app.bsky.feed.post/burst{i:04d}",
        "cid": f"c{i}",
        "author": {"did": did, "handle": "someone.bsky.social"},
        "record": {"text": f"northwind delay {i}", "createdAt": at.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "langs": ["en"]},
    }


class SearchIndex:
    """searchPosts as the API documents it: newest first, ``since`` inclusive, ``until`` exclusive,
    ``limit`` per page and an opaque ``cursor`` (an offset here)."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.asked: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        self.asked.append(q)
        hits = sorted(self.posts, key=lambda p: p["record"]["createdAt"], reverse=True)
        hits = [p for p in hits if p["record"]["createdAt"] >= q.get("since", "")]
        hits = [p for p in hits if "until" not in q or p["record"]["createdAt"] < q["until"]]
        start, limit = int(q.get("cursor", 0)), int(q["limit"])
        page = hits[start : start + limit]
        more = start + limit < len(hits)
        return web.json_response({"posts": page, **({"cursor": str(start + limit)} if more else {})})


async def test_a_burst_larger_than_one_backfill_arrives_whole_over_the_next_ones(aredis: Any, unique: str) -> None:
    """One page per back-fill (``max_pages = 1``, 100 hits a page) and 250 posts since the last
    one: the window left unread is kept in the cursor and read by the next back-fills, until every
    post has arrived, each once."""
    index = SearchIndex()
    index.posts = [synthetic_post(i) for i in range(10)]
    sink = ListSink()
    js = Jetstream()
    async with Platform() as p, serve(js.handler, "127.0.0.1", 0) as server:
        p.route("GET", SEARCH, index.handle)
        port = server.sockets[0].getsockname()[1]

        def source() -> BlueskySource:
            return BlueskySource(
                spec(
                    "bluesky",
                    f"ws://127.0.0.1:{port}",
                    name="bsky-burst",
                    keywords=["northwind"],
                    query="northwind",
                    options={"backfill": True, "search_url": f"{p.url}/xrpc", "max_pages": 1},
                )
            )

        await one_round([source()], sink, aredis, unique)  # the first back-fill: the 10 there were
        index.posts += [synthetic_post(i) for i in range(10, 260)]  # a burst while disconnected
        cursors = []
        for _ in range(4):
            await one_round([source()], sink, aredis, unique)
            cursors.append(orjson.loads(await aredis.get(f"{unique}:src:bsky-burst:cursor")))
    got = ids_of([v for _, v in sink.items])
    want = [f"bluesky:{synthetic_post(i)['uri']}" for i in range(260)]
    assert sorted(got) == sorted(want)  # every post, each once
    assert cursors[0]["search_gaps"]  # the first back-fill after the burst could not finish it
    assert (
        "search_gaps" not in cursors[-1] and cursors[-1]["search_since"] == synthetic_post(259)["record"]["createdAt"]
    )
