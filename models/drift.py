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

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from river import drift

__all__ = ["DriftWatch"]

HISTORY = 2048  # buckets of input kept as state (a day and a half of minute buckets)


@dataclass
class DriftWatch:
    delta: float = 0.002
    min_support: int = 10
    cooldown: int = 60
    detector: drift.ADWIN = field(default_factory=lambda: drift.ADWIN(delta=0.002, clock=1))
    quiet: int = 0
    last_mean: float | None = None
    seen: int = 0
    # the inputs ADWIN saw, newest last: its state as plain numbers (replayed on restore)
    history: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    # the last bucket fed and whether it fired: feeding it again (a tick that was not saved)
    # gives the same answer and feeds ADWIN nothing twice
    last_at: int | None = None
    last_fired: bool = False

    def __post_init__(self) -> None:
        # clock=1: check on every bucket (the default 32 suits per-event streams, not buckets)
        self.detector = drift.ADWIN(delta=self.delta, clock=1)

    def update(self, value: float, support: float, at: int | None = None) -> bool:
        """Feed one bucket's rate; True when a change is detected (once per change). ``at`` (the
        bucket's start) makes it idempotent: a bucket at or before the last one fed is not fed
        again, and the last one gives its answer again.

        >>> w = DriftWatch(min_support=1)
        >>> w.update(0.2, 10, at=60), w.update(0.2, 10, at=60), w.update(0.9, 10, at=0), w.seen
        (False, False, False, 1)
        """
        if support < self.min_support:
            return False
        if at is not None and self.last_at is not None and at <= self.last_at:
            return self.last_fired if at == self.last_at else False
        fired = self._update(value)
        if at is not None:
            self.last_at, self.last_fired = at, fired
        return fired

    def _update(self, value: float) -> bool:
        self.seen += 1
        self.history.append(float(value))
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

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON state: the parameters, the counters and the recent inputs.

        >>> w = DriftWatch(min_support=1, cooldown=5)
        >>> for v in [0.1, 0.2, 0.1]:
        ...     _ = w.update(v, 10)
        >>> w2 = DriftWatch.from_dict(w.to_dict())
        >>> list(w2.history), w2.seen, round(w2.estimation, 3) == round(w.estimation, 3)
        ([0.1, 0.2, 0.1], 3, True)
        """
        return {
            "v": 1,
            "delta": self.delta,
            "min_support": self.min_support,
            "cooldown": self.cooldown,
            "quiet": self.quiet,
            "last_mean": self.last_mean,
            "seen": self.seen,
            "history": list(self.history),
            "last_at": self.last_at,
            "last_fired": self.last_fired,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, **defaults: Any) -> DriftWatch:
        """Restore from :meth:`to_dict`: ADWIN is rebuilt by replaying the recent inputs, which
        reproduces its adaptive window (it only ever keeps the inputs since its last change)."""
        if not d or d.get("v") != 1:
            return cls(**defaults)
        w = cls(delta=float(d["delta"]), min_support=int(d["min_support"]), cooldown=int(d["cooldown"]))
        for v in d.get("history", [])[-HISTORY:]:
            w.history.append(float(v))
            w.detector.update(float(v))
        w.quiet = int(d.get("quiet", 0))
        w.last_mean = d.get("last_mean")
        w.seen = int(d.get("seen", 0))
        w.last_at = int(d["last_at"]) if d.get("last_at") is not None else None
        w.last_fired = bool(d.get("last_fired", False))
        return w
