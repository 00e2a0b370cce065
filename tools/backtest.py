"""``repmon backtest``: recorded events through the same pipeline logic, in event time.

The rows are read through a replay mapping, sorted by event time and fed in batches through the
very code the worker runs, built by :func:`streams.compose.build`:
:class:`~streams.enrich.EnrichStage` (spaCy + sentiment, learning from ratings as it goes), the
windows (counted as in Redis, here in memory) and :class:`~streams.detection.DetectionEngine`
(closed buckets, early firing, incident threads). No broker and no Redis are needed. The watermark
is the event time of the stream, so the result is what live would have done with the same
settings: alerts per week, per entity, and how long after each incident's onset (the event time of
its first firing bucket) the first alert went out.
"""

from __future__ import annotations

import asyncio
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

__all__ = ["backtest"]


async def _run(settings: Settings, recs: Sequence[RawRecord], batch: int) -> dict[str, Any]:
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
    engine.emit_signal, engine.emit_incident = on_signal, on_incident
    t0 = time.monotonic()
    try:
        for i in range(0, len(recs), batch):
            chunk = recs[i : i + batch]
            enriched = await asyncio.to_thread(stage.enrich_batch, chunk)
            await store.add_batch([(e, 0) for e in enriched])
            wm_holder["wm"] = (await store.watermark()) or 0.0
            while await engine.tick() > 0:
                pass
    finally:
        await c.close()
    return _report(settings, recs, signals, incidents, time.monotonic() - t0)


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


def backtest(
    settings: Settings,
    files: Sequence[Path],
    mapping: Path,
    *,
    limit: int | None = None,
    batch: int = 64,
) -> dict[str, Any]:
    """Replay ``files`` through enrichment, windows and detection; return the alert report."""
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
    report = asyncio.run(_run(settings, recs, batch))
    report["invalid_rows"] = invalid
    report["replay"] = stats.as_dict()
    return report
