"""Per-entity detectors on event-time buckets (pure: dict in, verdicts out).

Every signal of an entity keeps its own baseline: an exponentially weighted mean and variance
overall, and one per hour of the week (seasonal), blended by how much history the slot has. A
bucket is judged on a standardised input, ``z = (value - baseline) / scale``, where ``scale``
never falls below the sampling noise the value must have anyway (Poisson for counts, binomial
for shares, the standard error for means). At small counts the normal tail is far too thin
(12 mentions with 7 negative is "4 sigma" to it, yet happens daily by chance), so z is also
computed from the exact tail, Poisson or binomial, and the smaller of the two is used.

That noise floor plus a minimum support (``min_volume``, ``min_negative``) is what keeps a quiet
brand at night from paging anyone. No detector fires before ``warmup_buckets`` of history.
A bucket that fires teaches the baseline only the threshold value, so a crisis does not become
the new normal.

Signals (bucket counter names from :func:`streams.windows.contributions`):

========================  =========================================  ===========
signal                    value                                      direction
========================  =========================================  ===========
``volume``                mentions + reviews scored (``n``)          up
``negative_share``        ``neg / n``                                up
``impact_negativity``     reach-weighted ``impact_neg / impact``     up
``aspect_negativity``     per aspect ``asp:A:neg / asp:A:n``         up
``rating``                mean review rating                         down
``refund_rate``           refunds+returns+chargebacks / orders       up
========================  =========================================  ===========

>>> from infra.settings import DetectSettings
>>> det = EntityDetector(DetectSettings(warmup_buckets=5, min_volume=5, min_negative=3))
>>> for i in range(20):
...     _ = det.update({"n": 20, "neg": 3}, hour_of_week=i % 168)
>>> [v.signal for v in det.update({"n": 120, "neg": 90}, hour_of_week=20)]
['volume', 'negative_share']
>>> det.update({"n": 21, "neg": 3}, hour_of_week=21)
[]
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from scipy import stats as _st

from infra.settings import DetectSettings

__all__ = ["EntityDetector", "EwStat", "SignalState", "Verdict", "severity_for"]

Severity = Literal["info", "warning", "critical"]
Kind = Literal["count", "share", "mean"]


@dataclass(slots=True)
class EwStat:
    """Exponentially weighted mean and variance of weighted observations.

    ``w`` is the decayed total weight seen so far; each observation moves the mean by its share
    of it, ``weight / w``. Early on that is the plain weighted average (the first bucket does not
    dominate the baseline for a half-life, as it does when the mean starts at the first value and
    moves by ``alpha`` after that), and it tends to ``alpha`` once ``w`` reaches ``weight / alpha``.
    A bucket with little support (small ``weight``) moves the mean little, even the first one.

    >>> s = EwStat()
    >>> s.update(0.1, 0.01, weight=0.05)  # a nearly empty first bucket
    >>> s.update(0.5, 0.01)
    >>> round(s.mean, 2), s.n
    (0.48, 2)
    """

    mean: float = 0.0
    var: float = 0.0
    n: int = 0
    w: float = 0.0

    def update(self, x: float, alpha: float, weight: float = 1.0) -> None:
        if weight <= 0:
            return
        self.w = (1.0 - alpha) * self.w + weight
        a = weight / self.w
        diff = x - self.mean
        incr = a * diff
        self.mean += incr
        self.var = (1.0 - a) * (self.var + diff * incr)
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


def severity_for(z: float, cfg: DetectSettings) -> Severity:
    return "critical" if z >= cfg.critical_z else "warning"


def _tail_z(p_value: float) -> float:
    """Equivalent one-sided z of a tail probability.

    >>> round(_tail_z(0.5), 3), round(_tail_z(3.167e-5), 1)
    (0.0, 4.0)
    """
    return float(_st.norm.isf(min(max(p_value, 1e-300), 1.0)))


SEASON_SLOTS = 168  # hours of the week
SEASON_VISITS = 2.0  # a slot is trusted fully after two visits (two weeks of that hour)
FIRED_WEIGHT = 0.25  # a bucket that fired teaches the baseline this much, clipped to +1 std
PROTECT_Z = 3.0  # ... and so does one this far off its baseline in the bad direction


@dataclass
class SignalState:
    """Baseline of one signal: overall and per hour of the week."""

    overall: EwStat = field(default_factory=EwStat)
    seasonal: dict[str, EwStat] = field(default_factory=dict)
    den: EwStat = field(default_factory=EwStat)  # typical denominator of a share
    streak: int = 0  # suspect buckets (fired or >= PROTECT_Z off) minus the others, in [0, shift cap]

    def baseline(self, how: int | None, per_hour: float = 60.0) -> tuple[float, float]:
        """(mean, std), the seasonal slot blended in by how much history it has.

        ``per_hour`` is the number of buckets per hour: a slot sees that many buckets per visit.
        """
        m, s = self.overall.mean, self.overall.std
        slot = self.seasonal.get(str(how)) if how is not None else None
        if slot is None or slot.n == 0:
            return m, s
        w = min(1.0, slot.n / (SEASON_VISITS * per_hour))
        return (1 - w) * m + w * slot.mean, (1 - w) * s + w * max(slot.std, 0.0)

    def learn(
        self,
        x: float,
        alpha: float,
        how: int | None,
        weight: float = 1.0,
        den: float | None = None,
        per_hour: float = 60.0,
    ) -> None:
        self.overall.update(x, alpha, weight)
        if den is not None:
            self.den.update(den, alpha)
        if how is not None:
            # one visit of a slot is `per_hour` consecutive buckets; its memory spans visits
            # (half-life two visits), so an hour-long crisis does not become that hour's normal
            slot_alpha = 1.0 - 0.5 ** (1.0 / (SEASON_VISITS * per_hour))
            self.seasonal.setdefault(str(how), EwStat()).update(x, slot_alpha, weight)

    def to_dict(self) -> dict[str, Any]:
        return {
            "overall": asdict(self.overall),
            "seasonal": {k: asdict(v) for k, v in self.seasonal.items()},
            "den": asdict(self.den),
            "streak": self.streak,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SignalState:
        return cls(
            EwStat(**d["overall"]),
            {k: EwStat(**v) for k, v in d.get("seasonal", {}).items()},
            EwStat(**d["den"]) if "den" in d else EwStat(),
            int(d.get("streak", 0)),
        )


@dataclass
class EntityDetector:
    """All signals of one entity. State is plain data (``to_dict``/``from_dict``)."""

    cfg: DetectSettings
    signals: dict[str, SignalState] = field(default_factory=dict)
    buckets: int = 0
    bucket_seconds: int = 60

    @property
    def per_hour(self) -> float:
        return max(3600.0 / self.bucket_seconds, 1.0)

    @property
    def alpha(self) -> float:
        return 1.0 - 0.5 ** (1.0 / self.cfg.baseline_halflife_buckets)

    def _state(self, name: str) -> SignalState:
        return self.signals.setdefault(name, SignalState())

    # -- standardised inputs ------------------------------------------------------------------
    def _count_z(self, name: str, x: float, how: int | None, frac: float = 1.0) -> tuple[float, float, float]:
        """(baseline, scale, z) of a count: Poisson noise of this bucket + the history's excess."""
        mean, std = self._state(name).baseline(how, self.per_hour)
        base = mean * frac
        excess = max(std**2 - mean, 0.0)  # over-dispersion beyond Poisson
        scale = max(math.sqrt(max(base, 1.0) + excess * frac**2), 1.0)
        return base, scale, (x - base) / scale

    def _share_z(self, name: str, num: float, den: float, how: int | None) -> tuple[float, float, float] | None:
        """(baseline, scale, z) of a share; None before the share has its own warm-up history."""
        state = self._state(name)
        if den <= 0 or state.overall.n < self.cfg.warmup_buckets:
            return None  # a share's own history: an aspect seen in 3 buckets has no baseline yet
        mean, std = state.baseline(how, self.per_hour)
        p = min(max(mean, 0.02), 0.98)
        # the history's spread holds the sampling noise of its own typical bucket size: keep only
        # the excess (real between-bucket variation) and add this bucket's binomial noise
        excess = max(std**2 - p * (1.0 - p) / max(state.den.mean, 1.0), 0.0)
        scale = max(math.sqrt(p * (1.0 - p) / den + excess), 0.01)
        return p, scale, (num / den - p) / scale

    def _mean_z(
        self, name: str, total: float, count: float, sq: float, how: int | None
    ) -> tuple[float, float, float] | None:
        """(baseline, scale, z) of a mean, z > 0 when it is *below* its baseline."""
        if count <= 0 or self._state(name).overall.n < self.cfg.warmup_buckets:
            return None
        mean_x = total / count
        var_x = max(sq / count - mean_x**2, 0.0)
        base, std = self._state(name).baseline(how, self.per_hour)
        se = max(math.sqrt(max(var_x, 0.5) / count), std, 0.05)
        return base, se, (base - mean_x) / se

    def standardize(self, st: dict[str, float], hour_of_week: int | None = None) -> dict[str, float]:
        """The bucket's core signals as z-scores against their baselines (no thresholds, no caps).

        These are the inputs of the multivariate anomaly model (:mod:`models.anomaly`); a signal
        without its warm-up history, or without support in this bucket, is left out.
        """
        if self.buckets < self.cfg.warmup_buckets:
            return {}
        g, how = st.get, hour_of_week
        out: dict[str, float] = {"volume": self._count_z("volume", g("n", 0.0), how)[2]}
        n = g("n", 0.0)
        if n >= self.cfg.min_volume:
            share = self._share_z("negative_share", g("neg", 0.0), n, how)
            if share is not None:
                out["negative_share"] = share[2]
            if g("impact", 0.0) > 0:
                imp = self._share_z("impact_negativity", n * g("impact_neg", 0.0) / g("impact", 1.0), n, how)
                if imp is not None:
                    out["impact_negativity"] = imp[2]
        if g("rating_n", 0.0) >= 3:
            r = self._mean_z("rating", g("rating_sum", 0.0), g("rating_n", 0.0), g("rating_sq", 0.0), how)
            if r is not None:
                out["rating"] = r[2]
        return out

    # -- judges -----------------------------------------------------------------------------
    def _count(self, name: str, x: float, how: int | None, frac: float) -> Verdict | None:
        base, scale, z = self._count_z(name, x, how, frac)
        if z >= self.cfg.z_threshold:
            z = min(z, _tail_z(float(_st.poisson.sf(x - 1, max(base, 0.5)))))
        if x < self.cfg.min_volume or z < self.cfg.z_threshold:
            return None
        return Verdict(name, x, base, scale, z, int(x), severity_for(z, self.cfg), "ew-seasonal-poisson-v1")

    def _share(
        self, name: str, num: float, den: float, how: int | None, min_num: float, aspect: str | None = None
    ) -> Verdict | None:
        if den < self.cfg.min_volume or num < min_num:
            return None
        stat = self._share_z(name, num, den, how)
        if stat is None:
            return None
        p, scale, z = stat
        if z >= self.cfg.z_threshold:
            z = min(z, _tail_z(float(_st.binom.sf(round(num) - 1, max(1, round(den)), p))))
        if z < self.cfg.z_threshold:
            return None
        signal = "aspect_negativity" if aspect else name
        return Verdict(
            signal, num / den, p, scale, z, int(den), severity_for(z, self.cfg), "ew-seasonal-binomial-v1", aspect
        )

    def _mean_down(self, name: str, total: float, count: float, sq: float, how: int | None) -> Verdict | None:
        if count < max(3, self.cfg.min_volume // 2):
            return None
        stat = self._mean_z(name, total, count, sq, how)
        if stat is None or stat[2] < self.cfg.z_threshold:
            return None
        base, se, z = stat
        return Verdict(name, total / count, base, se, z, int(count), severity_for(z, self.cfg), "ew-seasonal-mean-v1")

    def judge(self, st: dict[str, float], hour_of_week: int | None = None, frac: float = 1.0) -> list[Verdict]:
        """Judge a bucket without learning from it (``frac`` < 1: a bucket still filling)."""
        if self.buckets < self.cfg.warmup_buckets:
            return []
        g = st.get
        out: list[Verdict | None] = [
            self._count("volume", g("n", 0.0), hour_of_week, frac),
            self._share("negative_share", g("neg", 0.0), g("n", 0.0), hour_of_week, self.cfg.min_negative),
        ]
        if g("impact", 0.0) > 0 and g("n", 0.0) >= self.cfg.min_volume:
            # reach-weighted: the share of attention that is negative, support = events
            n = g("n", 0.0)
            eff_neg = n * g("impact_neg", 0.0) / g("impact", 1.0)
            out.append(self._share("impact_negativity", eff_neg, n, hour_of_week, self.cfg.min_negative))
        for key in st:
            if key.startswith("asp:") and key.endswith(":n"):
                aspect = key[4:-2]
                v = self._share(
                    f"asp:{aspect}",
                    g(f"asp:{aspect}:neg", 0.0),
                    g(key, 0.0),
                    hour_of_week,
                    self.cfg.min_negative,
                    aspect,
                )
                out.append(v)
        if g("rating_n", 0.0) > 0:
            out.append(
                self._mean_down("rating", g("rating_sum", 0.0), g("rating_n", 0.0), g("rating_sq", 0.0), hour_of_week)
            )
        orders = g("purchase:placed", 0.0) + g("purchase:paid", 0.0)
        refunds = g("purchase:refunded", 0.0) + g("purchase:returned", 0.0) + g("purchase:chargeback", 0.0)
        if orders > 0:
            out.append(self._share("refund_rate", refunds, orders + refunds, hour_of_week, self.cfg.min_negative))
        return [v for v in out if v is not None]

    def learn(self, st: dict[str, float], hour_of_week: int | None, fired: list[Verdict]) -> None:
        """Update the baselines with a closed bucket.

        A signal that fired, or is ``PROTECT_Z`` or more off its baseline in its bad direction,
        teaches its baseline only ``FIRED_WEIGHT`` of a normal bucket, with its value clipped to
        one standard deviation above (below, for ratings) the baseline: a crisis keeps firing while
        it lasts (learning the buckets just under the threshold in full would inflate the spread
        until a doubled volume no longer looks odd, 15 buckets in). Once a signal has been that
        far off for ``sustained_shift_buckets`` (net of the buckets it was not) it is a new level
        (a campaign that worked, a merger), not a crisis: from then on its buckets are learned at
        full weight until it is back within range, so the thread resolves instead of staying open
        forever.
        """
        alpha, g, ph, how = self.alpha, st.get, self.per_hour, hour_of_week
        hot = {(v.signal if v.aspect is None else f"asp:{v.aspect}") for v in fired}
        warm = self.buckets >= self.cfg.warmup_buckets

        def put(
            name: str, x: float, z: float | None, weight: float = 1.0, den: float | None = None, up: bool = True
        ) -> None:
            state = self._state(name)
            suspect = name in hot or (warm and z is not None and z >= PROTECT_Z)
            # net count of suspect buckets, capped: after a long shift, a new crisis must not find
            # the signal "accepted" for as many buckets as the shift lasted
            cap = self.cfg.sustained_shift_buckets
            state.streak = min(cap, state.streak + 1) if suspect else max(0, state.streak - 1)
            if suspect and state.streak < self.cfg.sustained_shift_buckets:
                m, s = state.baseline(how, ph)
                floor = math.sqrt(max(m, 1.0)) if name == "volume" else 0.02
                x = min(x, m + max(s, floor)) if up else max(x, m - max(s, 0.05))
                weight *= FIRED_WEIGHT
            state.learn(x, alpha, how, weight, den=den, per_hour=ph)

        n = g("n", 0.0)
        put("volume", n, self._count_z("volume", n, how)[2])

        def share(name: str, num: float, den: float) -> None:
            if den >= 1:
                stat = self._share_z(name, num, den, how)
                weight = min(1.0, den / max(self.cfg.min_volume, 1))  # 1 event says little
                put(name, num / den, stat[2] if stat else None, weight, den=den)

        share("negative_share", g("neg", 0.0), n)
        if g("impact", 0.0) > 0:
            share("impact_negativity", g("impact_neg", 0.0), g("impact", 0.0))
        for key in st:
            if key.startswith("asp:") and key.endswith(":n"):
                aspect = key[4:-2]
                share(f"asp:{aspect}", g(f"asp:{aspect}:neg", 0.0), g(key, 0.0))
        if g("rating_n", 0.0) > 0:
            rn, rs = g("rating_n", 0.0), g("rating_sum", 0.0)
            stat = self._mean_z("rating", rs, rn, g("rating_sq", 0.0), how)
            put("rating", rs / rn, stat[2] if stat else None, min(1.0, rn / 3), up=False)
        orders = g("purchase:placed", 0.0) + g("purchase:paid", 0.0)
        refunds = g("purchase:refunded", 0.0) + g("purchase:returned", 0.0) + g("purchase:chargeback", 0.0)
        if orders + refunds > 0:
            share("refund_rate", refunds, orders + refunds)
        self.buckets += 1

    def update(self, st: dict[str, float], hour_of_week: int | None = None) -> list[Verdict]:
        """Judge one closed bucket, then learn from it."""
        verdicts = self.judge(st, hour_of_week)
        self.learn(st, hour_of_week, verdicts)
        return verdicts

    def to_dict(self) -> dict[str, Any]:
        return {"signals": {k: v.to_dict() for k, v in self.signals.items()}, "buckets": self.buckets, "v": 4}

    @classmethod
    def from_dict(cls, cfg: DetectSettings, data: dict[str, Any] | None, bucket_seconds: int = 60) -> EntityDetector:
        if not data or data.get("v") != 4:
            return cls(cfg, bucket_seconds=bucket_seconds)
        signals = {k: SignalState.from_dict(v) for k, v in data["signals"].items()}
        return cls(cfg, signals, int(data["buckets"]), bucket_seconds)
