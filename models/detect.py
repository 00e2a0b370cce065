"""Per-entity detectors on closed event-time buckets (pure: dict in, verdicts out).

Each signal keeps an exponentially weighted baseline (mean and variance) of its own history.
A bucket is judged on a standardised input: ``z = (value - baseline) / scale`` where ``scale``
never falls below the sampling noise the value must have anyway (Poisson for counts, binomial
for shares). That floor is what keeps a quiet brand at night from paging anyone: five mentions
instead of one is not a crisis. A detector may not fire before ``warmup_buckets`` of history,
nor on fewer than ``min_volume`` events (``min_negative`` negative events for negative share).

At small counts the normal approximation's tail is far too thin (a 12-mention bucket with 7
negative ones is a 4-sigma event to it, yet happens once a day by chance), so each z-score is
also computed from the exact tail, Poisson for counts and binomial for shares, and the smaller
of the two is used: ``z = isf(P(X >= x))``.

A bucket that fires updates the baseline with the value clipped to the threshold, so a crisis
does not teach the baseline that crisis is normal.

>>> from scipy import stats as _st

from infra.settings import DetectSettings
>>> det = EntityDetector(DetectSettings(warmup_buckets=5, min_volume=5, min_negative=3))
>>> for _ in range(20):
...     _ = det.update({"n": 20, "neg": 3})
>>> [v.signal for v in det.update({"n": 120, "neg": 90})]
['volume', 'negative_share']
>>> det.update({"n": 21, "neg": 3})
[]
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from scipy import stats as _st

from infra.settings import DetectSettings

__all__ = ["EntityDetector", "EwStat", "Verdict", "severity_for"]

Severity = Literal["info", "warning", "critical"]


@dataclass(slots=True)
class EwStat:
    """Exponentially weighted mean and variance (West's incremental form)."""

    mean: float = 0.0
    var: float = 0.0
    n: int = 0

    def update(self, x: float, alpha: float) -> None:
        if self.n == 0:
            self.mean, self.var = x, 0.0
        else:
            diff = x - self.mean
            incr = alpha * diff
            self.mean += incr
            self.var = (1.0 - alpha) * (self.var + diff * incr)
        self.n += 1

    @property
    def std(self) -> float:
        return math.sqrt(max(self.var, 0.0))


@dataclass(frozen=True, slots=True)
class Verdict:
    """A detector firing on one bucket."""

    signal: str
    value: float
    baseline: float
    scale: float
    z: float
    support: int
    severity: Severity
    detector: str
    aspect: str | None = None


def _tail_z(p_value: float) -> float:
    """Equivalent one-sided z of a tail probability.

    >>> round(_tail_z(0.5), 3), round(_tail_z(3.167e-5), 1)
    (0.0, 4.0)
    """
    return float(_st.norm.isf(min(max(p_value, 1e-300), 1.0)))


def severity_for(z: float, cfg: DetectSettings) -> Severity:
    return "critical" if z >= cfg.critical_z else "warning"


@dataclass
class EntityDetector:
    """Volume and negative-share detectors for one entity. State is plain data (``to_dict``)."""

    cfg: DetectSettings
    volume: EwStat = field(default_factory=EwStat)
    neg_share: EwStat = field(default_factory=EwStat)
    buckets: int = 0

    @property
    def alpha(self) -> float:
        return 1.0 - 0.5 ** (1.0 / self.cfg.baseline_halflife_buckets)

    def _judge_volume(self, n: float) -> Verdict | None:
        base = self.volume.mean
        # Poisson noise floor: a count's own sampling spread is sqrt(mean).
        scale = max(self.volume.std, math.sqrt(max(base, 1.0)), 1.0)
        z = (n - base) / scale
        if z >= self.cfg.z_threshold:
            z = min(z, _tail_z(float(_st.poisson.sf(n - 1, max(base, 0.5)))))
        if self.buckets < self.cfg.warmup_buckets or n < self.cfg.min_volume or z < self.cfg.z_threshold:
            return None
        return Verdict("volume", n, base, scale, z, int(n), severity_for(z, self.cfg), "ew-zscore-v1")

    def _judge_neg_share(self, n: float, neg: float) -> Verdict | None:
        if n <= 0:
            return None
        share = neg / n
        p = min(max(self.neg_share.mean, 0.02), 0.98)
        # Binomial noise floor for a share measured on n events.
        scale = max(self.neg_share.std, math.sqrt(p * (1.0 - p) / n), 0.02)
        z = (share - p) / scale
        if z >= self.cfg.z_threshold:
            z = min(z, _tail_z(float(_st.binom.sf(neg - 1, int(n), p))))
        if (
            self.buckets < self.cfg.warmup_buckets
            or n < self.cfg.min_volume
            or neg < self.cfg.min_negative
            or z < self.cfg.z_threshold
        ):
            return None
        return Verdict("negative_share", share, p, scale, z, int(n), severity_for(z, self.cfg), "ew-binomial-z-v1")

    def update(self, stats: dict[str, float]) -> list[Verdict]:
        """Judge one closed bucket (``n`` events, ``neg`` negative), then learn from it."""
        n = float(stats.get("n", 0.0))
        neg = float(stats.get("neg", 0.0))
        verdicts = [v for v in (self._judge_volume(n), self._judge_neg_share(n, neg)) if v is not None]
        alpha = self.alpha
        fired = {v.signal for v in verdicts}
        cap_n = self.volume.mean + self.cfg.z_threshold * max(self.volume.std, math.sqrt(max(self.volume.mean, 1.0)))
        self.volume.update(min(n, cap_n) if "volume" in fired else n, alpha)
        if n >= 1:
            share = neg / n
            if "negative_share" in fired:
                share = min(share, self.neg_share.mean + self.cfg.z_threshold * max(self.neg_share.std, 0.02))
            # Weight a share by its support: a 1-event bucket says little.
            self.neg_share.update(share, alpha * min(1.0, n / max(self.cfg.min_volume, 1)))
        self.buckets += 1
        return verdicts

    def to_dict(self) -> dict[str, Any]:
        return {"volume": asdict(self.volume), "neg_share": asdict(self.neg_share), "buckets": self.buckets}

    @classmethod
    def from_dict(cls, cfg: DetectSettings, data: dict[str, Any] | None) -> EntityDetector:
        if not data:
            return cls(cfg)
        return cls(cfg, EwStat(**data["volume"]), EwStat(**data["neg_share"]), int(data["buckets"]))
