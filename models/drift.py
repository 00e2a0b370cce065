"""Drift watches: has the sentiment distribution, or the sentiment model's own error, changed?

River's ADWIN keeps an adaptive window and flags a change when two sub-windows' means differ
beyond a Hoeffding bound. Fed raw, drift detectors cry wolf (river#574: the same drift reported
twice or more; FIELD.md: PageHinkley fires 122 times per 10k stable counts), so here:

- inputs are per-bucket rates with a minimum support (a bucket with 3 scored texts is skipped);
- after a detection the watch is quiet for ``cooldown`` buckets (one change = one report);
- a drift is reported as an ``info`` signal: evidence for responders and a reason to retrain,
  never a page on its own.

>>> w = DriftWatch(min_support=5, cooldown=10)
>>> import random
>>> rng = random.Random(0)
>>> hits = [i for i in range(600) if w.update(rng.gauss(0.1 if i < 300 else -0.4, 0.05), 20)]
>>> len(hits), 300 <= hits[0] < 330
(1, True)
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

from river import drift

__all__ = ["DriftWatch"]


@dataclass
class DriftWatch:
    delta: float = 0.002
    min_support: int = 10
    cooldown: int = 60
    detector: drift.ADWIN = field(default_factory=lambda: drift.ADWIN(delta=0.002, clock=1))
    quiet: int = 0
    last_mean: float | None = None
    seen: int = 0

    def __post_init__(self) -> None:
        # clock=1: check on every bucket (the default 32 suits per-event streams, not buckets)
        self.detector = drift.ADWIN(delta=self.delta, clock=1)

    def update(self, value: float, support: float) -> bool:
        """Feed one bucket's rate; True when a change is detected (once per change)."""
        if support < self.min_support:
            return False
        self.seen += 1
        self.detector.update(value)
        if self.quiet > 0:
            self.quiet -= 1
            return False
        if self.detector.drift_detected:
            self.quiet = self.cooldown
            return True
        self.last_mean = self.detector.estimation
        return False

    @property
    def estimation(self) -> float:
        return float(self.detector.estimation)

    def to_bytes(self) -> bytes:
        return pickle.dumps(self)

    @staticmethod
    def from_bytes(data: bytes | None, **kwargs: float) -> DriftWatch:
        if not data:
            return DriftWatch(**kwargs)  # type: ignore[arg-type]
        obj = pickle.loads(data)  # noqa: S301 - our own state from our own Redis
        if not isinstance(obj, DriftWatch):
            return DriftWatch(**kwargs)  # type: ignore[arg-type]
        return obj
