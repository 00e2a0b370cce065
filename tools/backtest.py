"""``repmon backtest``: recorded events through the same pipeline logic, in event time.

The rows are read through a replay mapping, sorted by event time and fed in batches through the
very code the worker runs, built by :func:`streams.compose.build`:
:class:`~streams.enrich.EnrichStage` (spaCy + sentiment, learning from ratings as it goes), the
windows (counted as in Redis, here in memory) and :class:`~streams.detection.DetectionEngine`
(closed buckets, early firing, incident threads). No broker and no Redis are needed. The watermark
is the event time of the stream, so the result is what live would have done with the same
settings: alerts per week, per entity, and how long after each incident's onset (the event time of
its first firing bucket) the first alert went out.

Buckets no entity has events in are not read one by one: the engine accounts for a run of them
at once (:meth:`EntityDetector.idle`, and as quiet buckets for open threads), so nine years of
minute buckets of a sparse review stream take seconds. With ``labels`` (from
:mod:`tools.label_reviews`) it also reports:

- **rating drops** caught or missed: caught when an incident of the product with a signal other
  than volume opens between 3 days before the labelled week and 14 days after its start;
- **positive bursts** paged: incidents (warning or critical) opening on the burst's day or the
  next, which should be none;
- **false pages** per entity per 30 days of its activity (first to last event): incidents
  opening outside every drop window (the alert budget);

per group with ``holdout`` patterns (entities whose key contains one are the ``holdout`` group).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.base import ListSink
from connectors.replay import Replayer, load_mapping
from contract.records import Incident, Signal, parse_raw
from infra.settings import Settings
from streams.compose import build
from streams.enrich import RawRecord
from streams.windows import MemoryWindows

__all__ = ["backtest", "score_labels"]


async def _run(settings: Settings, recs: Sequence[RawRecord], batch: int, progress: bool = False) -> dict[str, Any]:
    c = build(settings, memory=True)
    signals: list[Signal] = []
    incidents: list[tuple[Incident, float]] = []
    await asyncio.to_thread(c.stage.load_models)
    wm_holder = {"wm": 0.0}

    async def on_signal(s: Signal) -> None:
        signals.append(s)

    async def on_incident(i: Incident) -> None:
        incidents.append((i, wm_holder["wm"]))

    engine, store, stage = c.detection, c.windows, c.stage
    judged: list[int] = []
    ticks = 0
    engine.emit_signal, engine.emit_incident = on_signal, on_incident
    t0 = time.monotonic()
    bar = _Bar(len(recs)) if progress else None
    try:
        for i in range(0, len(recs), batch):
            chunk = recs[i : i + batch]
            enriched = await asyncio.to_thread(stage.enrich_batch, chunk)
            await store.add_batch([(e, 0) for e in enriched])
            wm_holder["wm"] = (await store.watermark()) or 0.0
            # one tick per batch, without the live bound on its work: it judges every closed
            # bucket up to the watermark (a run of empty ones at once), so a second tick would
            # only load and save every entity's state again to find nothing left
            judged.append(await engine.tick(max_buckets=sys.maxsize))
            ticks += 1
            if bar is not None:
                bar.update(i + len(chunk), wm_holder["wm"], len(incidents))
        report = _report(settings, recs, signals, incidents, time.monotonic() - t0)
        report["buckets_judged"] = sum(judged)
        report["ticks"] = ticks  # engine ticks: each loads and saves every entity's state
        windows = c.windows
        assert isinstance(windows, MemoryWindows)
        spans: dict[str, list[int]] = defaultdict(list)
        for key, t in windows.buckets:
            spans[key].append(t)
        B = settings.windows.bucket_seconds
        report["buckets_with_events"] = len(windows.starts)
        report["buckets_skipped"] = engine.skipped
        report["active_days"] = {e: round((max(b) - min(b) + B) / 86400.0, 2) for e, b in spans.items()}
    finally:
        if bar is not None:
            bar.stop()
        await c.close()
    return report


class _Bar:
    """Progress of a long backtest on stderr (stdout may carry the JSON report): events judged,
    the event time reached, incident messages so far."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.prog = Progress(
            TextColumn("backtest"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[at]}"),
            TextColumn("{task.fields[messages]} messages"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self.task = self.prog.add_task("backtest", total=total, at="", messages=0)
        self.prog.start()

    def update(self, done: int, wm: float, messages: int) -> None:
        at = datetime.fromtimestamp(wm, UTC).strftime("%Y-%m-%d %H:%M") if wm else ""
        self.prog.update(self.task, completed=done, at=at, messages=messages)

    def stop(self) -> None:
        self.prog.stop()


def _report(
    settings: Settings,
    recs: Sequence[RawRecord],
    signals: list[Signal],
    incidents: list[tuple[Incident, float]],
    seconds: float,
) -> dict[str, Any]:
    threads: dict[str, list[tuple[Incident, float]]] = defaultdict(list)
    for inc, wm in incidents:
        threads[inc.incident_id].append((inc, wm))
    rows: list[dict[str, Any]] = []
    per_week: Counter[str] = Counter()
    for iid, msgs in threads.items():
        first, first_wm = msgs[0]
        onset = first.opened_at.timestamp()
        week = first.opened_at.strftime("%G-W%V")
        per_week[week] += 1
        rows.append(
            {
                "incident_id": iid,
                "entity": first.entity,
                "onset": first.opened_at.isoformat(),
                "first_alert_at": datetime.fromtimestamp(first_wm, UTC).isoformat(),
                "first_alert_delay_s": round(max(0.0, first_wm - onset), 1),
                "early": bool(first.evidence.get("early")),
                "max_severity": max((m.severity for m, _ in msgs), key=["info", "warning", "critical"].index),
                "messages": len(msgs),
                "resolved": any(m.status == "resolved" for m, _ in msgs),
                "signals": sorted({s.signal for m, _ in msgs for s in m.signals}),
                "summary": first.summary,
            }
        )
    delays = sorted(float(r["first_alert_delay_s"]) for r in rows)
    first_t = min((r.occurred_at for r in recs), default=None)
    last_t = max((r.occurred_at for r in recs), default=None)
    return {
        "events": len(recs),
        "span": [first_t.isoformat() if first_t else None, last_t.isoformat() if last_t else None],
        "bucket_seconds": settings.windows.bucket_seconds,
        "incidents": len(rows),
        "messages": len(incidents),
        "signals": len(signals),
        "incidents_per_week": dict(sorted(per_week.items())),
        "alerts_per_entity": dict(sorted(Counter(i.entity for i, _ in incidents).items())),
        "incidents_per_entity": dict(sorted(Counter(r["entity"] for r in rows).items())),
        "median_first_alert_delay_s": delays[len(delays) // 2] if delays else None,
        "incident_list": sorted(rows, key=lambda r: r["onset"]),
        "seconds": round(seconds, 1),
    }


def _matches(key: str, label_entity: str) -> bool:
    return key == label_entity or key.endswith("/" + label_entity)


def score_labels(report: dict[str, Any], labels: dict[str, Any], holdout: Sequence[str] = ()) -> dict[str, Any]:
    """Caught and missed rating drops, pages on positive bursts, false pages per 30 days (module doc)."""
    day = 86400.0
    rows = report["incident_list"]
    span = report["span"]
    days = (
        (datetime.fromisoformat(span[1]) - datetime.fromisoformat(span[0])).total_seconds() / day
        if span[0] and span[1]
        else 0.0
    )
    ents = sorted({r["entity"] for r in rows} | set(report.get("entities", [])))

    def group_of(entity: str) -> str:
        return "holdout" if any(p in entity for p in holdout) else "tune"

    def onset(r: dict[str, Any]) -> float:
        return datetime.fromisoformat(r["onset"]).timestamp()

    def week_ts(label: dict[str, Any]) -> float:
        return datetime.fromisoformat(label["week"]).replace(tzinfo=UTC).timestamp()

    out: dict[str, Any] = {}
    for g in ("tune", "holdout") if holdout else ("all",):

        def in_g(e: str, g: str = g) -> bool:
            return not holdout or group_of(e) == g

        g_rows = [r for r in rows if in_g(r["entity"])]
        drops = [d for d in labels.get("drops", []) if any(_matches(e, d["entity"]) and in_g(e) for e in ents)]
        bursts = [b for b in labels.get("bursts", []) if any(_matches(e, b["entity"]) and in_g(e) for e in ents)]
        caught: list[dict[str, Any]] = []
        missed: list[dict[str, Any]] = []
        for d in drops:
            lo, hi = week_ts(d) - 3 * day, week_ts(d) + 14 * day
            hit = [
                r
                for r in g_rows
                if _matches(r["entity"], d["entity"])
                and lo <= onset(r) <= hi
                and any(s not in ("volume", "trending") for s in r["signals"])
            ]
            (caught if hit else missed).append({**d, "incidents": [r["incident_id"] for r in hit]})
        burst_pages = []
        for b in bursts:
            lo = datetime.fromisoformat(b["day"]).replace(tzinfo=UTC).timestamp()
            burst_pages += [
                r["incident_id"]
                for r in g_rows
                if _matches(r["entity"], b["entity"])
                and lo <= onset(r) < lo + 2 * day
                and r["max_severity"] in ("warning", "critical")
            ]
        windows = [(week_ts(d) - 3 * day, week_ts(d) + 14 * day, d["entity"]) for d in labels.get("drops", [])]
        false = [
            r
            for r in g_rows
            if r["max_severity"] in ("warning", "critical")
            and not any(_matches(r["entity"], e) and lo <= onset(r) <= hi for lo, hi, e in windows)
        ]
        n_ent = len([e for e in ents if in_g(e)]) or 1
        # the budget is per entity-month of activity (first to last event) when known, else the span
        active = report.get("active_days") or {}
        ent_days = sum(active.get(e, 0.0) for e in ents if in_g(e)) if active else n_ent * days
        out[g] = {
            "entities": n_ent,
            "drops": len(drops),
            "caught": len(caught),
            "missed": len(missed),
            "missed_list": missed,
            "bursts": len(bursts),
            "burst_pages": len(set(burst_pages)),
            "false_pages": len(false),
            "false_pages_per_entity_per_30d": round(len(false) / max(ent_days / 30.0, 1e-9), 3),
        }
    return out


def backtest(
    settings: Settings,
    files: Sequence[Path],
    mapping: Path,
    *,
    limit: int | None = None,
    batch: int = 64,
    labels: dict[str, Any] | None = None,
    holdout: Sequence[str] = (),
    progress: bool = False,
) -> dict[str, Any]:
    """Replay ``files`` through enrichment, windows and detection; return the alert report, with
    the label scores (module doc) when ``labels`` are given."""
    sink = ListSink()
    stats = Replayer(load_mapping(mapping), list(files), speed=0.0, limit=limit, progress=False).run(sink)
    recs: list[RawRecord] = []
    invalid = 0
    for _, value in sink.items:
        try:
            recs.append(parse_raw(value))
        except ValueError:
            invalid += 1
    recs.sort(key=lambda r: r.occurred_at)
    report = asyncio.run(_run(settings, recs, batch, progress))
    report["entities"] = [e.key for e in settings.entities]
    if labels is not None:
        report["labels"] = score_labels(report, labels, holdout)
    report["invalid_rows"] = invalid
    report["replay"] = stats.as_dict()
    return report
