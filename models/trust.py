"""The trust score: a transparent 0-100 composite per entity and window.

Counters and the shares the detectors judge are defined once in :mod:`models.signals`; the
components that are also detection signals (negative share, rating, refund rate, complaint share)
are measured by the very same definition (refunds = refunds + returns + chargebacks).

Each component maps a measure of the window to 0-100 (higher = more trust). The score is the
weighted mean of the components that have data; a component without data (no reviews, no
orders) is left out and the weights of the rest renormalised, never imputed. Each component is
reported with its raw value, its baseline value (the same measure over the baseline window), its
weight and its points, so a responder sees *why* the score moved.

=====================  ======================================  ==================  ======
component              measure                                 0-100 mapping       weight
=====================  ======================================  ==================  ======
``sentiment``          mean sentiment of mentions + reviews    (s + 1) / 2         0.20
``negative_share``     negative / scored                       1 - share           0.20
``rating``             mean review stars                       (r - 1) / 4         0.15
``nps``                promoters - detractors (%)              (nps + 100) / 2     0.10
``csat``               mean CSAT 1-5                           (c - 1) / 4         0.05
``ces``                mean effort 1-7 (lower is better)       (7 - e) / 6         0.05
``refund_rate``        refunds / (orders + refunds)            1 - min(1, 5 x)     0.10
``cancel_rate``        cancellations / orders                  1 - min(1, 5 x)     0.05
``complaint_share``    texts with a negative aspect / scored   1 - share           0.10
=====================  ======================================  ==================  ======

>>> s = trust_score({"n": 100, "neg": 20, "sent_sum": 10.0, "rating_n": 10, "rating_sum": 40})
>>> s.score, [c.name for c in s.components]
(74.2, ['sentiment', 'negative_share', 'rating', 'complaint_share'])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from models import signals as C
from models.signals import SIGNALS

__all__ = ["DEFAULT_WEIGHTS", "Component", "TrustScore", "trust_score"]

DEFAULT_WEIGHTS: dict[str, float] = {
    "sentiment": 0.20,
    "negative_share": 0.20,
    "rating": 0.15,
    "nps": 0.10,
    "csat": 0.05,
    "ces": 0.05,
    "refund_rate": 0.10,
    "cancel_rate": 0.05,
    "complaint_share": 0.10,
}

Stats = Mapping[str, float]


def _orders(s: Stats) -> float:
    return sum(s.get(k, 0.0) for k in C.ORDERS)


def _ratio(num: str | tuple[str, ...], den: Callable[[Stats], float]) -> Callable[[Stats], float | None]:
    keys = (num,) if isinstance(num, str) else num

    def f(s: Stats) -> float | None:
        d = den(s)
        return sum(s.get(k, 0.0) for k in keys) / d if d > 0 else None

    return f


def _of(counter: str) -> Callable[[Stats], float]:
    return lambda s: s.get(counter, 0.0)


def _signal(name: str) -> Callable[[Stats], float | None]:
    """A component measured exactly as the detectors' signal of that name (models.signals)."""
    sig = SIGNALS[name]
    return lambda s: sig.value(s)


# name -> (measure, mapping to 0..100)
MEASURES: dict[str, tuple[Callable[[Stats], float | None], Callable[[float], float]]] = {
    "sentiment": (_ratio(C.SENT_SUM, _of(C.N)), lambda v: (v + 1) / 2 * 100),
    "negative_share": (_signal("negative_share"), lambda v: (1 - v) * 100),
    "rating": (_signal("rating"), lambda v: (v - 1) / 4 * 100),
    "nps": (
        lambda s: (s.get(C.NPS_PRO, 0.0) - s.get(C.NPS_DET, 0.0)) / s[C.NPS_N] * 100 if s.get(C.NPS_N) else None,
        lambda v: (v + 100) / 2,
    ),
    "csat": (_ratio(C.CSAT_SUM, _of(C.CSAT_N)), lambda v: (v - 1) / 4 * 100),
    "ces": (_ratio(C.CES_SUM, _of(C.CES_N)), lambda v: (7 - v) / 6 * 100),
    "refund_rate": (_signal("refund_rate"), lambda v: (1 - min(1.0, 5 * v)) * 100),
    "cancel_rate": (_ratio(C.CANCELLED, _orders), lambda v: (1 - min(1.0, 5 * v)) * 100),
    "complaint_share": (_signal("complaint_share"), lambda v: (1 - v) * 100),
}


@dataclass(frozen=True)
class Component:
    name: str
    value: float
    baseline: float | None
    weight: float
    points: float
    baseline_points: float | None


@dataclass
class TrustScore:
    score: float | None
    baseline_score: float | None
    components: list[Component] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _clip(x: float) -> float:
    return max(0.0, min(100.0, x))


def trust_score(window: Stats, baseline: Stats | None = None, weights: Mapping[str, float] | None = None) -> TrustScore:
    """Score ``window`` (summed bucket counters), each component beside its ``baseline``."""
    w = dict(weights or DEFAULT_WEIGHTS)
    comps: list[Component] = []
    for name, (measure, to_points) in MEASURES.items():
        if w.get(name, 0.0) <= 0:
            continue
        v = measure(window)
        if v is None:
            continue
        b = measure(baseline) if baseline is not None else None
        comps.append(
            Component(
                name=name,
                value=round(v, 4),
                baseline=round(b, 4) if b is not None else None,
                weight=w[name],
                points=round(_clip(to_points(v)), 1),
                baseline_points=round(_clip(to_points(b)), 1) if b is not None else None,
            )
        )
    total_w = sum(c.weight for c in comps)
    score = round(sum(c.points * c.weight for c in comps) / total_w, 1) if total_w else None
    with_base = [c for c in comps if c.baseline_points is not None]
    bw = sum(c.weight for c in with_base)
    base_score = round(sum((c.baseline_points or 0.0) * c.weight for c in with_base) / bw, 1) if bw else None
    return TrustScore(score, base_score, comps)
