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
import gc
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
from models.seasons import HolidayCalendar, holiday_calendar, hour_of_week, seasonal_hour
from streams.state import StateStore, as_doc
from streams.windows import Windows, bucket_dt

__all__ = ["DetectionEngine", "hour_of_week"]

logger = logging.getLogger(__name__)

Emit = Callable[[Any], Awaitable[None]]
MODEL = "*"  # entity key of signals about the sentiment model itself
RIVER_SAVE_SECONDS = 10.0  # River watches are saved this often (they are evidence, not pages)
OFFLOAD_ENTITIES = 20  # from this many entities a closed bucket is judged off the event loop
SAVE_CHUNK = 100  # entities per atomic write: a big save is many short ones, the event loop runs between
DECODE_CHUNK = 200  # detectors decoded per thread hand-off
YIELD_EVERY = 100  # entities stepped on the event loop between two turns of other tasks
# per tick without a closed bucket, the time the quiet entities' deferred buckets may take (see
# ``_catch_up_quiet``): the timer ticks twice a second, so a minute's ~120 ticks have ~2.4 s for
# what a minute defers (~50 us per entity not talking: 0.5 s at 10,000 entities)
CATCH_UP_SECONDS = 0.02
FREEZE_DECODED = 200  # documents decoded since the last freeze of the heap (see ``_decoded``)
_unfrozen = [0]


def _decoded(n: int) -> None:
    """Count ``n`` documents just decoded into long-lived state; from ``FREEZE_DECODED`` on,
    take the heap out of the cyclic collector (``gc.freeze``), as the NLP stage does once its
    models are loaded.

    A leader holds each decoded entity's detector and River watches (hundreds of objects each)
    for as long as it leads; every full collection walked them all, with the GIL held: at
    10,000 entities a quarter of a second in each closed bucket's tick, and half a second in a
    new leader's first. Frozen, they are still freed by reference counting when the state is
    dropped (a new token): they hold no reference cycles.
    """
    _unfrozen[0] += n
    if _unfrozen[0] >= FREEZE_DECODED:
        _unfrozen[0] = 0
        gc.collect(1)  # the young garbage goes first: what is frozen is never collected
        gc.freeze()


async def _discard(_: Any) -> None:
    return None


class Feedback(Protocol):
    """Where responders' false positives wait for the leader (:class:`alerts.controls.Controls`)."""

    async def feedback(self, limit: int = 100) -> list[dict[str, Any]]: ...

    async def feedback_done(self, n: int) -> None: ...


def _catch_up(
    det: EntityDetector, at: dict[str, int], e: str, upto: int, B: int, cal: HolidayCalendar | None = None
) -> None:
    """Learn the empty buckets ``e`` has not learned yet, through bucket start ``upto``.

    An entity without events in a closed bucket is not touched when the bucket closes: its
    detector learns those buckets here, exactly as it would have then (:meth:`EntityDetector.empty`),
    when it is next needed (its next events, an early look, a false positive, a quiet run)."""
    t = at[e] + B
    if det.buckets == 0:
        t = upto + B  # not seen yet: an empty bucket teaches it nothing
    while t <= upto:
        det.empty(seasonal_hour(t, cal))
        t += B
    at[e] = max(at[e], upto)


def _judge_bucket(
    ents: list[str],
    t: int,
    stats: dict[str, dict[str, float]],
    cals: dict[str, HolidayCalendar | None],
    dets: dict[str, EntityDetector],
    at: dict[str, int],
    B: int,
) -> list[tuple[str, list[Verdict], dict[str, float] | None]]:
    """Judge and learn one closed bucket for the entities given (pure computation, no I/O).

    Each row carries the bucket's standardised inputs when they can reach the entity's anomaly
    watch, so that only those watches are read from Redis and decoded (tens of KB each)."""
    rows: list[tuple[str, list[Verdict], dict[str, float] | None]] = []
    for e in ents:
        if at[e] >= t:
            continue  # learned already: saved by a save that stopped before it moved the pointer
        det, st, cal = dets[e], stats[e], cals[e]
        _catch_up(det, at, e, t - B, B, cal)
        at[e] = t
        how = seasonal_hour(t, cal)
        if not any(st.values()):
            det.empty(how)  # nothing can fire, nor reach a watch (it reads two inputs or more)
            rows.append((e, [], None))
            continue
        zs, verdicts = det.update_standardized(st, how)  # standardised before the bucket is learned
        # a watch judges combinations: one input (no mention, no share) leaves it untouched
        rows.append((e, verdicts, zs if sum(f in zs for f in ANOMALY_FEATURES) >= 2 else None))
    return rows


class _NoEndOffsets(Exception):
    """The broker's end offsets could not be read (the cause is chained)."""


def _watch_rows(
    rows: list[tuple[str, list[Verdict], dict[str, float] | None]], t: int, anoms: dict[str, AnomalyWatch]
) -> list[tuple[str, list[Verdict], AnomalyHit | None]]:
    """Each row's anomaly watch judges and learns the bucket's standardised inputs, if they reach it."""
    return [(e, verdicts, anoms[e].update(zs, at=t) if zs is not None else None) for e, verdicts, zs in rows]


def _track(lead: _Leader, e: str) -> None:
    """Keep ``lead.open`` in step with ``e``'s thread, just stepped."""
    if lead.incs[e].is_open:
        lead.open.add(e)
    else:
        lead.open.discard(e)


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


class _Lazy(dict[str, Any]):
    """The entities' River watches this engine has needed so far, each read and decoded when first used.

    Decoding one HalfSpaceTrees forest builds 5,110 nodes (~3 ms from the cached tree shape, see
    :mod:`models.anomaly`; an ADWIN replays its window), and a watch is only needed for a bucket
    the entity has events in, so most are never decoded between two failovers. Reading every one
    at once was a new leader's first second too (21-47 KB an anomaly watch: hundreds of MB at
    10,000 entities), so a watch is read from Redis only when first needed
    (:meth:`need`). Only these can have changed, and only they are saved. A watch never needed
    is not here: reading it raises ``KeyError`` rather than starting it over unseen.
    """

    def __init__(self, state: StateStore, prefix: str, decode: Callable[[Any], Any]) -> None:
        super().__init__()
        self._state, self._prefix, self._decode = state, prefix, decode

    async def need(self, entities: list[str]) -> None:
        """Read and decode the watches of ``entities`` not held yet (off the event loop, in pieces)."""
        missing = [e for e in entities if e not in self]
        for i in range(0, len(missing), DECODE_CHUNK):
            chunk = missing[i : i + DECODE_CHUNK]
            raw = await self._state.load_blobs_raw([self._prefix + e for e in chunk])

            def decode(chunk: list[str] = chunk, raw: dict[str, Any] = raw) -> dict[str, Any]:
                return {e: self._decode(as_doc(raw[self._prefix + e])) for e in chunk}

            self.update(await asyncio.to_thread(decode) if len(chunk) >= OFFLOAD_ENTITIES else decode())
            _decoded(len(chunk))


class _Leader:
    """What the leader keeps of the entities between ticks (while it was the last to save them).

    ``at[e]`` is the last bucket ``e``'s detector has learned: an entity without events in a
    closed bucket is left alone (``_catch_up``), so a tick costs what changed, not what is
    tracked, and only what changed is saved. Each saved detector carries its ``at``, so a new
    leader reads and decodes a detector only when it first needs it, and catches it up the same way.
    """

    def __init__(self, token: str, incs: dict[str, IncidentState], at_default: int | None) -> None:
        self.token = token
        self.incs = incs
        # the entities with a thread open (stepped on every bucket): kept as threads move, so that
        # choosing the entities a bucket touches costs what talked, not a pass over every entity
        self.open = {e for e, inc in incs.items() if inc.is_open}
        self.dets: dict[str, EntityDetector] = {}  # read from Redis and decoded when first needed
        self.at: dict[str, int] = {}
        self.at_default = at_default  # ``at`` of a detector saved before detectors carried one
        self.changed: set[str] = set()  # entities whose state differs from what Redis holds
        # the decoded entities still behind closed bucket ``behind[0]``, for ``_catch_up_quiet``
        self.behind: tuple[int | None, list[str]] = (None, [])


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
        self._index = {e: i for i, e in enumerate(self.entities)}
        # each entity's holiday calendar (None: none), so every bucket's slot is ``seasonal_hour``'s
        self.calendars = {e: holiday_calendar(settings.holidays_for(e)) for e in self.entities}
        self.B = settings.windows.bucket_seconds
        self.signals_out = 0
        self.incidents_out = 0
        self.skipped = 0  # buckets without events accounted for at once (windows that know where counts are)
        self.watermark: float | None = None  # as of the last tick
        self._river: tuple[_Lazy, _Lazy] | None = None
        self._river_token: str | None = None
        self._river_saved = 0.0
        self._state: _Leader | None = None  # see ``_leader``
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
        try:
            # asked only when a partition's "caught up" report is what the watermark would rest on
            wm = self.watermark = await self.windows.watermark(ends=self._end_offsets if self.end_offsets else None)
        except _NoEndOffsets as exc:  # no end offsets, no proof the reports still hold: judge nothing yet
            if not self._ends_failing:
                logger.warning("detection waits: the broker's end offsets are unavailable (%s)", exc.__cause__)
            self._ends_failing = True
            return 0
        if self._ends_failing and self.end_offsets is not None:
            logger.warning("detection resumes: the broker's end offsets answer again")
        self._ends_failing = False
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

    async def _end_offsets(self) -> dict[int, int]:
        assert self.end_offsets is not None
        try:
            return await self.end_offsets()
        except Exception as exc:
            raise _NoEndOffsets from exc

    def _in_order(self, ents: set[str]) -> list[str]:
        """``ents`` in the configured order (the order verdicts are emitted in, as when every
        entity was visited), sorted rather than found by a pass over every tracked entity."""
        return sorted(ents, key=self._index.__getitem__)

    async def _leader(self, closed: int) -> _Leader:
        """The entities' state, from memory while this engine was the last to save it.

        With a day of learned state an entity's detector is KBs of JSON: reading, decoding,
        encoding and writing all of them on every tick (twice a second) took seconds at a
        thousand entities. Redis holds a token of the last save; a worker that did not write it
        (a new leader after a rebalance, a restart) starts over from Redis: the threads at once
        (an open one is stepped on every bucket), each detector decoded when first needed.
        """
        doc = await self.state.load_blob("det:token")
        token = str(doc["token"]) if doc and "token" in doc else ""
        if self._state is not None and token == self._state.token:
            return self._state
        ents = self.entities
        inc_raw = await self.state.load("inc", ents)

        def decode() -> dict[str, IncidentState]:
            return {e: IncidentState.from_dict(inc_raw[e]) for e in ents}

        incs = await asyncio.to_thread(decode) if len(ents) >= OFFLOAD_ENTITIES else decode()
        since = await self.state.load_blob("det:at")
        if since is None:
            # the first leader whose detectors carry ``at``: each one saved before was saved with
            # every other and the pointer, so it has learned up to the pointer
            since = {"at": closed}
            await self.state.save_blob("det:at", since)
        self._state = _Leader(token, incs, int(since["at"]))
        self._early_seen = (None, {})  # judged against other detectors
        return self._state

    async def _detectors(self, lead: _Leader, ents: list[str], closed: int) -> None:
        """Read and decode the detectors of ``ents`` not decoded yet (off the event loop, in
        pieces): KBs and milliseconds each, so a new leader reads the ones a bucket needs, not
        every one (at 10,000 entities, 140 MB and seconds)."""
        missing = [e for e in ents if e not in lead.dets]
        if not missing:
            return
        cfg, B = self.settings.detect, self.B

        def decode(chunk: list[str], raw: dict[str, Any]) -> None:
            for e in chunk:
                doc = as_doc(raw[e])
                lead.dets[e] = EntityDetector.from_dict(cfg, doc, B)
                # a detector never saved has learned nothing: any bucket after the pointer is new
                at = doc.get("at", lead.at_default) if doc else closed
                lead.at[e] = int(at) if at is not None else closed

        for i in range(0, len(missing), DECODE_CHUNK):
            chunk = missing[i : i + DECODE_CHUNK]
            raw = await self.state.load_raw("det", chunk)
            if len(chunk) >= OFFLOAD_ENTITIES:
                await asyncio.to_thread(decode, chunk, raw)
            else:
                decode(chunk, raw)
            _decoded(len(chunk))

    async def _judge(self, wm: float, last: int, closed: int, ents: list[str], max_buckets: int) -> int:
        B = self.B
        lead = await self._leader(closed)
        dets = lead.dets
        self._dirty = False
        learned = await self._learn_feedback(closed, lead)
        judged = 0
        t = closed + B
        if t <= last:
            drifts, anoms = await self._river_state()
            while t <= last and judged < max_buckets:
                nxt = await self.windows.next_counted(t, last)
                if nxt is None or nxt > t:  # a run of buckets no entity has events in
                    k = ((last + B if nxt is None else nxt) - t) // B
                    await self._idle(t, k, lead)
                    self.skipped += k
                    judged += k
                    t += k * B
                    continue
                # only the entities with events in the bucket, and the open threads (each quiet
                # bucket counts towards resolving): every other detector learns the bucket later
                # (``_catch_up``), exactly, so a bucket costs what talked, not what is tracked
                counted = await self.windows.counted_entities(t)
                touched = ents if counted is None else self._in_order((counted | lead.open) & self._index.keys())
                await self._detectors(lead, touched, closed)
                stats = await self.windows.bucket_stats(touched, t)
                # about a millisecond per entity: hundreds of entities would hold the event loop
                # for the better part of a second on every closed bucket, so a big fleet of
                # entities is judged on a thread (the GIL still hands the loop its turn)
                args = (touched, t, stats, self.calendars, dets, lead.at, B)
                many = len(touched) >= OFFLOAD_ENTITIES
                judged_rows = await asyncio.to_thread(_judge_bucket, *args) if many else _judge_bucket(*args)
                lead.changed.update(e for e, _, _ in judged_rows)
                await anoms.need([e for e, _, zs in judged_rows if zs is not None])
                await drifts.need([*(e for e, _, _ in judged_rows), MODEL])
                watched = (judged_rows, t, anoms)
                rows = await asyncio.to_thread(_watch_rows, *watched) if many else _watch_rows(*watched)
                for i, (e, verdicts, hit) in enumerate(rows):
                    if i % YIELD_EVERY == YIELD_EVERY - 1:
                        await asyncio.sleep(0)  # a thousand entities' signals: the loop runs between
                    if hit is not None:
                        await self._anomaly(e, t, hit, int(stats[e].get("n", 0.0)))
                    await self._advance(lead, e, t, verdicts, stats[e], early=False, anomaly=hit)
                    await self._drift(
                        drifts[e], e, t, "sentiment", stats[e].get("sent_sum", 0.0), stats[e].get("n", 0.0)
                    )
                await self._drift(
                    drifts[MODEL],
                    MODEL,
                    t,
                    "model_error",
                    sum(stats[e].get("model_err", 0.0) for e in touched),
                    sum(stats[e].get("model_n", 0.0) for e in touched),
                )
                judged += 1
                t += B
            if time.monotonic() - self._river_saved >= RIVER_SAVE_SECONDS:
                await self.save_river()
        closed_now = t - B
        if judged == 0 or closed_now >= last:
            await self._early(wm, closed_now, lead, learned_since=judged > 0 or learned > 0)
        if judged or self._dirty or closed_now != closed:
            await self._save(lead, closed_now)
        if learned and self.feedback is not None:
            await self.feedback.feedback_done(learned)
        if judged == 0:
            await self._catch_up_quiet(lead, closed_now)
        return judged

    async def _catch_up_quiet(self, lead: _Leader, closed: int) -> None:
        """Between two closed buckets, learn the quiet entities' deferred empty buckets, a slice
        of ``CATCH_UP_SECONDS`` per tick.

        An entity without events is left alone when a bucket closes (``_catch_up``); left until
        its next event, a thousand entities talking after nine quiet minutes each replayed nine
        buckets in the tick that closed the tenth (1.5 s at 10,000 tracked entities, most of it
        replay). Learning them on the idle ticks in between is exactly the same learning (the
        same empty buckets in the same order) and leaves a closed bucket the entities that
        talked in it. Nothing is marked changed: Redis keeps each detector as last saved, with
        its ``at``, and whoever next reads it replays from there, as before.
        """
        mark, queue = lead.behind
        if mark != closed:
            queue = [e for e, at in lead.at.items() if at < closed]
            lead.behind = (closed, queue)
        if not queue:
            return
        dets, at, B, cals = lead.dets, lead.at, self.B, self.calendars

        def run() -> None:
            deadline = time.perf_counter() + CATCH_UP_SECONDS
            while queue and time.perf_counter() < deadline:
                e = queue.pop()
                if at[e] < closed:
                    _catch_up(dets[e], at, e, closed, B, cals[e])

        await asyncio.to_thread(run) if len(queue) >= OFFLOAD_ENTITIES else run()

    async def _save(self, lead: _Leader, closed: int) -> None:
        """Write the entities whose state changed, and the pointer, in pieces of ``SAVE_CHUNK``.

        Each piece is atomic and each detector carries its ``at``, so a save cut short leaves
        every entity consistent: one saved ahead of the pointer is not judged again on that
        bucket. The token goes first: no engine trusts its memory of the state before this save.
        """
        token = lead.token = uuid.uuid4().hex
        await self.state.save_blob("det:token", {"token": token})
        names = sorted(lead.changed)
        lead.changed = set()
        for i in range(0, max(len(names), 1), SAVE_CHUNK):
            chunk = names[i : i + SAVE_CHUNK]

            def docs(chunk: list[str] = chunk) -> dict[str, dict[str, Any]]:
                return {
                    "det": {e: {**lead.dets[e].to_dict(), "at": lead.at[e]} for e in chunk if e in lead.dets},
                    "inc": {e: lead.incs[e].to_dict() for e in chunk},
                }

            # tens of µs per detector, off the event loop
            doc = await asyncio.to_thread(docs) if len(chunk) >= OFFLOAD_ENTITIES else docs()
            await self.state.save(doc, {"closed": closed} if i + SAVE_CHUNK >= len(names) else {})

    async def _learn_feedback(self, closed: int, lead: _Leader) -> int:
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
            if not isinstance(entity, str) or entity not in lead.incs:
                logger.warning(
                    "false positive %s: %r is not a tracked entity; nothing learned", item.get("action_id"), entity
                )
                continue
            await self._detectors(lead, [entity], closed)
            det, cal = lead.dets[entity], self.calendars[entity]
            _catch_up(det, lead.at, entity, closed, self.B, cal)
            lead.changed.add(entity)
            stats = {t: (await self.windows.bucket_stats([entity], t))[entity] for t in buckets}
            for t, st in stats.items():
                if st.get("n", 0.0) <= 0:
                    logger.warning("false positive on %s at %s: the bucket is no longer held; not learned", entity, t)
                    continue
                widened = det.absorb(st, seasonal_hour(t, cal))
                self.absorbed += 1
                logger.info("false positive on %s at %s learned as normal (%s)", entity, t, ", ".join(widened) or "-")
            self._dirty = True
        return taken

    async def _idle(self, t: int, k: int, lead: _Leader) -> None:
        """Account for ``k`` empty buckets from ``t`` at once: each detector learns them in closed
        form and each open thread sees them as quiet (it resolves after its quiet buckets). Only
        windows that know where the counts are skip (the backtest's, in memory): years of a sparse
        review stream take seconds, not hours."""
        ents, B = self.entities, self.B
        await self._detectors(lead, ents, t - B)

        def run() -> None:
            for e in ents:
                _catch_up(lead.dets[e], lead.at, e, t - B, B, self.calendars[e])
                if lead.at[e] < t:
                    lead.dets[e].idle(k)
                    lead.at[e] = t + (k - 1) * B

        await asyncio.to_thread(run) if len(ents) >= OFFLOAD_ENTITIES else run()
        lead.changed.update(ents)
        quiet = self.settings.detect.resolve_after_quiet_buckets
        for e in ents:
            inc = lead.incs[e]
            for j in range(min(k, quiet) if inc.is_open else 0):
                tb = t + j * B
                tr = step(inc, e, bucket_dt(tb), [], quiet_buckets=quiet)
                _track(lead, e)
                if tr is not None:
                    await self.emit_incident(await self._incident(e, tb, tr, [], {}, early=False))
                    self.incidents_out += 1

    async def _river_state(self) -> tuple[_Lazy, _Lazy]:
        """The River watches, from memory while this engine was the last to save them.

        Decoding a HalfSpaceTrees forest takes milliseconds, and the leader's timer ticks twice a
        second: reading them from Redis on every tick stalled the event loop (end-to-end
        throughput halved). Redis holds a token of the last save; a worker that did not write it
        (a new leader after a rebalance, a restart) loads the saved state once.
        """
        doc = await self.state.load_blob("river:token")
        token = str(doc["token"]) if doc and "token" in doc else None
        if self._river is None or token != self._river_token:
            drifts = _Lazy(self.state, "drift:", DriftWatch.from_dict)
            anoms = _Lazy(self.state, "anom:", AnomalyWatch.from_dict)
            await drifts.need([MODEL])  # the model's own watch learns every bucket
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

    async def _early(self, wm: float, closed: int, lead: _Leader, learned_since: bool = True) -> None:
        """Open an incident inside a bucket still filling when the evidence is overwhelming."""
        B = self.B
        t = int(wm // B) * B
        if t <= closed:
            return
        # partitions ahead of the watermark have already counted more of this bucket: expect the
        # share of it that the furthest partition has seen, or early firing overreacts to skew
        high = await self.windows.watermark(high=True) or wm
        frac = min(1.0, max((high - t) / B, 1.0 / B))
        # only entities whose part of the filling bucket grew since the last look, with no thread
        # open (early firing only opens threads; the closed buckets continue them): the same counts
        # against a larger share of the bucket expected can only read lower, and an entity with
        # no event in the bucket cannot spike. With thousands of entities most ticks judge few.
        counted = await self.windows.counted_entities(t)
        if counted is None:
            cand = [e for e in self.entities if e not in lead.open]
        else:
            cand = self._in_order((counted & self._index.keys()) - lead.open)
        stats = await self.windows.bucket_stats(cand, t)
        if self._early_seen[0] != t or learned_since:
            self._early_seen = (t, {})
        seen = self._early_seen[1]
        ents = [e for e in cand if stats[e] and seen.get(e) != stats[e]]
        seen.update((e, stats[e]) for e in ents)
        await self._detectors(lead, ents, closed)
        lead.changed.update(ents)  # caught up to the closed buckets
        cfg, cals, dets = self.settings.detect, self.calendars, lead.dets

        def judge_all() -> list[tuple[str, list[Verdict]]]:
            out = []
            for e in ents:
                _catch_up(dets[e], lead.at, e, closed, B, cals[e])
                how = seasonal_hour(t, cals[e])
                out.append((e, [v for v in dets[e].judge(stats[e], how, frac) if v.z >= cfg.critical_z]))
            return out

        rows = await asyncio.to_thread(judge_all) if len(ents) >= OFFLOAD_ENTITIES else judge_all()
        for e, verdicts in rows:
            if verdicts:
                await self._advance(lead, e, t, verdicts, stats[e], early=True)

    async def _advance(
        self,
        lead: _Leader,
        e: str,
        t: int,
        verdicts: list[Verdict],
        stats: dict[str, float],
        *,
        early: bool,
        anomaly: AnomalyHit | None = None,
    ) -> None:
        inc = lead.incs[e]
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
        _track(lead, e)
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
