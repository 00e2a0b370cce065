"""Multivariate anomaly watch per entity: River HalfSpaceTrees on the detectors' standardised inputs.

The per-signal detectors (:mod:`models.detect`) each ask "is this one number surprising?". This
watch asks the other question: "is this *combination* unusual for this entity?" A bucket where
volume, negative share and reach-weighted negativity are each up by 3 sigma fires none of them
(threshold 5), yet such a bucket is rare. Its inputs are the z-scores from
:meth:`EntityDetector.standardize` (seasonal baselines already taken out, so the trees do not have
to learn the daily rhythm), clipped to +-``CLIP`` and mapped to [0, 1]: HalfSpaceTrees needs fixed
feature limits, and z-scores have them where raw counts do not.

How it stays quiet (FIELD.md: anomaly and drift detectors that cry wolf):

- River's ``anomaly.HalfSpaceTrees`` scores 0 for its whole first window, so the watch says nothing
  until one window has passed and ``warmup`` scores after it have set the threshold;
- the threshold is the ``q`` quantile of the scores seen so far (River's ``stats.Quantile``), and
  buckets above it are not learned (as ``anomaly.QuantileFilter`` protects its detector), so a
  long crisis does not become the trees' normal;
- it reports when the score first crosses the threshold (one report per episode) and only when
  at least one input is itself beyond ``min_abs_z``;
- it is reported as an ``info`` signal: evidence in the incident and on the signals topic, never
  a page on its own.

>>> import random
>>> rng = random.Random(7)
>>> watch = AnomalyWatch(window_size=50, warmup=50)
>>> calm = [watch.update({"volume": rng.gauss(0, 1), "negative_share": rng.gauss(0, 1)}) for _ in range(400)]
>>> sum(x is not None for x in calm) <= 3
True
>>> hit = watch.update({"volume": 4.0, "negative_share": 4.5})
>>> hit is not None and hit.top == "negative_share"
True
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from river import anomaly, stats

__all__ = ["FEATURES", "AnomalyHit", "AnomalyWatch"]

FEATURES = ("volume", "negative_share", "impact_negativity", "rating")
CLIP = 8.0
SCORES_KEPT = 4096  # recent scores kept as state: the threshold quantile is rebuilt from them


def _unit(z: float) -> float:
    """A z-score clipped to +-CLIP and mapped to [0, 1] (0.5 = on the baseline)."""
    return (max(-CLIP, min(CLIP, z)) + CLIP) / (2 * CLIP)


@dataclass(frozen=True, slots=True)
class AnomalyHit:
    score: float
    threshold: float
    top: str  # the input furthest from its baseline
    z: float  # its z-score
    inputs: int


@dataclass
class AnomalyWatch:
    q: float = 0.998
    window_size: int = 64
    warmup: int = 100
    min_abs_z: float = 3.0
    seed: int = 42
    model: anomaly.HalfSpaceTrees = field(init=False)
    quantile: stats.Quantile = field(init=False)
    seen: int = 0
    scored: int = 0
    above: bool = False
    scores: deque[float] = field(default_factory=lambda: deque(maxlen=SCORES_KEPT))
    # the last bucket learned and what it gave: judging it again (a tick that was not saved)
    # gives the same answer and learns nothing twice
    last_at: int | None = None
    last_hit: AnomalyHit | None = None

    def __post_init__(self) -> None:
        self.model = anomaly.HalfSpaceTrees(
            n_trees=10,
            height=8,
            window_size=self.window_size,
            limits={f: (0.0, 1.0) for f in FEATURES},
            seed=self.seed,
        )
        self.quantile = stats.Quantile(self.q)

    def update(self, zs: dict[str, float], at: int | None = None) -> AnomalyHit | None:
        """Score one bucket's standardised inputs, then learn them (unless anomalous). ``at``
        (the bucket's start) makes it idempotent: a bucket at or before the last one learned is
        not learned again, and the last one gives its answer again.

        >>> w = AnomalyWatch()
        >>> _ = w.update({"volume": 1.0, "negative_share": 0.5}, at=60)
        >>> w.update({"volume": 1.0, "negative_share": 0.5}, at=60), w.seen
        (None, 1)
        """
        present = {k: v for k, v in zs.items() if k in FEATURES}
        if len(present) < 2:
            return None  # one input: the per-signal detector already says all there is to say
        if at is not None and self.last_at is not None and at <= self.last_at:
            return self.last_hit if at == self.last_at else None
        hit = self._update(present)
        if at is not None:
            self.last_at, self.last_hit = at, hit
        return hit

    def _update(self, present: dict[str, float]) -> AnomalyHit | None:
        x = {f: _unit(present.get(f, 0.0)) for f in FEATURES}
        first_window = self.seen < self.window_size
        score = float(self.model.score_one(x))
        threshold = self.quantile.get()
        hot = (
            not first_window
            and self.scored >= self.warmup
            and threshold is not None
            and score >= threshold
            and score > 0.0
        )
        if not hot:
            self.model.learn_one(x)
        if not first_window:
            self.quantile.update(score)
            self.scores.append(score)
            self.scored += 1
        self.seen += 1
        top = max(present, key=lambda k: abs(present[k]))
        fire = hot and not self.above and abs(present[top]) >= self.min_abs_z
        self.above = hot
        if not fire:
            return None
        return AnomalyHit(score, float(threshold or 0.0), top, present[top], len(present))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON state: parameters, counters, every tree node's masses and the recent scores.

        The trees' shape is not stored: River draws it from ``seed`` when the model first learns,
        so the same seed and features rebuild the same trees, and only their masses are state.

        >>> import random
        >>> rng = random.Random(1)
        >>> w = AnomalyWatch(window_size=20, warmup=10)
        >>> for _ in range(60):
        ...     _ = w.update({"volume": rng.gauss(0, 1), "negative_share": rng.gauss(0, 1)})
        >>> w2 = AnomalyWatch.from_dict(w.to_dict())
        >>> x = {"volume": 2.0, "negative_share": -1.0}
        >>> w2.model.score_one({f: _unit(x.get(f, 0.0)) for f in FEATURES}) == w.model.score_one(
        ...     {f: _unit(x.get(f, 0.0)) for f in FEATURES})
        True
        """
        m = self.model
        return {
            "v": 1,
            "params": {
                "q": self.q,
                "window_size": self.window_size,
                "warmup": self.warmup,
                "min_abs_z": self.min_abs_z,
                "seed": self.seed,
            },
            "seen": self.seen,
            "scored": self.scored,
            "above": self.above,
            "scores": list(self.scores),
            "last_at": self.last_at,
            "last_hit": dataclasses.asdict(self.last_hit) if self.last_hit is not None else None,
            "counter": m.counter,
            "first_window": m._first_window,
            "masses": [[[n.l_mass, n.r_mass] for n in nodes] for nodes in m._tree_nodes],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> AnomalyWatch:
        if not d or d.get("v") != 1:
            return cls()
        p = d["params"]
        w = cls(
            q=float(p["q"]),
            window_size=int(p["window_size"]),
            warmup=int(p["warmup"]),
            min_abs_z=float(p["min_abs_z"]),
            seed=int(p["seed"]),
        )
        masses = d.get("masses") or []
        if masses:
            w.model.learn_one({f: 0.5 for f in FEATURES})  # builds the trees from the seed
            if [len(t) for t in masses] != [len(nodes) for nodes in w.model._tree_nodes]:
                return cls(**{k: v for k, v in p.items()})  # another tree shape: start afresh
            for nodes, saved in zip(w.model._tree_nodes, masses, strict=True):
                for node, (lm, rm) in zip(nodes, saved, strict=True):
                    node.l_mass, node.r_mass = lm, rm
            w.model.counter = int(d["counter"])
            w.model._first_window = bool(d["first_window"])
        for s in d.get("scores", [])[-SCORES_KEPT:]:
            w.quantile.update(float(s))
            w.scores.append(float(s))
        w.seen, w.scored, w.above = int(d["seen"]), int(d["scored"]), bool(d["above"])
        w.last_at = int(d["last_at"]) if d.get("last_at") is not None else None
        w.last_hit = AnomalyHit(**d["last_hit"]) if d.get("last_hit") else None
        return w
