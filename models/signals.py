"""One table of bucket counters and detection signals.

**Counters** are what one enriched event adds to its entity's event-time bucket
(:func:`streams.windows.contributions` writes them; :mod:`models.detect` and :mod:`models.trust`
read them). A bucket is a plain ``{counter: float}`` dict; a counter absent from it is 0.

**Signals** are what the detectors judge, each defined once here by its kind, its counters and
its bad direction, and used as such by :meth:`models.detect.EntityDetector.standardize`,
``judge`` and ``learn``:

- ``count``: the sum of ``num`` per bucket (a rate, e.g. negative mentions per bucket);
- ``share``: ``sum(num) / sum(den)`` with binomial noise on ``support`` events (``support``
  defaults to ``den``: reach-weighted negativity is a share of *impact* measured on *events*);
- ``mean``: ``num / den`` with the spread from ``sq`` (e.g. the mean star rating).

``pages``: a firing signal of this kind is a crisis (warning/critical). Signals that do not page
are reported as ``info`` (a volume spike whose sentiment mix is no worse than usual is
``trending``: news, not a crisis).

>>> SIGNALS["impact_negativity"].value({"n": 4, "impact": 10.0, "impact_neg": 5.0})
0.5
>>> SIGNALS["impact_negativity"].support_of({"n": 4, "impact": 10.0, "impact_neg": 5.0})
4.0
>>> SIGNALS["refund_rate"].value({"purchase:placed": 8, "purchase:refunded": 2})
0.2
>>> [s.name for s in SIGNALS.values() if s.pages]  # doctest: +NORMALIZE_WHITESPACE
['negative_volume', 'complaints', 'negative_share', 'complaint_share', 'impact_negativity',
 'aspect_negativity', 'rating', 'refund_rate']
>>> aspect_keys("delivery")
('asp:delivery:neg', 'asp:delivery:n')
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ASPECT_PREFIX",
    "COUNTERS",
    "SIGNALS",
    "SignalDef",
    "aspect_keys",
    "aspects_in",
    "signal_key",
]

# -- counters (the bucket contract) -----------------------------------------------------------
EVENTS = "events"  # every event matched to the entity
N = "n"  # mentions + reviews with a sentiment score
NEG, NEU, POS = "neg", "neu", "pos"  # ... by sentiment label
SENT_SUM = "sent_sum"  # sum of sentiment scores (-1..1)
IMPACT = "impact"  # sum of reach weights of scored texts
IMPACT_NEG = "impact_neg"  # ... of the negative ones
COMPLAINTS = "complaints"  # scored texts with at least one negative aspect
UNSCORED = "unscored"  # mentions/reviews without a sentiment score (e.g. another language)
MODEL_N, MODEL_ERR = "model_n", "model_err"  # reviews whose stars judge the sentiment model, errors
RATING_N, RATING_SUM, RATING_SQ = "rating_n", "rating_sum", "rating_sq"  # star ratings
REVENUE = "revenue"
PURCHASE_PREFIX = "purchase:"  # purchase:{placed,paid,refunded,returned,chargeback,cancelled}
ORDERS = ("purchase:placed", "purchase:paid")
REFUNDS = ("purchase:refunded", "purchase:returned", "purchase:chargeback")
CANCELLED = "purchase:cancelled"
ASPECT_PREFIX = "asp:"  # asp:{aspect}:n (texts naming the aspect), asp:{aspect}:neg (negative about it)
NPS_N, NPS_SUM, NPS_PRO, NPS_DET = "nps_n", "nps_sum", "nps_pro", "nps_det"
CSAT_N, CSAT_SUM, CES_N, CES_SUM = "csat_n", "csat_sum", "ces_n", "ces_sum"

LABEL_COUNTER = {"negative": NEG, "neutral": NEU, "positive": POS}

COUNTERS: tuple[str, ...] = (
    EVENTS,
    N,
    NEG,
    NEU,
    POS,
    SENT_SUM,
    IMPACT,
    IMPACT_NEG,
    COMPLAINTS,
    UNSCORED,
    MODEL_N,
    MODEL_ERR,
    RATING_N,
    RATING_SUM,
    RATING_SQ,
    REVENUE,
    *ORDERS,
    *REFUNDS,
    CANCELLED,
    NPS_N,
    NPS_SUM,
    NPS_PRO,
    NPS_DET,
    CSAT_N,
    CSAT_SUM,
    CES_N,
    CES_SUM,
)
"""Every fixed counter name (aspect counters are per aspect: :func:`aspect_keys`)."""


def aspect_keys(aspect: str) -> tuple[str, str]:
    """``(negative, total)`` counter names of one aspect."""
    return f"{ASPECT_PREFIX}{aspect}:neg", f"{ASPECT_PREFIX}{aspect}:n"


def aspects_in(bucket: Mapping[str, float]) -> Iterator[str]:
    """The aspects a bucket has counters for (sorted, so iteration order is stable)."""
    found = {k[len(ASPECT_PREFIX) : -2] for k in bucket if k.startswith(ASPECT_PREFIX) and k.endswith(":n")}
    yield from sorted(found)


# -- signals ----------------------------------------------------------------------------------
Kind = Literal["count", "share", "mean"]
Bad = Literal["up", "down"]


_KEYS: dict[tuple[str, str | None], tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {}


def _sum(bucket: Mapping[str, float], keys: tuple[str, ...]) -> float:
    if len(keys) == 1:
        return float(bucket.get(keys[0], 0.0))
    return float(sum(bucket.get(k, 0.0) for k in keys))


@dataclass(frozen=True, slots=True)
class SignalDef:
    """One detection signal, defined once (module doc)."""

    name: str
    kind: Kind
    num: tuple[str, ...]
    den: tuple[str, ...] = ()
    support: tuple[str, ...] = ()  # events behind a share (default: den)
    sq: str | None = None  # sum of squares, for a mean
    bad: Bad = "up"
    pages: bool = True
    per_aspect: bool = False  # num/den are templates with "{a}"
    doc: str = ""

    def keys(self, aspect: str | None = None) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """``(num, den, support)`` counter names (per aspect: filled in, cached)."""
        cached = _KEYS.get((self.name, aspect))
        if cached is None:

            def fill(ks: tuple[str, ...]) -> tuple[str, ...]:
                return tuple(k.format(a=aspect) for k in ks) if self.per_aspect else ks

            cached = _KEYS[(self.name, aspect)] = (fill(self.num), fill(self.den), fill(self.support or self.den))
            if len(_KEYS) > 10_000:  # aspects are a bounded taxonomy; never grow without bound
                _KEYS.clear()
        return cached

    def num_of(self, b: Mapping[str, float], aspect: str | None = None) -> float:
        return _sum(b, self.keys(aspect)[0])

    def den_of(self, b: Mapping[str, float], aspect: str | None = None) -> float:
        return _sum(b, self.keys(aspect)[1])

    def support_of(self, b: Mapping[str, float], aspect: str | None = None) -> float:
        """Events behind the value: the count itself, a share's support, a mean's count."""
        if self.kind == "count":
            return self.num_of(b, aspect)
        return _sum(b, self.keys(aspect)[2])

    def value(self, b: Mapping[str, float], aspect: str | None = None) -> float | None:
        """The signal's value in a bucket (None for a share/mean without a denominator)."""
        if self.kind == "count":
            return self.num_of(b, aspect)
        den = self.den_of(b, aspect)
        return self.num_of(b, aspect) / den if den > 0 else None


SIGNALS: dict[str, SignalDef] = {
    s.name: s
    for s in (
        SignalDef("volume", "count", (N,), pages=False, doc="mentions + reviews scored; a rise alone is 'trending'"),
        SignalDef("negative_volume", "count", (NEG,), doc="negative mentions + reviews"),
        SignalDef("complaints", "count", (COMPLAINTS,), doc="texts with a negative aspect"),
        SignalDef("negative_share", "share", (NEG,), (N,), doc="neg / n"),
        SignalDef("complaint_share", "share", (COMPLAINTS,), (N,), doc="complaints / n"),
        SignalDef(
            "impact_negativity",
            "share",
            (IMPACT_NEG,),
            (IMPACT,),
            support=(N,),
            doc="reach-weighted: impact_neg / impact, binomial noise on n events",
        ),
        SignalDef(
            "aspect_negativity",
            "share",
            (ASPECT_PREFIX + "{a}:neg",),
            (ASPECT_PREFIX + "{a}:n",),
            per_aspect=True,
            doc="per aspect asp:A:neg / asp:A:n",
        ),
        SignalDef("rating", "mean", (RATING_SUM,), (RATING_N,), sq=RATING_SQ, bad="down", doc="mean star rating"),
        SignalDef("refund_rate", "share", REFUNDS, (*ORDERS, *REFUNDS), doc="refunds+returns+chargebacks / orders"),
    )
}
"""The signals, in judging order."""

TRENDING = "trending"
"""The name a volume rise takes when the sentiment mix is no worse than usual (info, never a page)."""


def signal_key(name: str, aspect: str | None = None) -> str:
    """The key of a signal's state: its name, or ``asp:{aspect}`` per aspect."""
    return f"{ASPECT_PREFIX}{aspect}" if aspect is not None else name
