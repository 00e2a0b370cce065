"""Windows -> signals -> incidents, in event time. Shared by the live worker and the backtest.

:meth:`DetectionEngine.tick` judges every bucket that closed since the last call (the effective
watermark passed its end plus the allowed lateness), for every configured entity, in bucket
order, so a replay makes the same decisions as live. It also looks at the bucket still filling:
when the evidence there is already overwhelming (``z >= detect.critical_z`` on the part seen so
far, against the share of the baseline expected by then), it opens the incident at once instead
of waiting for the bucket to close ("early firing"); the closed bucket then continues the thread.

A responder's "false positive" (``repmon web``, queued by :class:`alerts.controls.Controls`) is
learned by the leader on its next tick: each bucket the incident fired on is read back from the
windows and its entity's detector learns it as normal (:meth:`EntityDetector.absorb`), then the
entry leaves the queue once the detector state holding it is saved (a crash in between learns it
once more at full weight, which moves a baseline a little; the widening itself is idempotent).

Outputs go to two callbacks, so the worker sends them to Kafka and the backtest collects them.
State (detector baselines, incident threads, the closed pointer, the River watches) goes through
the :class:`~streams.state.StateStore` seam: Redis in the worker, memory in the backtest.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from alerts.incidents import IncidentState, Transition, build_incident, step
from alerts.render import signal_line
from contract.records import Incident, Signal
from infra.settings import Settings
from models.anomaly import FEATURES as ANOMALY_FEATURES
from models.anomaly import AnomalyHit, AnomalyWatch
from models.detect import EntityDetector, Verdict
from models.drift import DriftWatch
from streams.state import StateStore
from streams.windows import Windows, bucket_dt

__all__ = ["DetectionEngine", "hour_of_week"]

logger = logging.getLogger(__name__)

Emit = Callable[[Any], Awaitable[None]]
MODEL = "*"  # entity key of signals about the sentiment model itself
RIVER_SAVE_SECONDS = 10.0  # River watches are saved this often (they are evidence, not pages)
OFFLOAD_ENTITIES = 20  # from this many entities a closed bucket is judged off the event loop


async def _discard(_: Any) -> None:
    return None


class Feedback(Protocol):
    """Where responders' false positives wait for the leader (:class:`alerts.controls.Controls`)."""

    async def feedback(self, limit: int = 100) -> list[dict[str, Any]]: ...

    async def feedback_done(self, n: int) -> None: ...


def _judge_bucket(
    ents: list[str],
    t: int,
    stats: dict[str, dict[str, float]],
    how: int,
    dets: dict[str, EntityDetector],
    anoms: dict[str, AnomalyWatch],
) -> list[tuple[str, list[Verdict], AnomalyHit | None]]:
    """Judge and learn one closed bucket for every entity (pure computation, no I/O)."""
    rows = []
    for e in ents:
        zs = dets[e].standardize(stats[e], how)  # before the bucket is learned
        verdicts = dets[e].update(stats[e], how)
        # a watch judges combinations: one input (no mention, no share) leaves it untouched
        hit = anoms[e].update(zs, at=t) if sum(f in zs for f in ANOMALY_FEATURES) >= 2 else None
        rows.append((e, verdicts, hit))
    return rows


def hour_of_week(t: int) -> int:
    """Hour of the week (0 = Monday 00h UTC) of epoch second ``t``.

    >>> hour_of_week(0)  # 1970-01-01 was a Thursday
    72
    """
    return (int(t // 3600) + 72) % 168


def describe(s: Signal) -> str:
    """One line per signal: value vs baseline (the same line the notifications show).

    >>> from datetime import UTC, datetime
    >>> s = Signal(signal_id="a", entity="a", signal="negative_share", bucket_start=datetime(2026, 1, 1, tzinfo=UTC),
    ...            bucket_seconds=60, value=0.62, baseline=0.14, scale=0.05, z=9.6, support=80,
    ...            severity="critical", detector="d")
    >>> describe(s)
    'negative share 62% vs baseline 14% (z=9.6, n=80)'
    """
    return signal_line(s)


class _Watches(dict[str, AnomalyWatch]):
    """Every entity's River watch, each decoded when first used.

    Rebuilding one HalfSpaceTrees forest takes tens of milliseconds, so a new leader decoding a
    thousand entities' watches at once stalled for a minute; a watch is only needed for a bucket
    with two standardised inputs or more (an entity with mentions in it), so most are never
    decoded between two failovers. Only decoded watches can have changed, and only they are saved.
    """

    def __init__(self, raw: dict[str, dict[str, Any] | None]) -> None:
        super().__init__()
        self._raw = {k.removeprefix("anom:"): v for k, v in raw.items()}

    def __missing__(self, entity: str) -> AnomalyWatch:
        w = self[entity] = AnomalyWatch.from_dict(self._raw.pop(entity, None))
        return w


class DetectionEngine:
    def __init__(
        self,
        settings: Settings,
        windows: Windows,
        state: StateStore,
        *,
        emit_signal: Emit | None = None,
        emit_incident: Emit | None = None,
        model_version: Callable[[], str | None] = lambda: None,
        feedback: Feedback | None = None,
    ) -> None:
        self.settings = settings
        self.windows = windows
        self.state = state
        # where signals and incidents go: the worker's topics, or the backtest's lists
        self.emit_signal: Emit = emit_signal or _discard
        self.emit_incident: Emit = emit_incident or _discard
        self.model_version = model_version
        self.feedback = feedback
        self.absorbed = 0  # buckets learned as normal on a responder's word
        self.entities = [e.key for e in settings.entities]
        self.B = settings.windows.bucket_seconds
        self.signals_out = 0
        self.incidents_out = 0
        self.skipped = 0  # buckets without events accounted for at once (windows that know where counts are)
        self.watermark: float | None = None  # as of the last tick
        self._river: tuple[dict[str, DriftWatch], dict[str, AnomalyWatch]] | None = None
        self._river_token: str | None = None
        self._river_saved = 0.0
        # the decoded detectors and threads, kept while this engine was the last to save them
        # (see ``_entity_state``), and whether this tick changed them
        self._state: tuple[str, dict[str, EntityDetector], dict[str, IncidentState]] | None = None
        self._dirty = False
        # the filling bucket's counts per entity as last judged early (see ``_early``)
        self._early_seen: tuple[int | None, dict[str, dict[str, float]]] = (None, {})
        # the broker's end offset per raw partition (the worker sets it; None: reports are trusted
        # as they are, as in backtests and on a broker whose offsets are not the records')
        self.end_offsets: Callable[[], Awaitable[dict[int, int]]] | None = None
        self._ends_failing = False

    async def tick(self, max_buckets: int = 5000) -> int:
        """Judge closed buckets (and the filling one, for early firing). Returns buckets judged."""
        B = self.B
        ends: dict[int, int] | None = None
        if self.end_offsets is not None:
            try:
                ends = await self.end_offsets()
            except Exception as exc:  # no end offsets, no proof the reports still hold: judge nothing yet
                if not self._ends_failing:
                    logger.warning("detection waits: the broker's end offsets are unavailable (%s)", exc)
                self._ends_failing = True
                return 0
            if self._ends_failing:
                logger.warning("detection resumes: the broker's end offsets answer again")
            self._ends_failing = False
        wm = self.watermark = await self.windows.watermark(ends=ends)
        if wm is None:
            return 0
        last = int((wm - self.settings.windows.allowed_lateness_seconds) // B) * B - B
        ptr = await self.state.pointer("closed")
        closed = int(ptr) if ptr is not None else None
        if closed is None:
            first = await self.windows.first_event_ts()
            if first is None:
                return 0
            # the stream began inside its first bucket: a partial count would teach the volume
            # baselines a dip, so the first bucket judged and learned is the first whole one
            closed = int(first // B) * B - (B if first % B == 0 else 0)
        ents = self.entities
        try:
            return await self._judge(wm, last, closed, ents, max_buckets)
        except BaseException:
            self._state = None  # what is in memory may be ahead of what Redis holds: read it again
            raise

    async def _entity_state(self, ents: list[str]) -> tuple[dict[str, EntityDetector], dict[str, IncidentState]]:
        """Every entity's detector and thread, from memory while this engine was the last to save them.

        With a day of learned state an entity's detector is tens of KB of JSON: reading, decoding,
        encoding and writing all of them on every tick (twice a second) took 0.8 s at 100 entities
        and 8 s at 1,000, so detection fell behind. Redis holds a token of the last save; a worker
        that did not write it (a new leader after a rebalance, a restart) loads the saved state.
        """
        doc = await self.state.load_blob("det:token")
        token = str(doc["token"]) if doc and "token" in doc else None
        if self._state is not None and token == self._state[0]:
            return self._state[1], self._state[2]
        det_raw = await self.state.load("det", ents)
        inc_raw = await self.state.load("inc", ents)

        def decode() -> tuple[dict[str, EntityDetector], dict[str, IncidentState]]:
            dets = {e: EntityDetector.from_dict(self.settings.detect, det_raw[e], self.B) for e in ents}
            return dets, {e: IncidentState.from_dict(inc_raw[e]) for e in ents}

        # milliseconds per entity: thousands of them are decoded off the event loop
        dets, incs = await asyncio.to_thread(decode) if len(ents) >= OFFLOAD_ENTITIES else decode()
        self._state = (token or "", dets, incs)
        self._early_seen = (None, {})  # judged against other detectors
        return dets, incs

    async def _judge(self, wm: float, last: int, closed: int, ents: list[str], max_buckets: int) -> int:
        B = self.B
        dets, incs = await self._entity_state(ents)
        self._dirty = False
        learned = await self._learn_feedback(closed, dets)
        judged = 0
        t = closed + B
        if t <= last:
            drifts, anoms = await self._river_state()
            while t <= last and judged < max_buckets:
                nxt = await self.windows.next_counted(t, last)
                if nxt is None or nxt > t:  # a run of buckets no entity has events in
                    k = ((last + B if nxt is None else nxt) - t) // B
                    await self._idle(t, k, dets, incs)
                    self.skipped += k
                    judged += k
                    t += k * B
                    continue
                stats = await self.windows.bucket_stats(ents, t)
                how = hour_of_week(t)
                # about a millisecond per entity: hundreds of entities would hold the event loop
                # for the better part of a second on every closed bucket, so a big fleet of
                # entities is judged on a thread (the GIL still hands the loop its turn)
                if len(ents) >= OFFLOAD_ENTITIES:
                    rows = await asyncio.to_thread(_judge_bucket, ents, t, stats, how, dets, anoms)
                else:
                    rows = _judge_bucket(ents, t, stats, how, dets, anoms)
                for e, verdicts, hit in rows:
                    if hit is not None:
                        await self._anomaly(e, t, hit, int(stats[e].get("n", 0.0)))
                    await self._advance(e, t, verdicts, stats[e], incs[e], early=False, anomaly=hit)
                    await self._drift(
                        drifts[e], e, t, "sentiment", stats[e].get("sent_sum", 0.0), stats[e].get("n", 0.0)
                    )
                await self._drift(
                    drifts[MODEL],
                    MODEL,
                    t,
                    "model_error",
                    sum(stats[e].get("model_err", 0.0) for e in ents),
                    sum(stats[e].get("model_n", 0.0) for e in ents),
                )
                judged += 1
                t += B
            if time.monotonic() - self._river_saved >= RIVER_SAVE_SECONDS:
                await self.save_river()
        closed_now = t - B
        if judged == 0 or closed_now >= last:
            await self._early(wm, closed_now, dets, incs, learned_since=judged > 0 or learned > 0)
        if judged or self._dirty or closed_now != closed:

            def docs() -> dict[str, dict[str, Any]]:
                return {
                    "det": {e: d.to_dict() for e, d in dets.items()},
                    "inc": {e: i.to_dict() for e, i in incs.items()},
                }

            many = len(dets) >= OFFLOAD_ENTITIES  # about a millisecond per entity, off the event loop
            await self.state.save(await asyncio.to_thread(docs) if many else docs(), {"closed": closed_now})
            token = uuid.uuid4().hex
            await self.state.save_blob("det:token", {"token": token})
            self._state = (token, dets, incs)
        if learned and self.feedback is not None:
            await self.feedback.feedback_done(learned)
        return judged

    async def _learn_feedback(self, closed: int, dets: dict[str, EntityDetector]) -> int:
        """Learn the queued false positives whose buckets have closed (module doc); returns how
        many entries were taken. An entry waits while one of its buckets is still open (an early
        verdict): the closed bucket must be learned first, or it would be learned protected again."""
        if self.feedback is None:
            return 0
        taken = 0
        for item in await self.feedback.feedback(100):
            entity = item.get("entity")
            try:
                buckets = sorted(int(b) for b in item.get("buckets") or [])
            except (TypeError, ValueError):
                # written by hand or by another version: taken off the queue, or it holds every later one
                logger.warning(
                    "false positive %s: buckets %r are not epoch seconds; skipped",
                    item.get("action_id"),
                    item.get("buckets"),
                )
                taken += 1
                continue
            if buckets and buckets[-1] > closed:
                break
            taken += 1
            if entity not in dets:
                logger.warning(
                    "false positive %s: %r is not a tracked entity; nothing learned", item.get("action_id"), entity
                )
                continue
            stats = {t: (await self.windows.bucket_stats([entity], t))[entity] for t in buckets}
            for t, st in stats.items():
                if st.get("n", 0.0) <= 0:
                    logger.warning("false positive on %s at %s: the bucket is no longer held; not learned", entity, t)
                    continue
                widened = dets[entity].absorb(st, hour_of_week(t))
                self.absorbed += 1
                logger.info("false positive on %s at %s learned as normal (%s)", entity, t, ", ".join(widened) or "-")
            self._dirty = True
        return taken

    async def _idle(self, t: int, k: int, dets: dict[str, EntityDetector], incs: dict[str, IncidentState]) -> None:
        """Account for ``k`` empty buckets from ``t`` at once: each detector learns them in closed
        form and each open thread sees them as quiet (it resolves after its quiet buckets). Only
        windows that know where the counts are skip (the backtest's, in memory): years of a sparse
        review stream take seconds, not hours."""
        quiet = self.settings.detect.resolve_after_quiet_buckets
        for e in self.entities:
            dets[e].idle(k)
            for j in range(min(k, quiet) if incs[e].is_open else 0):
                tb = t + j * self.B
                tr = step(incs[e], e, bucket_dt(tb), [], quiet_buckets=quiet)
                if tr is not None:
                    await self.emit_incident(await self._incident(e, tb, tr, [], {}, early=False))
                    self.incidents_out += 1

    async def _river_state(self) -> tuple[dict[str, DriftWatch], dict[str, AnomalyWatch]]:
        """The River watches, from memory while this engine was the last to save them.

        Decoding a HalfSpaceTrees forest takes tens of ms, and the leader's timer ticks twice a
        second: reading them from Redis on every tick stalled the event loop (end-to-end
        throughput halved). Redis holds a token of the last save; a worker that did not write it
        (a new leader after a rebalance, a restart) loads the saved state once.
        """
        doc = await self.state.load_blob("river:token")
        token = str(doc["token"]) if doc and "token" in doc else None
        if self._river is None or token != self._river_token:
            ents = self.entities
            raw = await self.state.load_blobs([f"drift:{e}" for e in [*ents, MODEL]])
            drifts = {e: DriftWatch.from_dict(raw[f"drift:{e}"]) for e in [*ents, MODEL]}
            anoms = _Watches(await self.state.load_blobs([f"anom:{e}" for e in ents]))
            self._river = (drifts, anoms)
            self._river_token = token
        return self._river

    async def save_river(self) -> None:
        """Write the River watches to Redis (every ``RIVER_SAVE_SECONDS`` and at shutdown)."""
        if self._river is None:
            return
        doc = await self.state.load_blob("river:token")
        if doc is not None and doc.get("token") != self._river_token:
            # another leader saved since this engine loaded them (a rebalance moved the detect
            # timer): its watches are newer; this copy is stale and must not overwrite them
            self._river = None
            return
        drifts, anoms = self._river

        def docs() -> dict[str, dict[str, Any]]:
            out = {f"drift:{key}": w.to_dict() for key, w in drifts.items()}
            out.update((f"anom:{key}", a.to_dict()) for key, a in anoms.items())  # the decoded ones
            return out

        many = len(anoms) >= OFFLOAD_ENTITIES
        await self.state.save_blobs(await asyncio.to_thread(docs) if many else docs())
        token = uuid.uuid4().hex
        await self.state.save_blob("river:token", {"token": token})
        self._river_token = token
        self._river_saved = time.monotonic()

    async def _drift(self, watch: DriftWatch, entity: str, t: int, what: str, total: float, support: float) -> None:
        """ADWIN on a per-bucket rate; a change is an ``info`` signal (evidence, never a page)."""
        if support <= 0:
            return
        before = watch.estimation
        value = total / support
        if watch.update(value, support, at=t):
            sig = Signal(
                signal_id=f"{entity}:drift:{what}:{t}",
                entity=entity,
                signal="drift",
                aspect=what,
                bucket_start=bucket_dt(t),
                bucket_seconds=self.B,
                value=value,
                baseline=before,
                scale=0.0,
                z=0.0,
                support=int(support),
                severity="info",
                detector=f"adwin-{what}-v1",
            )
            await self.emit_signal(sig)
            self.signals_out += 1

    async def _anomaly(self, entity: str, t: int, hit: AnomalyHit, support: int) -> None:
        """River HalfSpaceTrees found the bucket's combination of signals unusual: ``info``."""
        sig = Signal(
            signal_id=f"{entity}:anomaly:{t}",
            entity=entity,
            signal="anomaly",
            aspect=hit.top,
            bucket_start=bucket_dt(t),
            bucket_seconds=self.B,
            value=hit.score,
            baseline=hit.threshold,
            scale=0.0,
            z=hit.z,
            support=support,
            severity="info",
            detector="river-hst-zscores-v1",
        )
        await self.emit_signal(sig)
        self.signals_out += 1

    async def _early(
        self,
        wm: float,
        closed: int,
        dets: dict[str, EntityDetector],
        incs: dict[str, IncidentState],
        learned_since: bool = True,
    ) -> None:
        """Open an incident inside a bucket still filling when the evidence is overwhelming."""
        B = self.B
        t = int(wm // B) * B
        if t <= closed:
            return
        # partitions ahead of the watermark have already counted more of this bucket: expect the
        # share of it that the furthest partition has seen, or early firing overreacts to skew
        high = await self.windows.watermark(high=True) or wm
        frac = min(1.0, max((high - t) / B, 1.0 / B))
        stats = await self.windows.bucket_stats(self.entities, t)
        # only entities whose part of the filling bucket grew since the last look, with no thread
        # open (early firing only opens threads; the closed buckets continue them): the same counts
        # against a larger share of the bucket expected can only read lower, and an entity with
        # no event in the bucket cannot spike. With thousands of entities most ticks judge few.
        if self._early_seen[0] != t or learned_since:
            self._early_seen = (t, {})
        seen = self._early_seen[1]
        ents = [e for e in self.entities if not incs[e].is_open and stats[e] and seen.get(e) != stats[e]]
        seen.update((e, stats[e]) for e in ents)
        cfg, how = self.settings.detect, hour_of_week(t)

        def judge_all() -> list[tuple[str, list[Verdict]]]:
            return [(e, [v for v in dets[e].judge(stats[e], how, frac) if v.z >= cfg.critical_z]) for e in ents]

        rows = await asyncio.to_thread(judge_all) if len(ents) >= OFFLOAD_ENTITIES else judge_all()
        for e, verdicts in rows:
            if verdicts:
                await self._advance(e, t, verdicts, stats[e], incs[e], early=True)

    async def _advance(
        self,
        e: str,
        t: int,
        verdicts: list[Verdict],
        stats: dict[str, float],
        inc: IncidentState,
        *,
        early: bool,
        anomaly: AnomalyHit | None = None,
    ) -> None:
        signals = [self._signal(e, t, v, early=early) for v in verdicts]
        for sig in signals:
            await self.emit_signal(sig)
        self.signals_out += len(signals)
        if early and inc.is_open:
            return
        tr = step(
            inc,
            e,
            bucket_dt(t),
            [(v.signal, v.severity) for v in verdicts],
            quiet_buckets=self.settings.detect.resolve_after_quiet_buckets,
            info_threads=any(r.takes_info for r in self.settings.alerts.routes),
        )
        if tr is not None:
            self._dirty = True
            await self.emit_incident(await self._incident(e, t, tr, signals, stats, early, anomaly))
            self.incidents_out += 1

    def _signal(self, entity: str, t: int, v: Verdict, *, early: bool = False) -> Signal:
        name = v.signal if v.aspect is None else f"{v.signal}:{v.aspect}"
        # the verdict on a bucket still filling and the one on the closed bucket are two signals
        return Signal(
            signal_id=f"{entity}:{name}:{t}" + (":early" if early else ""),
            entity=entity,
            signal=v.signal,
            aspect=v.aspect,
            bucket_start=bucket_dt(t),
            bucket_seconds=self.B,
            value=v.value,
            baseline=v.baseline,
            scale=v.scale,
            z=v.z,
            support=v.support,
            severity=v.severity,
            detector=v.detector,
        )

    async def _incident(
        self,
        entity: str,
        t: int,
        tr: Transition,
        signals: list[Signal],
        stats: dict[str, float],
        early: bool,
        anomaly: AnomalyHit | None = None,
    ) -> Incident:
        recent = [t - i * self.B for i in range(5)]
        ent = self.settings.entity(entity)
        return build_incident(
            tr,
            entity=entity,
            name=ent.name if ent else entity,
            team=ent.team if ent else None,
            bucket_start=bucket_dt(t),
            bucket_seconds=self.B,
            signals=signals,
            stats=stats,
            top_mentions=await self.windows.top_mentions(entity, recent, k=5),
            top_terms=await self.windows.top_terms(entity, recent, k=8),
            early=early,
            quiet_buckets=self.settings.detect.resolve_after_quiet_buckets,
            anomaly=(
                {"score": round(anomaly.score, 3), "threshold": round(anomaly.threshold, 3), "top": anomaly.top}
                if anomaly
                else None
            ),
            evidence={
                "sentiment_model": self.model_version(),
                "nlp_profile": self.settings.nlp.profile,
                "topics": {"enriched": self.settings.topic("enriched"), "signals": self.settings.topic("signals")},
            },
        )
