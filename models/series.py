"""Streaming detectors on plain ``(timestamp, value)`` series, for ``repmon eval detect``.

:class:`SeriesDetector` is the stream's detector (:mod:`models.detect`) applied to an arbitrary
metric: the same seasonal (hour-of-week) exponentially weighted baseline, the same standardised
score with a noise floor, the same rule that a firing point teaches the baseline little, and
"one anomaly, one alert": after firing it re-arms only once the score has settled (hysteresis),
like an incident thread. Two-sided, since a metric can break by falling as well as rising.

Baselines, run in the same pass by the evaluation:

- :class:`RollingPeak`: rolling mean + 3 sigma over the last ``window`` points (the classic peak
  detector, e.g. Huginn's PeakDetectorAgent), firing whenever the value exceeds it;
- :class:`HalfSpaceTreesDetector`: River's ``anomaly.HalfSpaceTrees`` at its defaults behind a
  ``MinMaxScaler`` (as River's docs show), flagged by ``anomaly.QuantileFilter(q=0.99)``: a point
  is an anomaly when its score is in the top 1% seen so far (no labels used to pick it).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import datetime

from river import anomaly, compose, preprocessing

from models.detect import FIRED_WEIGHT, SignalState

__all__ = ["HalfSpaceTreesDetector", "RollingPeak", "SeriesDetector", "how_of"]


def how_of(ts: datetime) -> int:
    """Hour of the week, Monday 00h = 0."""
    return ts.weekday() * 24 + ts.hour


class SeriesDetector:
    """Seasonal EW baseline + standardised score + hysteresis, on one metric.

    >>> from datetime import datetime, timedelta
    >>> t0 = datetime(2026, 1, 5)
    >>> d = SeriesDetector(interval_seconds=300, warmup=50)
    >>> xs = [10 + (i % 7) * 0.1 for i in range(400)] + [30.0] + [10.0] * 20
    >>> [i for i, x in enumerate(xs) if d.update(t0 + timedelta(minutes=5 * i), x) is not None]
    [400]
    """

    def __init__(
        self,
        *,
        interval_seconds: float,
        threshold: float = 5.0,
        warmup: int = 100,
        halflife: float = 200.0,
        rearm_below: float = 2.0,
        rearm_points: int = 5,
    ) -> None:
        self.per_hour = max(3600.0 / max(interval_seconds, 1.0), 1.0)
        self.threshold = threshold
        self.warmup = warmup
        self.alpha = 1.0 - 0.5 ** (1.0 / halflife)
        self.rearm_below = rearm_below
        self.rearm_points = rearm_points
        self.state = SignalState()
        self.seen = 0
        self.armed = True
        self.calm = 0

    def update(self, ts: datetime, x: float) -> float | None:
        """Feed a point; returns its z when the detector fires on it, else None."""
        how = how_of(ts)
        m, s = self.state.baseline(how, self.per_hour)
        # noise floor: a flat history must not make any wiggle infinitely surprising
        floor = max(1e-3 * abs(m), 1e-6, 0.1 * self.state.overall.std)
        z = (x - m) / max(s, floor) if self.seen else 0.0
        self.seen += 1
        hot = abs(z) >= self.threshold
        fired = None
        if self.seen > self.warmup and hot and self.armed:
            fired, self.armed, self.calm = z, False, 0
        if not self.armed:
            self.calm = self.calm + 1 if abs(z) < self.rearm_below else 0
            if self.calm >= self.rearm_points:
                self.armed = True
        if fired is not None:
            # the point that fires teaches little, clipped to the threshold; once an anomaly has
            # been reported, later points teach fully, so a lasting change becomes the new normal
            # instead of a stream of alerts (one anomaly, one alert)
            band = self.threshold * max(s, floor)
            self.state.learn(min(max(x, m - band), m + band), self.alpha, how, FIRED_WEIGHT, per_hour=self.per_hour)
        else:
            self.state.learn(x, self.alpha, how, per_hour=self.per_hour)
        return fired

    def detect(self, series: Iterable[tuple[datetime, float]]) -> list[int]:
        return [i for i, (ts, x) in enumerate(series) if self.update(ts, x) is not None]


class RollingPeak:
    """Rolling mean + k sigma of the last ``window`` points."""

    def __init__(self, window: int = 100, k: float = 3.0, min_points: int = 5) -> None:
        self.buf: deque[float] = deque(maxlen=window)
        self.k = k
        self.min_points = min_points

    def update(self, x: float) -> bool:
        fire = False
        if len(self.buf) >= self.min_points:
            mean = statistics.fmean(self.buf)
            sd = statistics.pstdev(self.buf)
            fire = x > mean + self.k * sd
        self.buf.append(x)
        return fire

    def detect(self, values: Sequence[float]) -> list[int]:
        return [i for i, x in enumerate(values) if self.update(x)]


class HalfSpaceTreesDetector:
    """River HalfSpaceTrees (defaults) behind MinMaxScaler, thresholded by QuantileFilter(0.99)."""

    def __init__(self, q: float = 0.99, seed: int = 42) -> None:
        self.model = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=seed))
        self.filter = anomaly.QuantileFilter(self.model, q=q)

    def detect(self, values: Sequence[float]) -> list[int]:
        out = []
        for i, x in enumerate(values):
            feats = {"x": x}
            score = self.filter.score_one(feats)
            if i > 0 and self.filter.classify(score) and not math.isnan(score):
                out.append(i)
            self.filter.learn_one(feats)
        return out
