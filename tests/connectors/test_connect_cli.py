"""``repmon connect``: the kinds list, one-line config errors, and a real run against a local feed
into real Kafka with the cursor in real Redis (a second run sends nothing again), and next to a
worker, the items enriched."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from typer.testing import CliRunner

from cli.main import app
from infra.kafka import TopicTail
from tests.conftest import free_port, redis_server
from tests.connectors.srckit import Platform, fixture, ids_of, read_topic
from tools.stack import WorkerProcess, wait_until, worker_env

runner = CliRunner()

BASE = '[[entities]]\nname = "Northwind"\n'


def test_help_and_errors_name_the_sources_table_as_written(tmp_path: Path) -> None:
    """Rich reads ``[...]`` as markup: the table's name must survive it."""
    res = runner.invoke(app, ["connect", "--help"], terminal_width=200)
    assert "Run only these [[sources]]" in " ".join(res.output.split())
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE)
    res = runner.invoke(app, ["connect", "-c", str(cfg)])
    assert res.exit_code == 2 and "no [[sources]] in the config" in " ".join(res.output.split())


def test_list_shows_every_kind_with_its_mode_and_credentials() -> None:
    res = runner.invoke(app, ["connect", "--list", "--json"])
    assert res.exit_code == 0, res.output
    kinds = {r["kind"]: r for r in json.loads(res.stdout)}
    assert set(kinds) >= {
        "rss",
        "hackernews",
        "reddit",
        "mastodon",
        "bluesky",
        "appstore",
        "googleplay",
        "stripe",
        "shopify",
        "typeform",
        "surveymonkey",
        "trustpilot",
        "webhook",
    }
    assert kinds["reddit"]["credentials"] == ["client_id", "client_secret"] and kinds["reddit"]["mode"] == "pull"
    assert kinds["bluesky"]["mode"] == "stream" and kinds["stripe"]["mode"] == "push"
    table = runner.invoke(app, ["connect", "--list"])
    assert table.exit_code == 0 and "Stripe-Signature" in table.stdout


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            'kind = "reddit"\naccounts = ["travel"]\ncredentials = { client_secret = "hunter2-s3cret" }',
            "credentials.client_secret must be the NAME of an environment variable",
        ),
        ('kind = "carrier-pigeon"', "sources.s.kind: no connector of kind 'carrier-pigeon'; known kinds: "),
        ('kind = "rss"', "sources.s (rss): set feeds (the rss source has nothing to follow)"),
        (
            'kind = "rss"\nfeeds = ["http://x"]\noptions = { colour = "red" }',
            "options.colour: Extra inputs are not permitted",
        ),
        ('kind = "replay"', "'replay' is not a live source"),
    ],
)
def test_bad_source_config_fails_in_one_line_naming_the_key(tmp_path: Path, source: str, message: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'{BASE}[[sources]]\nname = "s"\n{source}\n')
    res = runner.invoke(app, ["connect", "-c", str(cfg)])
    assert res.exit_code == 2
    out = " ".join(res.output.split())
    assert message in out and "Traceback" not in out and "hunter2" not in out


def shifted_to_now(xml: str) -> str:
    """``xml`` with every RFC 822 date moved by one offset, so that its newest is a minute ago:
    a worker judges live events and dead-letters what is older than its horizon (days)."""
    pattern = r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT"
    newest = max(parsedate_to_datetime(d) for d in re.findall(pattern, xml))
    offset = datetime.now(UTC) - timedelta(minutes=1) - newest
    return re.sub(pattern, lambda m: format_datetime(parsedate_to_datetime(m[0]) + offset, usegmt=True), xml)


def news_feed(p: Platform, tmp_path: Path, *, live: bool = False) -> Path:
    """The Google News fixture served at ``/news`` (``live``: its dates moved to the last
    minutes), and a config with one rss source reading it."""

    async def feed(request: web.Request) -> web.Response:
        text = fixture("google_news_rss.xml")
        return web.Response(text=shifted_to_now(text) if live else text, content_type="application/rss+xml")

    p.route("GET", "/news", feed)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'{BASE}[[sources]]\nname = "news"\nkind = "rss"\nfeeds = ["{p.url}/news"]\n')
    return cfg


def connect_env(kafka_bootstrap: str, redis_url: str, prefix: str) -> dict[str, str]:
    """The environment of a ``repmon connect`` process on the test's Kafka and Redis, its topics
    and keys under ``prefix``."""
    return {
        **os.environ,
        "REPMON_KAFKA__BOOTSTRAP": kafka_bootstrap,
        "REPMON_REDIS__URL": redis_url,
        "REPMON_KAFKA__TOPIC_PREFIX": prefix,
        "REPMON_REDIS__KEY_PREFIX": prefix,
        "REPMON_KAFKA__PARTITIONS": "1",
    }


async def connect_once(cfg: Path, env: dict[str, str], *names: str) -> dict[str, Any]:
    """``repmon connect --once --json [NAME...]`` as a process; its JSON summary."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli.main",
        "connect",
        "--once",
        "--json",
        "-c",
        str(cfg),
        "--loglevel",
        "warning",
        *names,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, errb = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, errb.decode()[-2000:]
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


@pytest.mark.integration
async def test_connect_once_delivers_a_feed_and_a_second_run_resumes_without_resending(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, unique: str
) -> None:
    async with Platform() as p:
        cfg = news_feed(p, tmp_path)
        env = connect_env(kafka_bootstrap, redis_url, unique)
        outs: list[dict[str, Any]] = []
        for _ in range(2):
            outs.append(await connect_once(cfg, env))
    assert outs[0]["sources"] == {"news": "done"} and outs[0]["sent"] == 3
    assert outs[1]["sent"] == 0 and outs[1]["per_source"]["news"]["duplicates"] == 3
    ids = ids_of(read_topic(kafka_bootstrap, f"{unique}.raw"))
    assert sorted(ids) == sorted(
        [
            "<malformed>",
            "rss:CBMiK2h0dHBzOi8vbmV3cy5leGFtcGxlLmNvbS9ub3J0aHdpbmQtb3V0YWdl",
            "rss:CBMiKmh0dHBzOi8vZGFpbHkuZXhhbXBsZS5vcmcvbm9ydGh3aW5kLXJlYm9vaw",
        ]
    )


def two_feeds(p: Platform, tmp_path: Path) -> Path:
    """``news_feed``'s config plus a second rss source, ``forum``, reading the Atom fixture."""

    async def forum(request: web.Request) -> web.Response:
        return web.Response(text=fixture("blog_atom.xml"), content_type="application/atom+xml")

    p.route("GET", "/forum.atom", forum)
    cfg = news_feed(p, tmp_path)
    cfg.write_text(cfg.read_text() + f'[[sources]]\nname = "forum"\nkind = "rss"\nfeeds = ["{p.url}/forum.atom"]\n')
    return cfg


@pytest.mark.integration
async def test_connect_with_a_name_runs_only_that_source(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, unique: str
) -> None:
    async with Platform() as p:
        cfg = two_feeds(p, tmp_path)
        env = connect_env(kafka_bootstrap, redis_url, unique)
        out = await connect_once(cfg, env, "news")
        assert len(p.hits("/news")) == 1 and p.hits("/forum.atom") == []
    assert out["sources"] == {"news": "done"} and set(out["per_source"]) == {"news"}
    ids = ids_of(read_topic(kafka_bootstrap, f"{unique}.raw"))
    assert ids and not any(i.startswith("rss:tag:forum.example.com") for i in ids)


def test_connect_with_an_unknown_name_fails_in_one_line_listing_the_configured_ones(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    entry = '[[sources]]\nname = "{0}"\nkind = "rss"\nfeeds = ["http://127.0.0.1:9/{0}"]\n'
    feeds = "".join(entry.format(n) for n in ("news", "forum"))
    cfg.write_text(BASE + feeds)
    for names in (["nope"], ["news", "nope"]):
        res = runner.invoke(app, ["connect", "--once", "-c", str(cfg), *names])
        assert res.exit_code == 2
        assert res.output.strip().splitlines() == ["no [[sources]] named nope; configured: news, forum"]


def test_the_readme_example_config_builds_every_source() -> None:
    import tomllib

    from cli.connect import build_sources
    from infra.settings import load_settings

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("## Sources", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    data = tomllib.loads(block)
    settings = load_settings(None, sources=data["sources"], connect=data["connect"])
    sources, problems = build_sources(list(settings.sources), None, env={})
    assert problems == []
    assert {s.kind for s in sources} == {
        r["kind"] for r in json.loads(runner.invoke(app, ["connect", "--list", "--json"]).stdout)
    }


@pytest.mark.integration
async def test_connect_next_to_a_worker_delivers_the_feed_enriched(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, unique: str
) -> None:
    """What an operator runs: `repmon connect` and `repmon worker` on one Kafka and one Redis; the
    feed's items come out on the enriched topic, matched to the tracked brand, the undated entry
    dead-lettered by the connector."""
    prefix = f"cw{unique}"
    env = worker_env(kafka_bootstrap, redis_url, prefix, tmp_path, partitions=1)
    async with Platform() as p:
        cfg = news_feed(p, tmp_path, live=True)
        with WorkerProcess(env, tmp_path / "worker.log", config=cfg) as worker:
            assert (await connect_once(cfg, {**os.environ, **env}))["sent"] == 3
            enriched, dead = f"{prefix}.enriched", f"{prefix}.deadletter"
            tail = TopicTail(kafka_bootstrap, [enriched, dead], keep=[enriched, dead])
            try:
                ok = await asyncio.to_thread(
                    wait_until, lambda: not worker.alive() or (tail.count(enriched) >= 2 and tail.count(dead) >= 1), 120
                )
                assert worker.alive() and ok, worker.tail()
                docs = [json.loads(v) for v in tail.values(enriched)]
                letters = [json.loads(v) for v in tail.values(dead)]
            finally:
                tail.stop()
    assert len(letters) == 1 and "no published or updated date" in json.dumps(letters[0])
    assert sorted(d["event_id"] for d in docs) == [
        "rss:CBMiK2h0dHBzOi8vbmV3cy5leGFtcGxlLmNvbS9ub3J0aHdpbmQtb3V0YWdl",
        "rss:CBMiKmh0dHBzOi8vZGFpbHkuZXhhbXBsZS5vcmcvbm9ydGh3aW5kLXJlYm9vaw",
    ]
    assert all(d["entity"] == "northwind" and d["sentiment"] and d["lang"] for d in docs)


@pytest.mark.integration
async def test_connect_healthz_reports_a_redis_outage_and_the_recovery(
    tmp_path: Path, kafka_bootstrap: str, unique: str
) -> None:
    """``/healthz`` on the metrics port: 200 with Kafka and Redis up and the source running; 503
    naming Redis while its server is gone; 200 again once it is back, with nothing restarted."""
    rport, mport = free_port(), free_port()

    def health() -> tuple[int, dict[str, Any]]:
        try:
            r = httpx.get(f"http://127.0.0.1:{mport}/healthz", timeout=5)
        except httpx.HTTPError:
            return 0, {}
        return r.status_code, r.json()

    def healthy() -> bool:
        code, doc = health()
        return code == 200 and doc.get("dependencies") == {"kafka": "up", "redis": "up"}

    async with Platform() as p:
        cfg = news_feed(p, tmp_path)
        env = {
            **connect_env(kafka_bootstrap, f"redis://127.0.0.1:{rport}/0", unique),
            "REPMON_CONNECT__METRICS_PORT": str(mport),
        }
        redis = contextlib.ExitStack()
        redis.enter_context(redis_server(rport))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", "connect", "-c", str(cfg), "--loglevel", "warning", env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert await asyncio.to_thread(wait_until, healthy, 60, 0.2), health()
            assert health()[1]["sources"] == {"news": "running"}
            redis.close()  # the outage
            assert await asyncio.to_thread(wait_until, lambda: health()[0] == 503, 30, 0.2), health()
            doc = health()[1]
            assert doc["status"] == "outage" and doc["dependencies"] == {"kafka": "up", "redis": "down"}, doc
            redis.enter_context(redis_server(rport))  # back on the same address
            assert await asyncio.to_thread(wait_until, healthy, 30, 0.2), health()
        finally:
            proc.terminate()
            _, err = await asyncio.wait_for(proc.communicate(), 60)
            redis.close()
        assert proc.returncode == 0, err.decode()[-2000:]
