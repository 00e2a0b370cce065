"""``repmon bench --connect`` end to end with few items: one source of every kind against the
bench's platform servers, through a real ``repmon connect --once`` process into the embedded broker,
and the topic read back; and the platforms' caps sizing the sources."""

from __future__ import annotations

import orjson
import pytest

from tools.bench_connect import ALGOLIA_CAP, BACKFILL_OVERLAP, KINDS, REDDIT_CAP, _Server, bench_connect

pytestmark = pytest.mark.embedded


def test_every_kind_delivers_every_item_it_was_served_exactly_once() -> None:
    # 120 a source: several pages of every paginated kind (40 a Mastodon page, 50 an App Store page,
    # 100 an Algolia or Google Play page), and 100-item gathers of the Firebase firehose
    report = bench_connect(sources=len(KINDS), items=120, sink=False)
    assert "error" not in report, report
    assert report["kinds"] == sorted(KINDS)
    for kind, row in report["per_kind"].items():
        assert row["sources"] == 1 and row["expected"] == 120, (kind, row)
        assert row["on_topic"] == row["sent"] == 120 and row["missing"] == row["duplicates"] == 0, (kind, row)
        assert row["exactly_once"], (kind, row)
    # the firehose and Jetstream also served what the sources' keywords filter out
    assert report["per_kind"]["hackernews-firehose"]["served"] > 120 < report["per_kind"]["bluesky"]["served"]
    assert report["complete"] and report["stopped"] == {}
    assert report["items_on_topic"] == report["distinct_ids_on_topic"] == 120 * len(KINDS)
    assert report["dead_letters"] == report["unexpected_ids"] == 0
    assert set(report["platform_caps"]) == {"hackernews", "reddit", "appstore", "hackernews-firehose", "bluesky"}


def test_a_source_holds_no_more_than_its_platform_serves() -> None:
    server = _Server(public_pem="")
    hn = server.add("hackernews", 0, 1500)
    assert len(hn.ids) == ALGOLIA_CAP
    page = orjson.loads(server.algolia_page("bench-0", 9, 100, "")[1])
    assert len(page["hits"]) == 100 and page["nbPages"] == 10 and page["nbHits"] == ALGOLIA_CAP
    assert orjson.loads(server.algolia_page("bench-0", 10, 100, "")[1])["hits"] == []

    reddit = server.add("reddit", 1, 3000)
    assert len(reddit.ids) == 2 * REDDIT_CAP  # 1,000 posts and 1,000 comments

    apps = server.add("appstore", 2, 1200)
    assert len(apps.ids) == 1200 and 'countries = ["us", "gb", "ca"]' in apps.config  # 500 + 500 + 200
    last = orjson.loads(server.appstore_page("ca", "1500000002", 4)[1])["feed"]
    assert (
        len(last["entry"]) == 50 and "entry" not in orjson.loads(server.appstore_page("ca", "1500000002", 5)[1])["feed"]
    )
    assert server.appstore_page("us", "1500000002", 11) == (400, b"CustomerReviews RSS page depth is limited to 10")


def test_bluesky_sources_back_fill_from_the_search_api_and_overlap_the_stream() -> None:
    """A quarter of a Bluesky source's posts are only in the search API (older than the stream);
    the search's newest hits are the stream's first posts, so a source that back-fills and then
    streams must drop those as duplicates (the end-to-end test above sees each id once)."""
    server = _Server(public_pem="")
    src = server.add("bluesky", 0, 120)
    hits = server.searchable[0]
    assert len(src.ids) == 120 and len(set(src.ids)) == 120
    assert len(hits) == 30 + BACKFILL_OVERLAP
    streamed = {f"bluesky:{p['uri']}" for p in hits[:BACKFILL_OVERLAP]}
    older = {f"bluesky:{p['uri']}" for p in hits[BACKFILL_OVERLAP:]}
    jet = "\n".join(e for _, e in server.events[0])
    assert all(i.split("/")[-1] in jet for i in streamed) and not any(i.split("/")[-1] in jet for i in older)
    created = [p["record"]["createdAt"] for p in hits]
    assert created == sorted(created, reverse=True)  # sort=latest
    assert "backfill = true" in src.config and 'query = "northwind"' in src.config
