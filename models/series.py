"""Streaming detectors on plain ``(timestamp, value)`` series, for ``repmon eval detect``.

:class:`SeriesDetector` applies the ideas of the stream's per-entity detector
(:mod:`models.detect`) to an arbitrary count or metric series, one point at a time:

- **seasonal baseline**: an exponentially weighted level plus seasonal offsets per hour of the
  day and per hour of the week (additive, Holt-Winters style: the level learns the deseasonalised
  value, each slot learns its deviation from the level). A slot is blended in by how much history
  it has (fully trusted after ``season_visits`` visits, i.e. two days / two weeks), so until then
  the prediction falls back to hour-of-day, then to the level alone;
- **standardised score**: ``z = (x - prediction) / scale``, ``scale`` the EW root mean square of
  past prediction errors, never below a noise floor (Poisson ``sqrt(prediction)`` for count
  series, as in :mod:`models.detect`; for counts going up, ``z`` is also capped by the exact
  Poisson tail);
- **minimum support**: nothing fires before ``warmup`` points, and a count series fires upward
  only from ``min_count`` events and downward only from a baseline of ``min_count`` (a quiet
  series at night does not page anyone);
- **robust learning**: a point teaches the baseline at most the threshold value (``x`` clipped to
  ``prediction +- threshold * scale``), as a firing bucket does in :mod:`models.detect`, so one
  outlier neither drags the level nor blinds the detector; a lasting change is still learned at
  the baseline's speed (half-life ``halflife`` points), so a level shift is reported once and then
  becomes the new normal;
- **fire on the rise**: the first point whose ``|z|`` crosses ``threshold`` fires (two-sided: a
  metric can break by falling), then the detector is silent for ``refractory`` points, so one
  anomaly is one detection.

Drift detectors on the standardised residual (``drift_detector="adwin"`` or ``"page_hinkley"``: a
detected change re-centres the level; ``drift_fires=True`` also reports it) were evaluated and
are off by default. NAB standard-profile scores on ``nab_dev`` (and on a synthetic corpus of 60
count/metric series with spikes, shifts and drops): without 56.9 (60.2); ADWIN re-centring 37.9
(55.2), reporting 25.5 (52.6); Page-Hinkley re-centring 42.3 (55.7), reporting 29.6 (51.6).
Clipped learning already absorbs a level shift after one detection, while drift detectors add
false positives and re-centre on noise (compare FIELD.md on River's detectors at defaults).

Defaults are principled, not fitted to files: ``threshold`` 5 and ``min_count`` 10 are the
stream's :class:`infra.settings.DetectSettings` defaults; half-life 100 points (an effective
sample of ~290 points for the variance), refractory half a half-life. Nearby values score
within a few points on ``nab_dev`` (threshold 4: 48.4, 6: 44.4; half-life 200: 55.1;
refractory 100: 55.1), so the defaults are not on a knife edge.

Baselines, run in the same pass by the evaluation:

- :class:`RollingPeak`: Huginn's PeakDetectorAgent, a peak when a value exceeds the mean + 3
  standard deviations of the previous points in the window (14 days, or the last N points), at
  least 2 days after the previous peak, from 4 points on;
- :class:`HalfSpaceTreesDetector`: River's ``anomaly.HalfSpaceTrees`` at its defaults behind a
  ``preprocessing.MinMaxScaler`` (as River's docs show), thresholded by River's
  ``anomaly.QuantileFilter``: a point is anomalous when its score is in the top ``1 - q`` of the
  scores seen so far, ``q = 0.999`` being a prior on how rare anomalies are (about one point in a
  thousand), chosen without looking at labels; like the others it fires when the score first
  crosses the threshold, not on every point above it.

>>> from datetime import UTC, datetime, timedelta
>>> t0 = datetime(2026, 1, 5, tzinfo=UTC)
>>> xs = [100.0 + 20 * (8 <= i % 24 <= 18) + (i % 7) for i in range(24 * 21)]
>>> xs[24 * 18 + 3] = 300.0  # a spike at 3 in the morning on day 18
>>> hits = SeriesDetector(warmup=48).detect((t0 + timedelta(hours=i), x) for i, x in enumerate(xs))
>>> hits == [t0 + timedelta(hours=24 * 18 + 3)]
True
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from river import anomaly, compose, drift, preprocessing
from scipy import stats as _st

from infra.settings import DetectSettings
from models.detect import EntityDetector, _tail_z
from models.seasons import holiday_calendar, seasonal_hour

__all__ = [
    "EntityVolumeDetector",
    "HalfSpaceTreesDetector",
    "RollingPeak",
    "SeriesDetector",
    "StreamDetector",
    "how_of",
]

MIN_SCALE_POINTS = 10

DriftKind = Literal["none", "adwin", "page_hinkley"]
Season = Literal["none", "day", "week", "day+week"]


class StreamDetector(Protocol):
    """What the evaluation runs: one point at a time, detections as timestamps."""

    def update(self, ts: datetime, value: float) -> float | None: ...

    def detect(self, series: Iterable[tuple[datetime, float]]) -> list[datetime]: ...


def how_of(ts: datetime) -> int:
    """Hour of the week, Monday 00h = 0.

    >>> how_of(datetime(2026, 1, 6, 5))  # a Tuesday
    29
    """
    return ts.weekday() * 24 + ts.hour


@dataclass(slots=True)
class _Slot:
    """A seasonal slot: EW mean of the deviation from the level, and how often it was visited."""

    offset: float = 0.0
    n: int = 0
    visits: int = 0
    last: datetime | None = None

    def learn(self, ts: datetime, dev: float, alpha: float) -> None:
        if self.last is None or ts - self.last > timedelta(hours=1):
            self.visits += 1
        self.last = ts
        self.offset = dev if self.n == 0 else self.offset + alpha * (dev - self.offset)
        self.n += 1


class SeriesDetector:
    """Seasonal EW baseline, standardised score, minimum support, fire on the rise (module doc).

    ``update(ts, value)`` returns the point's z when the detector fires on it, else None;
    ``detect(series)`` returns the timestamps it fired on. Timestamps should be timezone-aware
    (seasonal slots use their hour and weekday as given).
    """

    def __init__(
        self,
        *,
        threshold: float = 5.0,
        warmup: int = 100,
        halflife: float = 100.0,
        refractory: int = 50,
        season: Season = "day+week",
        season_visits: float = 2.0,
        two_sided: bool = True,
        counts: bool | None = None,
        min_count: float = 10.0,
        drift_detector: DriftKind = "none",
        drift_fires: bool = False,
        interval_seconds: float | None = None,
    ) -> None:
        """
        ``counts``: None = decide from the data (non-negative integers so far).
        ``interval_seconds``: sampling interval; None = the median of the first gaps.
        """
        if threshold <= 0 or halflife <= 1 or refractory < 0 or warmup < 0:
            raise ValueError("threshold > 0, halflife > 1, refractory >= 0 and warmup >= 0 are required")
        self.threshold = threshold
        self.warmup = warmup
        self.alpha = 1.0 - 0.5 ** (1.0 / halflife)
        self.refractory = refractory
        self.season = season
        self.season_visits = season_visits
        self.two_sided = two_sided
        self.counts = counts
        self.min_count = min_count
        self.drift_fires = drift_fires
        self.interval = interval_seconds
        self.drift: drift.ADWIN | drift.PageHinkley | None = None
        if drift_detector == "adwin":
            self.drift = drift.ADWIN(clock=1)  # check every point (the default 32 suits event streams)
        elif drift_detector == "page_hinkley":
            self.drift = drift.PageHinkley(threshold=50.0)
        self.level = 0.0
        self.var = 0.0
        self.day: dict[int, _Slot] = {}
        self.week: dict[int, _Slot] = {}
        self.seen = 0
        self.since_fire: int | None = None
        self.integers = True
        self._gaps: list[float] = []
        self._last_ts: datetime | None = None

    @classmethod
    def from_settings(cls, cfg: DetectSettings, **kwargs: Any) -> SeriesDetector:
        """The stream's thresholds: ``z_threshold`` and ``min_volume`` from :class:`DetectSettings`."""
        kwargs.setdefault("threshold", cfg.z_threshold)
        kwargs.setdefault("min_count", float(cfg.min_volume))
        return cls(**kwargs)

    @property
    def per_hour(self) -> float:
        """Points per hour: one visit of a seasonal slot is this many points."""
        gap = self.interval if self.interval is not None else (statistics.median(self._gaps) if self._gaps else 3600.0)
        return max(3600.0 / max(gap, 1.0), 1.0)

    def _offset(self, ts: datetime) -> float:
        off = 0.0
        if self.season in ("day", "day+week"):
            s = self.day.get(ts.hour)
            if s is not None and s.n:
                off = min(1.0, s.visits / self.season_visits) * s.offset
        if self.season in ("week", "day+week"):
            s = self.week.get(how_of(ts))
            if s is not None and s.n:
                w = min(1.0, s.visits / self.season_visits)
                off = (1.0 - w) * off + w * s.offset
        return off

    def _is_count(self) -> bool:
        return self.counts if self.counts is not None else self.integers

    def score(self, ts: datetime, x: float) -> tuple[float, float, float]:
        """``(z, prediction, scale)`` of a point, without learning from it."""
        pred = self.level + self._offset(ts)
        floor = max(1e-9, 1e-3 * abs(self.level))
        if self._is_count():
            floor = max(floor, math.sqrt(max(pred, 1.0)))
        scale = max(math.sqrt(self.var), floor)
        if self.seen < 2:
            return 0.0, pred, scale
        z = (x - pred) / scale
        if z >= self.threshold and self._is_count():
            z = min(z, _tail_z(float(_st.poisson.sf(x - 1, max(pred, 0.5)))))
        return z, pred, scale

    def _hot(self, z: float, x: float, pred: float) -> bool:
        if z >= self.threshold:
            return not (self._is_count() and x < self.min_count)
        if self.two_sided and -z >= self.threshold:
            return not (self._is_count() and pred < self.min_count)
        return False

    def update(self, ts: datetime, value: float) -> float | None:
        """Judge a point, then learn from it; its z if the detector fires on it, else None.

        A missing value (NaN, inf) is skipped: it neither fires nor teaches.
        """
        x = float(value)
        if not math.isfinite(x):
            return None
        if self._last_ts is not None and len(self._gaps) < 50 and ts > self._last_ts:
            self._gaps.append((ts - self._last_ts).total_seconds())
        self._last_ts = ts
        if self.integers and (x < 0 or not x.is_integer()):
            self.integers = False
        off = self._offset(ts)
        z, pred, scale = self.score(ts, x)
        hot = self._hot(z, x, pred)
        changed = False
        if self.drift is not None and self.seen >= 2:
            self.drift.update(max(min(z, 10.0), -10.0))
            changed = bool(self.drift.drift_detected)
        self.seen += 1

        fired: float | None = None
        armed = self.since_fire is None or self.since_fire >= self.refractory
        if self.seen > self.warmup and armed and (hot or (changed and self.drift_fires)):
            fired, self.since_fire = z, 0
        elif self.since_fire is not None:
            self.since_fire += 1

        # learn: plain averages over the first 1/alpha points, then EW; once a scale exists (from
        # the 10th point) a point teaches at most the threshold value
        alpha = max(self.alpha, 1.0 / self.seen)
        err = x - pred
        if self.seen >= MIN_SCALE_POINTS:
            band = self.threshold * scale
            err = min(max(err, -band), band)
            x = pred + err
        if self.seen == 1:
            self.level = x - off
        else:
            self.level += alpha * err
            self.var += alpha * (err * err - self.var)
        if changed:
            self.level = float(value) - off
        slot_alpha = 1.0 - 0.5 ** (1.0 / (2.0 * self.per_hour))  # a slot's half-life: two visits
        dev = x - self.level
        if self.season in ("day", "day+week"):
            self.day.setdefault(ts.hour, _Slot()).learn(ts, dev, slot_alpha)
        if self.season in ("week", "day+week"):
            self.week.setdefault(how_of(ts), _Slot()).learn(ts, dev, slot_alpha)
        return fired

    def detect(self, series: Iterable[tuple[datetime, float]]) -> list[datetime]:
        """Feed a whole series; the timestamps the detector fired on."""
        return [ts for ts, x in series if self.update(ts, x) is not None]


class RollingPeak:
    """Rolling mean + ``k`` sigma peak detector, as Huginn's PeakDetectorAgent.

    A peak is a value above ``mean + k * std`` (population std) of the previous points in the
    window (a duration, default 14 days, or the last N points), from ``min_points`` points on and
    at least ``spacing`` (a duration or a number of points) after the previous peak.

    >>> from datetime import UTC, datetime, timedelta
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> vals = [5, 6, 4, 5, 4, 5, 15, 11, 8, 50, 4, 5]  # Huginn's own test: 50 is too close
    >>> [t.hour for t in RollingPeak().detect((t0 + timedelta(hours=i), v) for i, v in enumerate(vals))]
    [6]
    """

    def __init__(
        self,
        window: int | timedelta = timedelta(days=14),
        k: float = 3.0,
        min_points: int = 4,
        spacing: int | timedelta | None = timedelta(days=2),
        two_sided: bool = False,
        warmup: int = 0,
    ) -> None:
        self.window = window
        self.k = k
        self.min_points = min_points
        self.spacing = spacing
        self.two_sided = two_sided
        self.warmup = warmup
        self.buf: deque[tuple[datetime, float]] = deque()
        self._shift = 0.0
        self._s = 0.0
        self._s2 = 0.0
        self.i = 0
        self.last_peak: tuple[int, datetime] | None = None

    def update(self, ts: datetime, value: float) -> float | None:
        x = float(value)
        if not math.isfinite(x):
            return None
        fired = None
        while self.buf and self._expired(ts):
            _, old = self.buf.popleft()
            self._s -= old - self._shift
            self._s2 -= (old - self._shift) ** 2
        n = len(self.buf)
        if n >= self.min_points and self.i >= self.warmup and self._spaced(ts):
            m = self._s / n
            sd = math.sqrt(max(self._s2 / n - m * m, 0.0))
            mean = self._shift + m
            if x > mean + self.k * sd or (self.two_sided and x < mean - self.k * sd):
                fired = (x - mean) / sd if sd > 0 else math.copysign(math.inf, x - mean)
                self.last_peak = (self.i, ts)
        if not self.buf:
            self._shift, self._s, self._s2 = x, 0.0, 0.0  # sums of deviations from a nearby value
        self.buf.append((ts, x))
        self._s += x - self._shift
        self._s2 += (x - self._shift) ** 2
        self.i += 1
        return fired

    def _spaced(self, ts: datetime) -> bool:
        if self.last_peak is None or self.spacing is None:
            return True
        if isinstance(self.spacing, int):
            return self.i - self.last_peak[0] > self.spacing
        return ts - self.last_peak[1] > self.spacing

    def _expired(self, ts: datetime) -> bool:
        if isinstance(self.window, int):
            return len(self.buf) > self.window
        return self.buf[0][0] <= ts - self.window

    def detect(self, series: Iterable[tuple[datetime, float]]) -> list[datetime]:
        return [ts for ts, x in series if self.update(ts, x) is not None]


class HalfSpaceTreesDetector:
    """River HalfSpaceTrees (defaults) behind a MinMaxScaler, thresholded by a quantile filter.

    ``q``: the score quantile, over the scores seen so far, above which a point is anomalous
    (River's ``anomaly.QuantileFilter``, which also keeps anomalous points out of the trees).
    ``threshold``: a fixed score threshold instead (River's ``anomaly.ThresholdFilter``).
    Fires when the score first crosses the threshold (``edge=False``: on every point above it).
    """

    def __init__(
        self,
        q: float = 0.999,
        threshold: float | None = None,
        edge: bool = True,
        seed: int = 42,
        warmup: int = 0,
    ) -> None:
        hst = anomaly.HalfSpaceTrees(seed=seed)
        self.filter: anomaly.QuantileFilter | anomaly.ThresholdFilter = (
            anomaly.ThresholdFilter(hst, threshold=threshold)
            if threshold is not None
            else anomaly.QuantileFilter(hst, q=q)
        )
        self.model = compose.Pipeline(preprocessing.MinMaxScaler(), self.filter)
        self.edge = edge
        self.warmup = warmup
        self.above = False
        self.i = 0

    def update(self, ts: datetime, value: float) -> float | None:
        if not math.isfinite(value):
            return None
        feats = {"x": float(value)}
        score = float(self.model.score_one(feats))
        above = self.i > 0 and bool(self.filter.classify(score))
        self.model.learn_one(feats)
        fire = above and self.i >= self.warmup and not (self.edge and self.above)
        self.above = above
        self.i += 1
        return score if fire else None

    def detect(self, series: Iterable[tuple[datetime, float]]) -> list[datetime]:
        return [ts for ts, x in series if self.update(ts, x) is not None]


class EntityVolumeDetector:
    """The worker's own :class:`models.detect.EntityDetector` on a plain count series.

    Each point is one closed bucket ``{"n": value}`` (bucket length = the series' spacing, its
    seasonal slot from its timestamp in UTC, a holiday of ``cfg.holidays`` read as a Sunday, by the
    engine's own :func:`models.seasons.seasonal_hour`), judged then learned exactly as the live engine does it
    (:meth:`streams.detection.DetectionEngine.tick`). With ``early`` (the default), the bucket is
    also judged as it fills, at ``frac`` = 1/4, 1/2 and 3/4 of its count, as the engine's early
    firing does (a partial bucket fires only at ``critical_z``). A detection is the *onset* of a
    volume episode (the first verdict of the ``volume``/``trending`` signal after
    ``episode_gap_seconds`` without one): one detection per anomaly, as NAB rewards. Severity does
    not matter here: with counts alone, a volume rise is ``trending`` (info).
    """

    def __init__(self, cfg: DetectSettings | None = None, *, warmup: int = 100, early: bool = True) -> None:
        self.cfg = (cfg or DetectSettings()).model_copy(update={"warmup_buckets": max(1, warmup)})
        self.early = early
        self.calendar = holiday_calendar(self.cfg.holidays)
        self.det: EntityDetector | None = None
        self.first: tuple[datetime, float] | None = None

    def _slot(self, ts: datetime) -> int:
        aware = ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)  # naive timestamps are UTC (NAB's)
        return seasonal_hour(int(aware.timestamp()), self.calendar)

    def update(self, ts: datetime, value: float) -> float | None:
        if not math.isfinite(value):
            return None
        x = max(float(value), 0.0)
        if self.det is None:
            if self.first is None:
                self.first = (ts, x)  # the bucket length is known from the second row on
                return None
            step = max(1, int((ts - self.first[0]).total_seconds()))
            self.det = EntityDetector(self.cfg, bucket_seconds=step)
            self.det.update({"n": self.first[1]}, self._slot(self.first[0]))
        how = self._slot(ts)
        z: float | None = None
        if self.early:
            for frac in (0.25, 0.5, 0.75):
                part = {"n": x * frac}
                hits = [
                    v
                    for v in self.det.judge(part, how, frac)
                    if v.key == "volume" and v.onset and v.z >= self.cfg.critical_z
                ]
                if hits:
                    z = hits[0].z
                    break
        verdicts = [v for v in self.det.update({"n": x}, how) if v.key == "volume"]
        if z is None and verdicts and verdicts[0].onset:
            z = verdicts[0].z
        return z

    def detect(self, series: Iterable[tuple[datetime, float]]) -> list[datetime]:
        return [ts for ts, x in series if self.update(ts, x) is not None]
