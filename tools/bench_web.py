"""``repmon bench --web``: the war room under load, on the embedded broker and Redis (loopback only).

- **live clients**: ``clients`` concurrent SSE connections to ``/api/v1/events``; ``incidents``
  incident messages published on Kafka one by one; for each client and message, the time from the
  publish to the event arriving at the client (what a page reacts to), and whether every client got
  every message;
- **mention stream at a rate**: ``rate`` enriched mentions/s for ``seconds`` s published while one
  client follows ``/api/v1/stream/mentions``: what the server matched per second, and the most it
  sent in one frame (at most ``web.stream_per_second``, whatever the rate);
- **the page in a browser at that rate**: the ``/mentions`` page open in headless chromium while
  the same rate is published: how late a 50 ms timer fires on the page's main thread (what a click
  or a scroll waits for), its long tasks (> 50 ms, the browser's own measure), how long a script
  sent to the page takes to come back, the rows the page holds and its JS heap before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from kafka import KafkaProducer
from rich.console import Console

from contract.records import TOPICS, EnrichedEvent, Incident, Sentiment, dumps
from infra.embedded import EmbeddedBroker, EmbeddedRedis
from infra.kafka import ensure_topics
from infra.settings import Settings
from web.serve import WebThread

__all__ = ["PageWatch", "bench_web", "follow_sse"]


async def follow_sse(
    client: httpx.AsyncClient,
    path: str,
    on_event: Any,
    connected: asyncio.Event,
    stop: asyncio.Event,
    headers: dict[str, str] | None = None,
) -> None:
    """Follow an SSE endpoint: ``on_event(event, data, arrival time, event id)`` per event; ``connected`` is set at
    the server's first comment; returns when ``stop`` is set (checked as lines arrive)."""
    async with client.stream("GET", path, timeout=None, headers=headers) as resp:
        resp.raise_for_status()
        event, data, event_id = "", "", ""
        async for line in resp.aiter_lines():
            if line.startswith(":"):
                connected.set()
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
            elif line.startswith("id:"):
                event_id = line[3:].strip()
            elif not line:
                if event:
                    on_event(event, data, time.time(), event_id)
                event, data = "", ""
            if stop.is_set():
                return


class PageWatch:
    """An open war-room page, as far as timing goes: a thread following ``/api/v1/events`` (the
    SSE stream the pages update from) that records when each incident message arrived there.
    ``arrived[(incident_id, seq)]`` is the wall time the page could draw it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.arrived: dict[tuple[str, int], float] = {}
        self._connected = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, name="repmon-page-watch", daemon=True)

    def _on(self, event: str, data: str, at: float, _: str) -> None:
        if event == "incident":
            d = orjson.loads(data)
            self.arrived.setdefault((d["incident_id"], int(d["seq"])), at)

    def _run(self) -> None:
        async def follow() -> None:
            connected, stop = asyncio.Event(), asyncio.Event()
            async with httpx.AsyncClient(base_url=self.url) as client:
                task = asyncio.create_task(follow_sse(client, "/api/v1/events", self._on, connected, stop))
                self._loop, self._task = asyncio.get_running_loop(), task
                waiter = asyncio.create_task(connected.wait())
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
                self._connected.set()
                waiter.cancel()
                with contextlib.suppress(httpx.HTTPError, asyncio.CancelledError):
                    await task  # until __exit__ cancels it (the stream never ends by itself)

        asyncio.run(follow())

    def __enter__(self) -> PageWatch:
        self._thread.start()
        if not self._connected.wait(60) or self._task is None or self._task.done():
            raise RuntimeError(f"the war room at {self.url} sent no live events stream within 60 s")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(10)


def _incident(i: int, at: datetime) -> Incident:
    return Incident(
        incident_id=f"inc-bench-{i}",
        entity="northwind",
        status="open",
        seq=1,
        severity="critical",
        opened_at=at,
        updated_at=at,
        title=f"bench incident {i}",
        summary="bench",
    )


def _mention(i: int, at: datetime) -> EnrichedEvent:
    label = "negative" if i % 3 == 0 else "positive"
    return EnrichedEvent(
        event_id=f"bench:{i}",
        kind="mention",
        source="bench",
        occurred_at=at,
        ingested_at=at,
        entity="northwind",
        sentiment=Sentiment(score=-0.5 if label == "negative" else 0.5, label=label, confidence=0.9, model_version="b"),
        lang="en",
        text_redacted=f"bench mention {i}",
    )


async def _live_clients(url: str, producer: KafkaProducer, topic: str, clients: int, incidents: int) -> dict[str, Any]:
    got: list[dict[str, float]] = [{} for _ in range(clients)]
    stop = asyncio.Event()
    conns = [asyncio.Event() for _ in range(clients)]
    limits = httpx.Limits(max_connections=clients + 10)
    async with httpx.AsyncClient(base_url=url, limits=limits) as client:

        def recorder(i: int) -> Any:
            def on(event: str, data: str, at: float, _: str) -> None:
                if event == "incident":
                    got[i][orjson.loads(data)["incident_id"]] = at

            return on

        tasks = [
            asyncio.create_task(follow_sse(client, "/api/v1/events", recorder(i), conns[i], stop))
            for i in range(clients)
        ]
        await asyncio.wait_for(asyncio.gather(*(c.wait() for c in conns)), 60)
        sent: dict[str, float] = {}
        now = datetime.now(UTC)
        for i in range(incidents):
            inc = _incident(i, now)
            sent[inc.incident_id] = time.time()
            future = producer.send(topic, dumps(inc), key=b"northwind")
            await asyncio.to_thread(future.get, 10)  # acknowledged by the broker, off the loop
            await asyncio.sleep(0.1)  # one crisis message at a time, as a worker publishes them
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum(len(g) for g in got) < clients * incidents:
            await asyncio.sleep(0.1)
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    lat = sorted(g[iid] - at for g in got for iid, at in sent.items() if iid in g)
    return {
        "clients": clients,
        "incident_messages": incidents,
        "deliveries": len(lat),
        "expected_deliveries": clients * incidents,
        "publish_to_client_p50_s": round(statistics.median(lat), 4) if lat else None,
        "publish_to_client_p99_s": round(lat[int(0.99 * (len(lat) - 1))], 4) if lat else None,
    }


def _publish_mentions(producer: KafkaProducer, topic: str, rate: int, seconds: int) -> int:
    """Publish enriched mentions at ``rate`` a second for ``seconds`` s; returns how many."""
    now = datetime.now(UTC)
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        target = int((time.monotonic() - t0) * rate)
        while n < target:
            producer.send(topic, dumps(_mention(n, now + timedelta(milliseconds=n))), key=b"northwind")
            n += 1
        time.sleep(0.005)
    producer.flush(30)
    return n


async def _stream_at_rate(url: str, producer: KafkaProducer, topic: str, rate: int, seconds: int) -> dict[str, Any]:
    frames: list[dict[str, Any]] = []
    stop, connected = asyncio.Event(), asyncio.Event()
    async with httpx.AsyncClient(base_url=url) as client:
        task = asyncio.create_task(
            follow_sse(
                client, "/api/v1/stream/mentions", lambda e, d, at, i: frames.append(orjson.loads(d)), connected, stop
            )
        )
        await asyncio.wait_for(connected.wait(), 30)
        sent = await asyncio.to_thread(_publish_mentions, producer, topic, rate, seconds)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and sum(f["matched"] for f in frames) < sent:
            await asyncio.sleep(0.2)
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    busy = [f for f in frames if f["matched"]]
    return {
        "rate_mentions_per_s": rate,
        "sent": sent,
        "matched_by_server": sum(f["matched"] for f in frames),
        "frames": len(busy),
        "max_matched_per_frame": max((f["matched"] for f in busy), default=0),
        "max_items_sent_per_frame": max((len(f["items"]) for f in busy), default=0),
    }


# runs on the page: a 50 ms timer's lateness and the browser's long tasks, from now on
PROBE_JS = """
window.__probe = {late: [], long: [], heap0: (performance.memory || {}).usedJSHeapSize || null};
var last = performance.now();
setInterval(function () { var now = performance.now(); window.__probe.late.push(now - last - 50); last = now; }, 50);
try {
  new PerformanceObserver(function (list) {
    list.getEntries().forEach(function (e) { window.__probe.long.push(e.duration); });
  }).observe({entryTypes: ["longtask"]});
} catch (e) { window.__probe.long = null; }
"""
COLLECT_JS = """
var p = window.__probe;
return {late: p.late, long: p.long, heap0: p.heap0, heap1: (performance.memory || {}).usedJSHeapSize || null,
        rows: document.getElementById("stream").children.length,
        status: document.getElementById("live-status").textContent};
"""


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def _page_in_browser(url: str, producer: KafkaProducer, topic: str, rate: int, seconds: int) -> dict[str, Any]:
    """The /mentions page in headless chromium while ``rate`` mentions/s are published."""
    from tools.browser import headless_chromium, missing

    why = missing()
    if why is not None:
        return {"skipped": why}
    with headless_chromium() as driver:
        driver.get(f"{url}/mentions")
        deadline = time.monotonic() + 30
        while driver.execute_script('return document.getElementById("live-status").textContent') != "live":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the mention stream page at {url}/mentions did not go live within 30 s")
            time.sleep(0.1)
        driver.execute_script(PROBE_JS)
        trips: list[float] = []
        stop = threading.Event()

        def produce() -> None:
            _publish_mentions(producer, topic, rate, seconds)
            stop.set()

        feeder = threading.Thread(target=produce, name="repmon-bench-page", daemon=True)
        feeder.start()
        while not stop.wait(0.25):  # a script sent to the page and back: its main thread is free
            t = time.perf_counter()
            driver.execute_script("return 1")
            trips.append((time.perf_counter() - t) * 1000)
        feeder.join()
        time.sleep(1.5)  # the server's last frame (one a second) reaches the page
        got = driver.execute_script(COLLECT_JS)
    late = [max(0.0, float(x)) for x in got["late"]]
    long = [float(x) for x in got["long"]] if got["long"] is not None else None
    heap = (got["heap0"], got["heap1"])
    return {
        "rate_mentions_per_s": rate,
        "seconds": seconds,
        "timer_late_ms_p50": round(_pct(late, 0.5), 1),
        "timer_late_ms_p99": round(_pct(late, 0.99), 1),
        "timer_late_ms_max": round(max(late, default=0.0), 1),
        "long_tasks": len(long) if long is not None else None,
        "long_task_ms_max": round(max(long, default=0.0), 1) if long is not None else None,
        "script_round_trip_ms_p50": round(_pct(trips, 0.5), 1),
        "script_round_trip_ms_max": round(max(trips, default=0.0), 1),
        "rows_in_page": int(got["rows"]),
        "js_heap_mb_before": round(heap[0] / 1e6, 1) if heap[0] else None,
        "js_heap_mb_after": round(heap[1] / 1e6, 1) if heap[1] else None,
        "still_live": got["status"] == "live",
    }


def bench_web(
    settings: Settings,
    *,
    clients: int = 100,
    incidents: int = 20,
    rate: int = 1000,
    seconds: int = 5,
    page_seconds: int = 20,
    console: Console,
) -> dict[str, Any]:
    """``page_seconds``: long enough for the page to reach its row cap, so a growing page shows."""
    # the bench's clients all come from one address: lift the per-client request rate for them
    web = settings.web.model_copy(update={"requests_per_second": float(clients * 10)})
    settings = settings.model_copy(update={"web": web})
    workdir = Path(tempfile.mkdtemp(prefix="repmon-bench-web-"))
    with EmbeddedBroker() as broker, EmbeddedRedis(workdir / "redis.db") as er:
        topics = {t: settings.topic(t) for t in TOPICS}
        ensure_topics(broker.bootstrap, topics.values(), settings.kafka.partitions)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
        try:
            with WebThread(settings, redis_url=er.url, bootstrap=broker.bootstrap, port=0) as w:
                console.print(f"bench: {clients} live clients on {w.url}, {incidents} incident messages ...")
                live = asyncio.run(_live_clients(w.url, producer, topics["incidents"], clients, incidents))
                console.print(f"bench: the mention stream at {rate} mentions/s for {seconds} s ...")
                stream = asyncio.run(_stream_at_rate(w.url, producer, topics["enriched"], rate, seconds))
                console.print(f"bench: the /mentions page in chromium at {rate} mentions/s for {page_seconds} s ...")
                page = _page_in_browser(w.url, producer, topics["enriched"], rate, page_seconds)
        finally:
            producer.close(10)
    return {
        "live_clients": live,
        "mention_stream": stream,
        "page_in_browser": page,
        "stream_per_second": settings.web.stream_per_second,
    }
