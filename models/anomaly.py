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
import functools
import zlib
from collections import deque
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from river import anomaly, stats
from river.tree.padded import PaddedBranch, PaddedLeaf

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
        ``shape`` is a checksum of that shape: a doc whose trees were drawn differently (another
        River, other features) starts afresh rather than putting its masses on other trees.
        Masses are two flat lists of ints per tree (left and right, nodes in depth-first order):
        what orjson writes and reads fastest.

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
        tree_nodes = _tree_nodes(m)
        return {
            "v": 2,
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
            "shape": _shape_of(m) if m.trees else None,
            "l_mass": [list(map(_L_MASS, nodes)) for nodes in tree_nodes],
            "r_mass": [list(map(_R_MASS, nodes)) for nodes in tree_nodes],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> AnomalyWatch:
        """The watch :meth:`to_dict` saved (``"v": 2``, or the older ``"v": 1`` with ``[l, r]``
        pairs); anything else, or trees of another shape, starts afresh."""
        if not d or d.get("v") not in (1, 2):
            return cls()
        p = d["params"]
        w = cls(
            q=float(p["q"]),
            window_size=int(p["window_size"]),
            warmup=int(p["warmup"]),
            min_abs_z=float(p["min_abs_z"]),
            seed=int(p["seed"]),
        )
        if d["v"] == 1:
            pairs = d.get("masses") or []
            lm = [[n[0] for n in t] for t in pairs]
            rm = [[n[1] for n in t] for t in pairs]
            shape = None  # v1 did not store it: the node counts are all it checked
        else:
            lm, rm, shape = d.get("l_mass") or [], d.get("r_mass") or [], d.get("shape")
        if lm and not _restore_trees(w.model, lm, rm, shape):
            return cls(**{k: v for k, v in p.items()})  # another tree shape: start afresh
        if lm:
            w.model.counter = int(d["counter"])
            w.model._first_window = bool(d["first_window"])
        scores = [float(s) for s in d.get("scores", [])[-SCORES_KEPT:]]
        update = w.quantile.update
        for s in scores:
            update(s)
        w.scores.extend(scores)
        w.seen, w.scored, w.above = int(d["seen"]), int(d["scored"]), bool(d["above"])
        w.last_at = int(d["last_at"]) if d.get("last_at") is not None else None
        w.last_hit = AnomalyHit(**d["last_hit"]) if d.get("last_hit") else None
        return w


# --- the trees' shape, drawn once per (seed, n_trees, height, limits) and cloned ------------------
#
# River draws a forest from its seed with ``random`` on the first ``learn_one`` (tens of ms for
# 10 x 511 nodes), and every watch with the same parameters gets the same trees: drawing them
# again for each watch decoded would be most of the cost of decoding it. A template keeps what
# the draw gave (each branch's feature and threshold, the generator's state after it) and a
# decoded watch gets new nodes built from it and the saved masses, without drawing again.
#
# This relies on River 0.26.1's ``HalfSpaceTrees`` internals: ``trees``, ``_tree_nodes`` (every
# tree's nodes in depth-first order, which the window pivot walks), ``counter``,
# ``_first_window``, ``rng``, and on ``PaddedBranch`` (``children``, ``feature``, ``threshold``,
# ``l_mass``, ``r_mass``) and ``PaddedLeaf`` (``r_mass``, ``l_mass``) holding nothing else. The
# template is only used when a forest River drew looks exactly so and a clone of it equals it;
# otherwise decoding lets River draw the trees and sets the masses one node at a time.

_L_MASS, _R_MASS = attrgetter("l_mass"), attrgetter("r_mass")
_BRANCH_ATTRS = ("children", "feature", "threshold", "l_mass", "r_mass")
_LEAF_ATTRS = ("r_mass", "l_mass")  # the order of make_padded_tree's keywords
_new = object.__new__


@dataclass(frozen=True, slots=True)
class _Template:
    # per tree, its nodes in reverse depth-first order: ``None`` for a leaf, (feature, threshold)
    # for a branch (children come before their parent, so a stack builds the tree in one pass)
    specs: tuple[tuple[tuple[str, float] | None, ...], ...]
    rng_state: Any  # ``random.Random.getstate()`` after the draw
    shape: int
    clonable: bool  # River's nodes are as expected: new ones can be built directly


def _tree_nodes(m: anomaly.HalfSpaceTrees) -> list[list[Any]]:
    nodes = getattr(m, "_tree_nodes", None)
    if nodes is None or len(nodes) != len(m.trees):
        return [list(t.iter_dfs()) for t in m.trees]
    return nodes


def _key(m: anomaly.HalfSpaceTrees) -> tuple[Any, ...]:
    # what the draw depends on (River's ``learn_one``: limits of the features of the first
    # input, which is always every FEATURE here); ``window_size`` does not change the trees
    return (m.seed, m.n_trees, m.height, tuple((f, tuple(m.limits[f])) for f in sorted(FEATURES)))


def _draw(m: anomaly.HalfSpaceTrees) -> None:
    """Let River draw the trees of ``m`` (which has none yet), as its first ``learn_one`` does."""
    saved = m.counter, m._first_window
    m.learn_one({f: 0.5 for f in FEATURES})
    m.counter, m._first_window = saved


def _fingerprint(tree_nodes: list[list[Any]]) -> int:
    h = 0
    for nodes in tree_nodes:
        part = ";".join(f"{n.feature}<{n.threshold.hex()}" if hasattr(n, "children") else "." for n in nodes)
        h = zlib.crc32(part.encode(), h)
    return h


def _spec(nodes: list[Any]) -> tuple[tuple[str, float] | None, ...] | None:
    """A tree's template, or None when its nodes are not what :func:`_clone` builds."""
    out: list[tuple[str, float] | None] = []
    for n in reversed(nodes):
        if type(n) is PaddedBranch and tuple(vars(n)) == _BRANCH_ATTRS and len(n.children) == 2:
            out.append((n.feature, n.threshold))
        elif type(n) is PaddedLeaf and tuple(vars(n)) == _LEAF_ATTRS:
            out.append(None)
        else:
            return None
    return tuple(out)


def _clone(spec: tuple[tuple[str, float] | None, ...], lm: list[int], rm: list[int]) -> list[Any]:
    """One tree from its template and masses: its nodes in depth-first order (the root first).

    Nodes are made as River's constructors make them (same attributes in the same order, so
    branches share their attribute keys), without the constructors' call overhead; a leaf's
    attributes are a dict, as ``Leaf.__init__`` leaves them.
    """
    stack: list[Any] = []
    push, pop = stack.append, stack.pop
    built: list[Any] = []
    keep = built.append
    n: Any
    for s, lmass, rmass in zip(spec, reversed(lm), reversed(rm), strict=True):
        if s is None:
            n = _new(PaddedLeaf)
            n.__dict__ = {"r_mass": rmass, "l_mass": lmass}
        else:
            n = _new(PaddedBranch)
            n.children = (pop(), pop())  # in reverse depth-first order the left child is on top
            n.feature, n.threshold = s
            n.l_mass = lmass
            n.r_mass = rmass
        push(n)
        keep(n)
    built.reverse()
    return built


def _same_tree(a: list[Any], b: list[Any]) -> bool:
    if len(a) != len(b):
        return False
    index_a = {id(n): i for i, n in enumerate(a)}
    index_b = {id(n): i for i, n in enumerate(b)}
    for x, y in zip(a, b, strict=True):
        if type(x) is not type(y) or vars(x).keys() != vars(y).keys():
            return False
        for k, v in vars(x).items():
            if k == "children":
                if [index_a[id(c)] for c in v] != [index_b[id(c)] for c in vars(y)[k]]:
                    return False
            elif v != vars(y)[k]:
                return False
    return True


@functools.lru_cache(maxsize=16)
def _template(key: tuple[Any, ...]) -> _Template:
    seed, n_trees, height, limits = key
    m = anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, limits=dict(limits), seed=seed)
    _draw(m)
    tree_nodes = _tree_nodes(m)
    specs = [_spec(nodes) for nodes in tree_nodes]
    clonable = (
        getattr(m, "_tree_nodes", None) is not None
        and [list(t.iter_dfs()) for t in m.trees] == m._tree_nodes
        and all(s is not None for s in specs)
        and all(
            _same_tree(_clone(s, list(map(_L_MASS, nodes)), list(map(_R_MASS, nodes))), nodes)
            for s, nodes in zip(specs, tree_nodes, strict=True)
            if s is not None
        )
    )
    return _Template(
        specs=tuple(s for s in specs if s is not None) if clonable else (),
        rng_state=m.rng.getstate(),
        shape=_fingerprint(tree_nodes),
        clonable=clonable,
    )


def _shape_of(m: anomaly.HalfSpaceTrees) -> int | None:
    """The template's checksum if ``m``'s trees are the template's (their roots are checked, which
    costs nothing next to hashing every node), else the checksum of ``m``'s own trees."""
    tpl = _template(_key(m))
    tree_nodes = _tree_nodes(m)
    if tpl.clonable and len(tree_nodes) == len(tpl.specs):
        roots = [spec[-1] for spec in tpl.specs]
        if all(
            len(nodes) == len(spec) and type(nodes[0]) is PaddedBranch and (nodes[0].feature, nodes[0].threshold) == r
            for nodes, spec, r in zip(tree_nodes, tpl.specs, roots, strict=True)
        ):
            return tpl.shape
    return _fingerprint(tree_nodes)


def _restore_trees(m: anomaly.HalfSpaceTrees, lm: list[list[int]], rm: list[list[int]], shape: int | None) -> bool:
    """Give ``m`` (which has no trees yet) the saved trees; False if they do not fit its shape."""
    tpl = _template(_key(m))
    if shape is not None and shape != tpl.shape:
        return False
    if len(lm) != m.n_trees or len(rm) != m.n_trees:
        return False
    if tpl.clonable:
        if any(len(a) != len(s) or len(b) != len(s) for a, b, s in zip(lm, rm, tpl.specs, strict=True)):
            return False
        tree_nodes = [_clone(s, a, b) for s, a, b in zip(tpl.specs, lm, rm, strict=True)]
        m.trees = [nodes[0] for nodes in tree_nodes]
        m._tree_nodes = tree_nodes
        m.rng.setstate(tpl.rng_state)
        return True
    _draw(m)
    tree_nodes = _tree_nodes(m)
    if any(len(a) != len(nodes) or len(b) != len(nodes) for a, b, nodes in zip(lm, rm, tree_nodes, strict=True)):
        return False
    for nodes, a, b in zip(tree_nodes, lm, rm, strict=True):
        for node, lmass, rmass in zip(nodes, a, b, strict=True):
            node.l_mass, node.r_mass = lmass, rmass
    return True
