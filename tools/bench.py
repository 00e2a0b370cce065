"""``repmon bench``: how fast the pipeline runs, and how much of it the pipeline itself costs.

In one run:

- ``enrichment``: the enrichment functions alone (spaCy + language + PII + sentiment, the same
  :class:`~streams.enrich.EnrichStage` the worker runs), on one core, in events/s, on generated
  events whose texts never repeat (no cache of the pipeline is timed warm);
  ``enrichment.as_worker``: other generated events scored as a worker scores them (a frozen
  snapshot of the model the first pass learned, nothing learned inline);
- ``enrichment_real_texts``: the same with the texts of a recorded file (``--texts``, e.g. the
  airline tweets), each naming a tracked entity where it named its own account;
- ``end_to_end``: a generated stream produced into the raw topic of a real broker (the embedded
  default unless ``REPMON_KAFKA__BOOTSTRAP``/``REPMON_REDIS__URL`` point elsewhere), through a
  worker process, consumed back from the enriched topic: throughput in events/s and
  produce-to-enriched latency p50/p95/p99 in ms;
- ``pipeline_overhead_ratio``: end-to-end throughput / enrichment-alone throughput;
- ``end_to_end_workers``: the same burst through 1 and through 2 worker processes;
- ``rate_sweep``: a sustained live rate (1k, 2k, 5k events/s by default) into 2 workers: p50/p99
  produce-to-enriched at each rate and the highest rate held (every event out, p99 < 2 s, the
  bench's producer itself at the rate).

Targets are checked here, not in timed tests.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import platform
import random
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from connectors.base import KafkaSink, Malformed
from connectors.demo import generate
from contract.records import parse_raw
from infra.kafka import TopicTail
from infra.settings import Settings
from models.sentiment import SentimentModel
from streams.enrich import EnrichStage
from tools.bench_web import PageWatch
from tools.receiver import HttpReceiver
from tools.stack import LocalStack, wait_until
from web.serve import WebThread

__all__ = ["bench_enrichment", "bench_rate_sweep", "run_bench"]

BENCH_START = datetime(2026, 11, 2, tzinfo=UTC)


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile.

    >>> _percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.0
    """
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))
    return s[k]


# Details people add to a post: with one or two of them and their numbers, no text of the bench
# repeats. The demo's few dozen templates alone would: a cache keyed by the text (language ID) or
# by its tokens would then time a warm cache, not the enrichment of a live stream.
_DETAILS = [
    "flight {n} from {city}",
    "order #{o}",
    "waited {m} minutes",
    "day {d} of this",
    "booked on {day}",
    "cc @{who}{n}",
    "#{tag}",
    "seat {row}{seat}",
    "at {city} airport",
    "ticket {o} still open",
    "{m} min on hold",
    "since {day} morning",
    "gate {seat}{row}",
    "3rd time this {period}",
    "case ref {o}",
]
_CITIES = ["Denver", "Austin", "Boston", "Chicago", "Seattle", "Miami", "Dallas", "Newark", "Phoenix", "Atlanta"]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_TAGS = ["travel", "fail", "customerservice", "help", "weekend", "delay", "thanks", "refund", "app", "support"]


def _detail(rng: random.Random) -> str:
    return rng.choice(_DETAILS).format(
        n=rng.randint(10, 9999),
        city=rng.choice(_CITIES),
        o=rng.randint(10**5, 10**7),
        m=rng.randint(5, 240),
        d=rng.randint(2, 30),
        day=rng.choice(_DAYS),
        who=rng.choice(["ana", "li", "sam", "kim", "joe", "eva"]),
        tag=rng.choice(_TAGS),
        row=rng.randint(1, 40),
        seat=rng.choice("ABCDEF"),
        period=rng.choice(["week", "month", "year"]),
    )


def _sample(settings: Settings, events: int, seed: int = 7) -> list[dict[str, Any]]:
    """``events`` generated events, every text distinct (module doc)."""
    rng = random.Random(seed)
    minutes = max(10, events // 40)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    rounds = 0
    while len(out) < events:
        gen = generate(settings.entities, start=BENCH_START, minutes=minutes, seed=seed + rounds)
        for r in gen:
            if not isinstance(r, dict) or "_malformed" in r:
                continue
            r = dict(r, event_id=f"{r['event_id']}:r{rounds}") if rounds else dict(r)
            if r.get("text"):
                base, text = str(r["text"]), str(r["text"])
                while text in seen:
                    text = f"{base} {_detail(rng)}" + (f", {_detail(rng)}" if rng.random() < 0.4 else "")
                seen.add(text)
                r["text"] = text
            out.append(r)
            if len(out) == events:
                break
        rounds += 1
    return out


def read_texts(path: Path) -> list[str]:
    """The texts of a recorded file: a CSV/TSV with a ``text`` column, JSONL with ``text``, or
    one text per line. A file without any raises ``ValueError`` naming it."""
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        if path.suffix.lower() in {".csv", ".tsv"}:
            reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            if not reader.fieldnames or "text" not in reader.fieldnames:
                raise ValueError(f"{path}: no 'text' column (columns: {reader.fieldnames})")
            texts = [row["text"] for row in reader if row.get("text")]
        elif path.suffix.lower() in {".jsonl", ".ndjson"}:
            try:
                docs = [orjson.loads(line) for line in f if line.strip()]
            except orjson.JSONDecodeError as e:
                raise ValueError(f"{path}: not JSON lines ({e})") from None
            texts = [str(d["text"]) for d in docs if isinstance(d, dict) and d.get("text")]
        else:
            texts = [line.strip() for line in f if line.strip()]
    if not texts:
        raise ValueError(f"{path}: no texts")
    return texts


def _real_texts(
    rows: list[dict[str, Any]], texts: list[str], settings: Settings, seed: int = 7
) -> list[dict[str, Any]]:
    """``rows`` with recorded texts (:func:`read_texts`), each naming a tracked entity where it
    named its own account: real wording, lengths, emoji and languages at the cost they have."""
    texts = list(texts)
    rng = random.Random(seed)
    rng.shuffle(texts)
    ents = list(settings.entities)
    out = []
    for i, r in enumerate(r for r in rows if r.get("text")):
        text = texts[i % len(texts)]
        if ents:
            text = _HANDLE.sub(lambda _m: _entity_ref(rng, rng.choice(ents)), text, count=1)
        out.append(dict(r, text=text))
    return out


_HANDLE = re.compile(r"@\w+")


def _entity_ref(rng: random.Random, e: Any) -> str:
    refs = [e.name, *e.aliases, *e.handles]
    return str(rng.choice(refs))


def bench_enrichment(
    settings: Settings, rows: list[dict[str, Any]], worker_rows: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Events/s of the enrichment stage alone, single thread, after a warm-up batch; the reviews
    teach the model as they pass (the stage learns inline, as the offline tools run it).

    With ``worker_rows`` (other texts: no per-text cache is warm), also ``as_worker``: those events
    scored as a worker scores them, with a fleet snapshot of the model the first pass learned
    (frozen, :meth:`~models.sentiment.SentimentModel.freeze`) and nothing learned inline (the
    fleet's learner learns each label once, for every worker)."""
    stage = EnrichStage(settings)
    t0 = time.perf_counter()
    stage.load_models()
    load_s = time.perf_counter() - t0
    stage.freeze_heap()  # as the worker does once its models are loaded
    recs = [parse_raw(r) for r in rows]
    bs = settings.nlp.batch_size
    stage.enrich_docs(recs[:bs])  # warm-up
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    for i in range(0, len(recs), bs):  # what the worker runs on its NLP thread
        stage.enrich_docs(recs[i : i + bs])
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    out: dict[str, Any] = {
        "profile": settings.nlp.profile,
        "events": len(recs),
        "events_per_s": round(len(recs) / wall, 1),
        "events_per_cpu_s": round(len(recs) / cpu, 1) if cpu > 0 else None,
        "model_load_s": round(load_s, 2),
    }
    if worker_rows:
        assert stage.sentiment is not None
        stage.sentiment = SentimentModel.from_dict(stage.sentiment.to_dict()).freeze()
        stage.learn_inline = False
        # only texts the first pass did not see: its per-text caches must not serve this one warm
        seen = {r.get("text") for r in rows}
        wrecs = [parse_raw(r) for r in worker_rows if not r.get("text") or r["text"] not in seen]
        stage.enrich_docs(wrecs[:bs])  # warm-up
        t0, cpu0 = time.perf_counter(), time.process_time()
        for i in range(0, len(wrecs), bs):
            stage.enrich_docs(wrecs[i : i + bs])
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        out["as_worker"] = {
            "events": len(wrecs),
            "snapshot_labels": stage.sentiment.n_learned,
            "events_per_s": round(len(wrecs) / wall, 1),
            "events_per_cpu_s": round(len(wrecs) / cpu, 1) if cpu > 0 else None,
        }
    return out


def bench_accurate(settings: Settings, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The accurate profile (a trained spaCy pipeline) vs raw ``nlp.pipe`` of the same model."""
    acc = settings.model_copy(update={"nlp": settings.nlp.model_copy(update={"profile": "accurate"})})
    out = bench_enrichment(acc, rows)
    stage = EnrichStage(acc)
    stage.load_models()
    assert stage.enricher is not None
    texts = [str(r.get("text") or r.get("comment") or "") for r in rows]
    nlp = stage.enricher.nlp
    list(nlp.pipe(texts[:200], batch_size=settings.nlp.batch_size))  # warm-up
    t0 = time.perf_counter()
    for _ in nlp.pipe(texts, batch_size=settings.nlp.batch_size):
        pass
    raw = len(texts) / (time.perf_counter() - t0)
    out["raw_nlp_pipe_per_s"] = round(raw, 1)
    out["ratio_to_raw_nlp_pipe"] = round(out["events_per_s"] / raw, 3)
    out["model"] = stage.enricher.model_name
    return out


def run_bench(
    settings: Settings,
    *,
    events: int = 5000,
    console: Console | None = None,
    config: Path | None = None,
    rates: Sequence[int] = (1000, 2000, 5000),
    sweep_workers: int = 2,
    sweep_seconds: float = 10.0,
    texts: tuple[Path, list[str]] | None = None,
) -> dict[str, Any]:
    console = console or Console(stderr=True)
    rows = _sample(settings, events)
    console.print(f"bench: enrichment alone on {len(rows)} events, distinct texts (fast profile) ...")
    fast = settings.model_copy(update={"nlp": settings.nlp.model_copy(update={"profile": "fast"})})
    enrich = bench_enrichment(fast, rows, _sample(settings, events, seed=8))
    enrich["distinct_texts"] = len({r.get("text") for r in rows if r.get("text")})
    enrich_real = None
    if texts is not None:
        console.print(f"bench: enrichment alone with the texts of {texts[0]} (fast profile) ...")
        real = _real_texts(rows, texts[1], settings)
        enrich_real = bench_enrichment(fast, real)
        enrich_real["texts_from"] = str(texts[0])
        enrich_real["distinct_texts"] = len({r["text"] for r in real})
    console.print("bench: accurate profile vs raw nlp.pipe on 1000 events ...")
    accurate = bench_accurate(settings, rows[:1000])
    console.print(f"bench: end to end through a broker and a worker on {len(rows)} events ...")
    e2e = bench_end_to_end(settings, rows, console, config)
    console.print(f"bench: end to end through 2 workers on {len(rows)} events ...")
    e2e_2 = bench_end_to_end(settings, rows, console, config, workers=2)
    sweep = None
    if rates:
        console.print(f"bench: sustained rates {list(rates)} events/s into {sweep_workers} workers ...")
        sweep = bench_rate_sweep(
            settings, rates, workers=sweep_workers, seconds=sweep_seconds, console=console, config=config
        )
    ratio = (
        round(e2e["events_per_s"] / enrich["events_per_s"], 3)
        if e2e.get("events_per_s") and enrich["events_per_s"]
        else None
    )
    return {
        "bench": "repmon",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "enrichment": enrich,
        "enrichment_real_texts": enrich_real,
        "enrichment_accurate": accurate,
        "end_to_end": e2e,
        "end_to_end_workers": {"1": _brief(e2e), "2": _brief(e2e_2)},
        "pipeline_overhead_ratio": ratio,
        "rate_sweep": sweep,
        "load_average": list(os.getloadavg()),
    }


def _brief(e2e: dict[str, Any]) -> dict[str, Any]:
    keys = ("events_per_s", "complete", "latency_ms", "worker_cpu_us_per_event", "cpu_us_per_event", "error")
    return {k: e2e[k] for k in keys if k in e2e}


def _cpu_per_event(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float] | None:
    """µs of CPU per event of each kind of process (:meth:`LocalStack.cpu_seconds`), and their sum."""
    if not n:
        return None
    out = {k: round((after[k] - before.get(k, 0.0)) / n * 1e6, 1) for k in after}
    out["all"] = round(sum(out.values()), 1)
    return out


def _all_out(tail: _Enriched, sent: dict[str, float], alive: Callable[[], bool]) -> bool:
    return all(k in tail.seen for k in sent) or not alive()


class _Enriched(TopicTail):
    """First-seen time of each event id on the enriched topic (a :class:`TopicTail`: librdkafka,
    ~7 µs of the bench's CPU per message where kafka-python's consumer cost ~300 µs, CPU that the
    workers sharing the bench's two cores did not get). Fails when the topic has no partitions
    within ``timeout``: the stack creates it before the bench reads."""

    def __init__(self, bootstrap: str, topic: str, timeout: float = 30.0) -> None:
        self.seen: dict[str, float] = {}
        # the measuring consumer must not add latency of its own: tansu holds a fetch for the
        # whole wait (see kafka.fetch_max_wait_ms)
        super().__init__(bootstrap, [topic], fetch_wait_ms=20)
        if not self.reading.wait(timeout):
            self.stop()
            raise RuntimeError(f"no partitions of {topic} on {bootstrap} within {timeout:.0f} s")

    def take(self, topic: str, values: list[bytes]) -> None:
        seen, now = self.seen, time.perf_counter()
        for v in values:
            seen.setdefault(orjson.loads(v)["event_id"], now)


def bench_end_to_end(
    settings: Settings, rows: list[dict[str, Any]], console: Console, config: Path | None = None, workers: int = 1
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="repmon-bench-"))
    prefix = f"bench{int(time.time())}w{workers}"
    env = {"REPMON_WINDOWS__BACKFILL_SINCE": BENCH_START.isoformat()}  # generated history: backfill mode
    with LocalStack(settings, workdir, config=config, prefix=prefix, env=env, redis="auto", workers=workers) as stack:
        bootstrap, topics, worker = stack.bootstrap, stack.topics, stack.worker
        alive = lambda: all(w.alive() for w in stack.workers)  # noqa: E731

        tail = _Enriched(bootstrap, topics["enriched"])
        seen = tail.seen
        # warm the worker up: its first batch pays for the consumer group join
        warm = [dict(r, event_id=f"{r['event_id']}:warm") for r in rows[:50]]
        sink = KafkaSink(bootstrap, topics["raw"])
        for r in warm:
            sink.send_any(r)
        sink.flush()
        if not wait_until(lambda: len(seen) >= len(warm) or not alive(), 180):
            tail.stop()
            return {"error": "worker did not start in 180 s", "worker_log": worker.tail(20)}
        sent_at: dict[str, float] = {}
        cpu0 = stack.cpu_seconds()
        t0 = time.perf_counter()
        for r in rows:
            sent_at[r["event_id"]] = time.perf_counter()
            sink.send_any(r)
        sink.flush()
        produce_s = time.perf_counter() - t0
        ok = wait_until(lambda: all(k in seen for k in sent_at) or not alive(), 600, every=0.1)
        cpu1 = stack.cpu_seconds()
        tail.stop()
        sink.close()
        done = [seen[k] for k in sent_at if k in seen]
        per = _cpu_per_event(cpu0, cpu1, len(done))
        lat = [(seen[k] - t) * 1000 for k, t in sent_at.items() if k in seen]
        elapsed = (max(done) - t0) if done else float("nan")
        return {
            "events": len(rows),
            "enriched": len(done),
            "complete": bool(ok and len(done) == len(rows)),
            "produce_s": round(produce_s, 3),
            "seconds": round(elapsed, 3),
            "events_per_s": round(len(done) / elapsed, 1) if done else None,
            "latency_ms": {
                "p50": round(_percentile(lat, 50), 1),
                "p95": round(_percentile(lat, 95), 1),
                "p99": round(_percentile(lat, 99), 1),
                "mean": round(statistics.fmean(lat), 1) if lat else None,
            },
            "workers": workers,
            "worker_cpu_us_per_event": per["workers"] if per else None,
            "cpu_us_per_event": per,
            "broker": "embedded tansu",
        }


def bench_rate_sweep(
    settings: Settings,
    rates: Sequence[int],
    *,
    workers: int = 2,
    seconds: float = 10.0,
    console: Console,
    config: Path | None = None,
) -> dict[str, Any]:
    """Each rate held for ``seconds`` into one stack of ``workers`` workers (one after the other, each
    with fresh ids), live: the sample's events (distinct texts, the generator's mix of mentions,
    reviews, purchases and feedback) stamped with the time they are sent. Latency from the bench's
    send to the first sight on the enriched topic. A rate is held when every event came out,
    p99 < 2 s, and the bench's own producer reached the rate."""
    workdir = Path(tempfile.mkdtemp(prefix="repmon-sweep-"))
    prefix = f"sweep{int(time.time())}"
    env = {"REPMON_WINDOWS__BACKFILL_SINCE": BENCH_START.isoformat()}
    base = _sample(settings, int(max(rates) * seconds))
    out: list[dict[str, Any]] = []
    with LocalStack(settings, workdir, config=config, prefix=prefix, env=env, redis="auto", workers=workers) as stack:
        alive = lambda: all(w.alive() for w in stack.workers)  # noqa: E731
        tail = _Enriched(stack.bootstrap, stack.topics["enriched"])
        sink = KafkaSink(stack.bootstrap, stack.topics["raw"])
        try:
            now = datetime.now(UTC).isoformat()  # live from the first event (see below)
            warm = [  # every partition, both workers
                dict(r, event_id=f"{r['event_id']}:warm", occurred_at=now, ingested_at=now) for r in base[:200]
            ]
            for r in warm:
                sink.send_any(r)
            sink.flush()
            if not wait_until(lambda: all(r["event_id"] in tail.seen for r in warm) or not alive(), 180):
                return {"error": "workers did not start in 180 s", "worker_log": stack.worker.tail(20)}
            for rate in rates:
                rows = [dict(r, event_id=f"{r['event_id']}:r{rate}") for r in base[: int(rate * seconds)]]
                sent_at: dict[str, float] = {}
                slice_s = 0.05
                per_slice = max(1, round(rate * slice_s))
                cpu0 = stack.cpu_seconds()
                t0 = time.perf_counter()
                for i in range(0, len(rows), per_slice):
                    # live: event time is the wall clock, as for a stream arriving at this rate
                    # (the sample's own times pack 50 minutes of buckets into each second at
                    # 2,000/s: each second closed 50 buckets, 14 % of the workers' CPU)
                    now = datetime.now(UTC).isoformat()
                    for r in rows[i : i + per_slice]:
                        r["occurred_at"] = r["ingested_at"] = now
                        sent_at[r["event_id"]] = time.perf_counter()
                        sink.send_any(r)
                    due = t0 + (i // per_slice + 1) * slice_s
                    time.sleep(max(0.0, due - time.perf_counter()))
                sink.flush()
                produce_s = time.perf_counter() - t0
                complete = wait_until(partial(_all_out, tail, sent_at, alive), 120, every=0.1)
                cpu1 = stack.cpu_seconds()
                lat = [(tail.seen[k] - t) * 1000 for k, t in sent_at.items() if k in tail.seen]
                per = _cpu_per_event(cpu0, cpu1, len(lat))
                p99 = _percentile(lat, 99)
                produced = len(rows) / produce_s
                row = {
                    "rate": rate,
                    "events": len(rows),
                    "enriched": len(lat),
                    "produced_per_s": round(produced, 1),
                    "latency_ms": {"p50": round(_percentile(lat, 50), 1), "p99": round(p99, 1)},
                    "worker_cpu_us_per_event": per["workers"] if per else None,
                    "cpu_us_per_event": per,
                    "held": bool(complete and len(lat) == len(rows) and p99 < 2000 and produced >= 0.95 * rate),
                }
                console.print(f"bench: {rate} events/s: {row}")
                out.append(row)
                if not alive():
                    break
        finally:
            sink.close()
            tail.stop()
    held = [r["rate"] for r in out if r["held"]]
    return {
        "workers": workers,
        "seconds_per_rate": seconds,
        "rates": out,
        "highest_rate_held": max(held) if held else None,
        "broker": "embedded tansu",
    }


def _live_event(rng: Any, entity: Any, crisis: bool, seq: int, prefix: str) -> dict[str, Any]:
    from connectors.demo import CRISIS, NEGATIVE, NEUTRAL, POSITIVE, _ref

    if crisis and rng.random() < 0.85:
        tpl = rng.choice(CRISIS)
    else:
        tpl = rng.choice(rng.choices([POSITIVE, NEUTRAL, NEGATIVE], weights=[35, 47, 18])[0])
    handle = (entity.handles[0] if entity.handles else "@x").lstrip("@")
    now = datetime.now(UTC)
    return {
        "kind": "mention",
        "event_id": f"{prefix}:{seq}",
        "source": "bench",
        "occurred_at": now.isoformat(),
        "ingested_at": now.isoformat(),
        "text": tpl.format(b=_ref(rng, entity), h=handle),
        "reach": int(rng.lognormvariate(5, 1.5)),
    }


_OBSERVE_ROWS_JS = """
window.__drawn = {};
var mark = function () {
  document.querySelectorAll("tr[data-incident-id]").forEach(function (tr) {
    var id = tr.dataset.incidentId;
    if (!(id in window.__drawn)) window.__drawn[id] = Date.now() / 1000;
  });
};
mark();
new MutationObserver(mark).observe(document.body, { childList: true, subtree: true });
"""


class _IncidentsInBrowser:
    """The war room's incidents page open in headless chromium during a run: a MutationObserver
    stamps the wall time each incident's row first appears in the DOM (the page swaps its live
    part in when an SSE event says so). Without chromium, ``skipped`` says why and nothing runs."""

    def __init__(self, url: str) -> None:
        from tools.browser import missing

        self.url = url
        self.skipped = missing()
        self.driver: Any = None
        self._ctx: Any = None

    def __enter__(self) -> _IncidentsInBrowser:
        if self.skipped is not None:
            return self
        from tools.browser import headless_chromium

        self._ctx = headless_chromium()
        self.driver = self._ctx.__enter__()
        self.driver.get(f"{self.url}/")
        if not wait_until(
            lambda: self.driver.execute_script('return document.getElementById("live-status").textContent') == "live",
            30,
            0.1,
        ):
            raise RuntimeError(f"the incidents page at {self.url}/ did not go live within 30 s")
        self.driver.execute_script(_OBSERVE_ROWS_JS)
        return self

    def drawn(self, incident_ids: Sequence[str], wait: float = 10) -> dict[str, float]:
        """Wall time each of ``incident_ids`` was first drawn (waiting up to ``wait`` s for all)."""
        if self.driver is None:
            return {}
        got: dict[str, float] = {}

        def all_drawn() -> bool:
            got.update(self.driver.execute_script("return window.__drawn") or {})
            return all(i in got for i in incident_ids)

        wait_until(all_drawn, wait, 0.2)
        return {i: float(got[i]) for i in incident_ids if i in got}

    def __exit__(self, *exc: object) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)


def _latency_run(
    settings: Settings, rate: int, *, crisis: bool, seed: int, console: Console, config: Path | None = None
) -> dict[str, Any]:
    import random

    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="repmon-latency-"))
    prefix = f"lat{seed}x{int(time.time())}"
    bucket, warm, calm, crisis_s = 5, 20, 10.0, 15.0
    start_crisis = bucket * (warm + 1) + calm  # seconds into the live stream
    ents = [e for e in settings.entities if e.kind != "product"]
    weights = [3 if e.key == "northwind" else 2 for e in ents]
    with contextlib.ExitStack() as stack:
        rx = stack.enter_context(HttpReceiver())
        routes = [{"name": "bench", "urls": [rx.apprise_url("/bench")], "min_severity": "warning"}]
        env = {
            "REPMON_WINDOWS__BUCKET_SECONDS": str(bucket),
            "REPMON_WINDOWS__ALLOWED_LATENESS_SECONDS": "1",
            "REPMON_WINDOWS__ROLLUPS_SECONDS": "[900, 3600]",
            "REPMON_DETECT__WARMUP_BUCKETS": str(warm),
            "REPMON_DETECT__MIN_VOLUME": "50",
            "REPMON_NLP__BATCH_WITHIN_SECONDS": "0.1",
        }
        local = stack.enter_context(
            LocalStack(settings, workdir, routes=routes, config=config, prefix=prefix, env=env, redis="embedded")
        )
        bootstrap, topics, worker = local.bootstrap, local.topics, local.worker
        sink = KafkaSink(bootstrap, topics["raw"])
        stack.callback(sink.close)
        # let the worker join its group before the clock starts, with a message that is not an
        # event (it is dead-lettered), so it leaves no trace in the windows
        sink.send_any(Malformed(b"warm-up", "not an event"))
        sink.flush()
        tail = TopicTail(
            bootstrap,
            [topics["enriched"], topics["deadletter"], topics["signals"], topics["incidents"]],
            keep=[topics["signals"], topics["incidents"]],
        )
        stack.callback(tail.stop)
        # an open war-room page on the same stack: when each incident could be drawn there
        web_settings = settings.model_copy(
            update={
                "kafka": settings.kafka.model_copy(update={"topic_prefix": prefix}),
                "redis": settings.redis.model_copy(update={"key_prefix": prefix}),
            }
        )
        web = stack.enter_context(WebThread(web_settings, redis_url=local.redis_url, bootstrap=bootstrap))
        page = stack.enter_context(PageWatch(web.url))
        browser = stack.enter_context(_IncidentsInBrowser(web.url))
        if not wait_until(lambda: tail.count(topics["deadletter"]) >= 1 or not worker.alive(), 180):
            return {"error": "worker did not start", "log": worker.tail(20)}
        seq, t0 = 1, time.monotonic()
        onset: float | None = None
        end = start_crisis + crisis_s
        slice_s = 0.05
        while (el := time.monotonic() - t0) < end:
            hot = crisis and start_crisis <= el < start_crisis + crisis_s
            if hot and onset is None:
                onset = time.monotonic()
            for _ in range(int(rate * slice_s)):
                ent = rng.choices(ents, weights=weights)[0]
                if hot and ent.key == "northwind" and rng.random() < 0.5:
                    sink.send_any(_live_event(rng, ent, True, seq, prefix))  # extra crisis traffic
                    seq += 1
                sink.send_any(_live_event(rng, ent, hot and ent.key == "northwind", seq, prefix))
                seq += 1
            sink.flush()
            time.sleep(max(0.0, slice_s - ((time.monotonic() - t0) - el)))
        rx.wait_for(1, timeout=10 if crisis else 5)
        first = rx.requests[0].at if rx.requests else None
        wall0 = time.time() - (time.monotonic() - t0)  # wall clock of the stream's start

        def opened() -> list[dict[str, Any]]:
            return [i for i in map(orjson.loads, tail.values(topics["incidents"])) if i.get("status") == "open"]

        if rx.requests:  # a thread was notified: its OPEN is on the incidents topic, and then on the page
            wait_until(lambda: bool(opened()), 10)
        opens = opened()
        wait_until(lambda: all((i["incident_id"], 1) in page.arrived for i in opens), 10)
        # live events carry the wall clock as event time: the bucket that opened a thread could
        # be judged at its end plus the allowed lateness; negative = the page had it before that
        # (early firing judges a bucket still filling)
        close_to_page = [
            round(
                page.arrived[(i["incident_id"], 1)] - (datetime.fromisoformat(i["opened_at"]).timestamp() + bucket + 1),
                3,
            )
            for i in opens
            if (i["incident_id"], 1) in page.arrived
        ]
        # the same in a real browser: when the thread's row was drawn in the incidents page's DOM
        drawn = browser.drawn([i["incident_id"] for i in opens], wait=10)
        close_to_browser = [
            round(drawn[i["incident_id"]] - (datetime.fromisoformat(i["opened_at"]).timestamp() + bucket + 1), 3)
            for i in opens
            if i["incident_id"] in drawn
        ]
        signals, before_onset = [], 0
        for raw in tail.values(topics["signals"]):
            sig = orjson.loads(raw)
            at = datetime.fromisoformat(sig["bucket_start"]).timestamp() - wall0
            # a bucket that ends before the onset holds no crisis traffic: any signal there is false
            before_onset += at + bucket <= start_crisis
            name = sig["signal"] + (f" ({sig['aspect']})" if sig.get("aspect") else "")
            signals.append(
                f"{sig['entity']} {name} {sig['severity']} z={sig['z']:.1f} value={sig['value']:.3g} "
                f"baseline={sig['baseline']:.3g} n={sig['support']} bucket@{at:.0f}s"
            )
        return {
            "crisis": crisis,
            "events": seq,
            "notifications": len(rx.requests),
            "first_notification_delay_s": round(first - onset, 2) if first and onset else None,
            "first_page_delay_s": (
                round(
                    min(page.arrived[(i["incident_id"], 1)] for i in opens if (i["incident_id"], 1) in page.arrived)
                    - (wall0 + start_crisis),
                    2,
                )
                if crisis and any((i["incident_id"], 1) in page.arrived for i in opens)
                else None
            ),
            "bucket_close_to_page_s": close_to_page,
            "bucket_close_to_browser_s": close_to_browser if browser.driver is not None else None,
            "browser": browser.skipped or "headless chromium, incidents page (/), rows seen by a MutationObserver",
            "titles": [r.title for r in rx.requests],
            "lag_enriched": seq - tail.count(topics["enriched"]),
            "onset_s": start_crisis if crisis else None,
            "signals": signals,
            "signals_before_onset": before_onset if crisis else len(signals),
        }


def bench_alert_latency(
    settings: Settings, *, rate: int = 1000, runs: int = 3, console: Console, config: Path | None = None
) -> dict[str, Any]:
    """Crisis onset -> first notification at the local receiver, live at ``rate`` events/s."""
    crisis_runs = []
    for i in range(runs):
        console.print(f"bench: alert latency, crisis run {i + 1}/{runs} at {rate} events/s ...")
        crisis_runs.append(_latency_run(settings, rate, crisis=True, seed=i, console=console, config=config))
    console.print("bench: alert latency, the same stream without the crisis ...")
    quiet = _latency_run(settings, rate, crisis=False, seed=0, console=console, config=config)
    delays = [r["first_notification_delay_s"] for r in crisis_runs if r.get("first_notification_delay_s") is not None]
    close_to_page = [x for r in crisis_runs for x in r.get("bucket_close_to_page_s", [])]
    close_to_browser = [x for r in crisis_runs for x in r.get("bucket_close_to_browser_s") or []]
    return {
        "rate_events_per_s": rate,
        "bucket_seconds": 5,
        "runs": crisis_runs,
        "median_first_notification_delay_s": statistics.median(delays) if len(delays) == runs else None,
        # the war room's target: from the bucket that opened a thread closing to the page showing it
        "median_bucket_close_to_page_s": statistics.median(close_to_page) if close_to_page else None,
        # the same, drawn in headless chromium's DOM (None where no browser is installed)
        "median_bucket_close_to_browser_s": statistics.median(close_to_browser) if close_to_browser else None,
        "quiet_run": quiet,
        "quiet_notifications": quiet.get("notifications"),
        # signals of any severity where there was no crisis: before the onset, or in the quiet run
        "false_signals": sum(r.get("signals_before_onset", 0) for r in [*crisis_runs, quiet]),
    }
