"""``repmon bench --faults``: the pipeline under real faults, against the same run without them.

Two ``repmon worker`` processes on Apache Kafka share a generated stream (a crisis inside days of
ordinary traffic) while this harness, as an operator's bad day would:

- kills one of them with SIGKILL every ``kill_every`` seconds and starts it again, until every
  event is enriched;
- makes the alert receiver (a real local HTTP server behind an Apprise ``json://`` route) answer
  500 for ``receiver_down`` seconds, from the first notification on;
- kills Redis once (a redis-server of its own, with an append-only file) and starts it again.

Then it checks what a user relies on: no event lost (every valid event reaches the enriched
topic), none counted twice (the windows' ``counted`` equals the (event, entity) pairs of the
distinct enriched events), every notification taken once by ``Idempotency-Key`` and in ``seq``
order per thread, every ``open`` / ``escalated`` / ``resolved`` message published delivered, and
the incident ids equal to those of the same stream run with no fault. A benchmark, not a test:
its figures are read, not asserted.

The fleet's sentiment model learns from the stream's review ratings while it runs, and which
snapshot scores an event depends on wall time (when the learner published, when a worker loaded
it), so two runs score marginal texts differently even with no fault at all, and a bucket near a
threshold can open a thread a minute apart. ``frozen_model`` runs both with ``sentiment.frozen``:
every event scored by the same model, so any difference left in the incident ids is the faults'.

Needs Apache Kafka (``REPMON_KAFKA__BOOTSTRAP``, e.g. ``infra/kafka/kafka.sh start``): the
embedded broker keeps no consumer-group state worth failing over.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis
from rich.console import Console

from connectors.base import KafkaSink
from connectors.demo import generate
from contract.records import TOPICS
from infra.kafka import TopicTail, ensure_topics
from infra.settings import Settings
from tools.receiver import HttpReceiver, Received
from tools.stack import RedisServer, WorkerProcess, pings, worker_env

__all__ = ["bench_faults"]

START = datetime(2026, 11, 2, tzinfo=UTC)
THREAD = re.compile(r"\(thread (\S+) #(\d+)\)")


class _Tail(TopicTail):
    """Reads the enriched and incidents topics from the start: distinct events and their entity
    pairs (what the windows must have counted), and every incident message. Each message is parsed
    once, as it arrives (200,000 events are too many to parse again on every look)."""

    def __init__(self, bootstrap: str, enriched: str, incidents: str) -> None:
        self.enriched, self.incidents = enriched, incidents
        self.pairs: dict[str, int] = {}
        self.incident_msgs: list[dict[str, Any]] = []
        super().__init__(bootstrap, [enriched, incidents])

    def take(self, topic: str, values: list[bytes]) -> None:
        for v in values:
            doc = orjson.loads(v)
            if topic == self.incidents:
                self.incident_msgs.append(doc)
                continue
            keys = {e["key"] for e in doc.get("entities") or []}
            if doc.get("entity"):
                keys.add(doc["entity"])
            self.pairs[doc["event_id"]] = len(keys)

    def snapshot(self) -> tuple[int, int, int, list[dict[str, Any]]]:
        """(distinct events, their entity pairs, enriched messages, incident messages)."""
        with self._lock:
            n = self.counts[self.enriched]
            return len(self.pairs), sum(self.pairs.values()), n, list(self.incident_msgs)


def _valid(rows: list[Any]) -> list[dict[str, Any]]:
    return [r for r in rows if isinstance(r, dict) and "_malformed" not in r]


def _events(settings: Settings, events: int) -> list[dict[str, Any]]:
    """About ``events`` valid generated events: days of ordinary traffic with one crisis at 80 %
    of the stream, so every thread it opens also resolves before the end."""
    per_minute = len(_valid(generate(settings.entities, start=START, minutes=1440, crisis_at_minute=10_000))) / 1440
    minutes = max(240, round(events / per_minute))
    return _valid(generate(settings.entities, start=START, minutes=minutes, crisis_at_minute=int(minutes * 0.8)))


def _worker_env(
    bootstrap: str, redis_url: str, prefix: str, workdir: Path, url: str, *, frozen_model: bool
) -> dict[str, str]:
    route = {"name": "oncall", "urls": [url], "min_severity": "warning", "rate_per_second": 20}
    extra = {
        "REPMON_SENTIMENT__FROZEN": str(frozen_model).lower(),
        "REPMON_WINDOWS__BACKFILL_SINCE": START.isoformat(),  # generated history: backfill mode
        "REPMON_ALERTS__ROUTES": json.dumps([route]),
        "REPMON_ALERTS__CONSOLE": "false",
        # a receiver down for a minute is retried soon after it is back, and updates are grouped
        # for seconds, not the production ten minutes, so the run ends in minutes
        "REPMON_ALERTS__RETRY_BACKOFF_MAX_SECONDS": "10",
        "REPMON_ALERTS__COOLDOWN_SECONDS": "5",
    }
    return worker_env(bootstrap, redis_url, prefix, workdir, partitions=4, **extra)


def _run(
    settings: Settings,
    rows: list[dict[str, Any]],
    bootstrap: str,
    *,
    faults: bool,
    rate: int,
    kill_every: float,
    receiver_down: float,
    timeout: float,
    frozen_model: bool,
    console: Console,
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="repmon-bench-faults-"))
    prefix = f"bf{'f' if faults else 'r'}{int(time.time())}"
    topics = {t: f"{prefix}.{t}" for t in TOPICS}
    ensure_topics(bootstrap, topics.values(), 4)
    server = RedisServer(workdir)
    server.start()
    r = redis.Redis.from_url(server.url)
    counted = lambda: int(r.hget(f"{prefix}:stats", "counted") or 0) if pings(r) else -1  # noqa: E731
    log: list[str] = []
    kills = redis_restarts = 0
    # an interrupted bench (Ctrl-C, SIGTERM) stops every process it started, not only a finished one
    with contextlib.ExitStack() as stack, HttpReceiver(dedupe=True) as rx:
        stack.callback(server.kill)
        stack.callback(r.close)
        env = _worker_env(bootstrap, server.url, prefix, workdir, rx.apprise_url("/oncall"), frozen_model=frozen_model)
        n_started = 0

        def start_worker() -> WorkerProcess:
            nonlocal n_started
            n_started += 1
            return WorkerProcess(env, workdir / f"worker{n_started}.log")

        workers = [start_worker(), start_worker()]
        stack.callback(lambda: [w.stop() for w in workers])
        tail = _Tail(bootstrap, topics["enriched"], topics["incidents"])
        stack.callback(tail.stop)
        produced = threading.Event()
        sink_error: list[str] = []

        def produce() -> None:
            sink = KafkaSink(bootstrap, topics["raw"])
            try:
                t0 = time.monotonic()
                for i, row in enumerate(rows):
                    sink.send_any(row)
                    if i % 500 == 499:  # paced: the faults land while the stream flows
                        sink.flush()
                        ahead = (i + 1) / rate - (time.monotonic() - t0)
                        if ahead > 0:
                            time.sleep(ahead)
                sink.flush()
            except Exception as exc:  # reported, not raised: the bench still stops its processes
                sink_error.append(f"{type(exc).__name__}: {exc}")
            finally:
                sink.close()
                produced.set()

        t0 = time.monotonic()
        producer = threading.Thread(target=produce, daemon=True, name="bench-faults-produce")
        producer.start()
        want = len(rows)
        next_kill = t0 + kill_every
        # the receiver goes down when the first notification has arrived (so the outage meets the
        # crisis, however long enrichment takes to reach it); Redis dies once, mid-stream
        down_at: float | None = None
        up_at, redis_at = float("inf"), t0 + 45.0
        down = False

        def done() -> bool:
            events, pairs, _, incidents = tail.snapshot()
            if not produced.is_set() or events < want or counted() < pairs:
                return False
            opened = {i["incident_id"] for i in incidents if i["status"] == "open"}
            closed = {i["incident_id"] for i in incidents if i["status"] == "resolved"}
            return opened <= closed and _undelivered(incidents, rx.requests) == []

        deadline = t0 + timeout
        while time.monotonic() < deadline and not done():
            now = time.monotonic()
            # a worker dies every kill_every seconds for as long as the stream is being worked through
            if faults and tail.snapshot()[0] < want and now >= next_kill:
                victim = kills % 2
                workers[victim].proc.send_signal(signal.SIGKILL)
                workers[victim].proc.wait(10)
                workers[victim].stop()
                workers[victim] = start_worker()
                kills += 1
                next_kill = now + kill_every
                log.append(f"{now - t0:.0f}s kill -9 worker (#{kills})")
            if faults and down_at is None and rx.requests:
                rx.fail(500)
                down, down_at, up_at = True, now, now + receiver_down
                log.append(f"{now - t0:.0f}s receiver answers 500 (after the first notification)")
            if faults and down and now >= up_at:
                rx.recover()
                down = False
                log.append(f"{now - t0:.0f}s receiver back")
            if faults and redis_restarts == 0 and now >= redis_at:
                server.kill()
                time.sleep(1.5)  # an outage the workers must wait out, not a blink
                server.start()
                redis_restarts = 1
                log.append(f"{now - t0:.0f}s Redis killed and restarted")
            console.print(
                f"bench faults ({'faults' if faults else 'reference'}): {tail.snapshot()[0]}/{want} events, "
                f"{len(rx.requests)} notifications, {kills} kills",
                end="\r",
            )
            time.sleep(0.5)
        rx.recover()
        elapsed = time.monotonic() - t0
        finished = done()
        events, pairs, enriched_msgs, incidents = tail.snapshot()
        n_counted = counted()
        accepted, attempts = rx.requests, rx.attempts
        tail.stop()
        alive = [w.alive() for w in workers]
        for w in workers:
            w.stop()
    console.print()
    sent_ids = {row["event_id"] for row in rows}
    return {
        "complete": finished,
        "seconds": round(elapsed, 1),
        "events": want,
        "enriched_distinct": events,
        "enriched_messages": enriched_msgs,
        "lost": want - events,
        "unexpected": events - len(sent_ids & set(tail.pairs)),
        "counted_pairs": n_counted,
        "expected_pairs": pairs,
        "double_counted": n_counted - pairs,
        "faults": {"kills": kills, "redis_restarts": redis_restarts, "receiver_down_s": receiver_down if faults else 0},
        "fault_log": log,
        "workers_alive_at_end": alive,
        "producer_error": sink_error[0] if sink_error else None,
        "incidents": sorted({i["incident_id"] for i in incidents}),
        "incident_messages": len(incidents),
        "notifications": _notifications(incidents, accepted, attempts),
    }


def _thread_of(req: Received) -> tuple[str, int] | None:
    m = THREAD.search(req.title) or THREAD.search(req.message)
    return (m.group(1), int(m.group(2))) if m else None


def _undelivered(incidents: list[dict[str, Any]], accepted: list[Received]) -> list[tuple[str, int]]:
    """The open, escalated and resolved messages published at warning or above that the receiver
    never took (updates may be grouped by the cooldown, so they are not required)."""
    got = {t for t in map(_thread_of, accepted) if t}
    must = {
        (i["incident_id"], i["seq"])
        for i in incidents
        if i["status"] in ("open", "escalated", "resolved") and i["severity"] in ("warning", "critical")
    }
    return sorted(must - got)


def _notifications(
    incidents: list[dict[str, Any]], accepted: list[Received], attempts: list[Received]
) -> dict[str, Any]:
    by_thread: dict[str, list[int]] = {}
    for t in filter(None, map(_thread_of, accepted)):
        by_thread.setdefault(t[0], []).append(t[1])
    keys = [a.idempotency_key for a in attempts if a.ok]
    return {
        "accepted": len(accepted),
        "attempts": len(attempts),
        "failed_attempts": sum(not a.ok for a in attempts),
        "taken_twice_by_key": len(keys) - len(set(keys)),
        "out_of_order_threads": sorted(t for t, seqs in by_thread.items() if seqs != sorted(set(seqs))),
        "undelivered_open_escalated_resolved": _undelivered(incidents, accepted),
    }


def bench_faults(
    settings: Settings,
    *,
    events: int = 200_000,
    rate: int = 1000,
    kill_every: float = 20.0,
    receiver_down: float = 60.0,
    timeout: float = 3600.0,
    frozen_model: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the stream with faults, then without, and compare (see the module docstring)."""
    console = console or Console(stderr=True)
    bootstrap = os.environ.get("REPMON_KAFKA__BOOTSTRAP")
    if not bootstrap:
        return {
            "error": "bench --faults needs Apache Kafka: start it (infra/kafka/kafka.sh start) and set "
            "REPMON_KAFKA__BOOTSTRAP=127.0.0.1:19092"
        }
    rows = _events(settings, events)
    console.print(
        f"bench faults: {len(rows)} events, kill -9 every {kill_every:g} s, receiver down {receiver_down:g} s"
    )
    kw: dict[str, Any] = {
        "rate": rate,
        "kill_every": kill_every,
        "receiver_down": receiver_down,
        "timeout": timeout,
        "frozen_model": frozen_model,
    }
    with_faults = _run(settings, rows, bootstrap, faults=True, console=console, **kw)
    console.print("bench faults: the same stream with no fault (reference) ...")
    reference = _run(settings, rows, bootstrap, faults=False, console=console, **kw)
    n = with_faults["notifications"]
    return {
        "events": len(rows),
        "sentiment": "frozen" if frozen_model else "learning",
        "with_faults": with_faults,
        "reference": reference,
        "verdict": {
            "zero_lost": with_faults["lost"] == 0,
            "zero_double_counted": with_faults["double_counted"] == 0,
            "notifications_once_by_key": n["taken_twice_by_key"] == 0,
            "in_order_per_thread": n["out_of_order_threads"] == [],
            "every_open_escalated_resolved_delivered": n["undelivered_open_escalated_resolved"] == [],
            "incident_ids_identical_to_reference": with_faults["incidents"] == reference["incidents"],
        },
    }
