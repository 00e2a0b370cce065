from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

import models.anomaly as anomaly_module
from models.anomaly import FEATURES, AnomalyHit, AnomalyWatch


def calm(rng: random.Random) -> dict[str, float]:
    return {"volume": rng.gauss(0, 1), "negative_share": rng.gauss(0, 1), "impact_negativity": rng.gauss(0, 1)}


def test_quiet_for_its_first_window_and_warmup_then_rarely() -> None:
    rng = random.Random(11)
    w = AnomalyWatch(window_size=64, warmup=100)
    # nothing at all before one window + warmup scores, however odd the input
    early = [w.update({"volume": 6.0, "negative_share": 6.0}) for _ in range(150)]
    assert early == [None] * 150
    w = AnomalyWatch(window_size=64, warmup=100)
    hits = sum(w.update(calm(rng)) is not None for _ in range(3000))
    assert hits <= 3  # about 1 in 1,000 calm buckets at most


def test_state_survives_a_round_trip_and_an_episode_is_reported_once() -> None:
    rng = random.Random(12)
    w = AnomalyWatch()
    for _ in range(400):
        w.update(calm(rng))
    saved = orjson.dumps(w.to_dict())  # what Redis holds: JSON, never a pickle
    w = AnomalyWatch.from_dict(orjson.loads(saved))
    odd = {"volume": 3.5, "negative_share": 3.8, "impact_negativity": 3.6}
    first = w.update(odd)
    assert first is not None and first.inputs == 3 and first.top == "negative_share"
    # the same odd mix again and again: one report per episode, and the trees do not learn it
    assert all(w.update(odd) is None for _ in range(30))
    assert w.model.score_one({k: (v + 8) / 16 for k, v in {**odd, "rating": 0.0}.items()}) >= first.threshold
    w.update(calm(rng))
    w.update(calm(rng))
    assert w.update(odd) is not None  # a new episode


def test_single_input_or_mild_mix_is_left_to_the_per_signal_detectors() -> None:
    rng = random.Random(13)
    w = AnomalyWatch()
    for _ in range(400):
        w.update(calm(rng))
    assert w.update({"volume": 7.0}) is None  # one input: the volume detector's job
    assert w.update({"volume": -2.9, "negative_share": 2.9}) is None  # unusual maybe, but nothing >= 3 sigma


# --- the saved state: a decoded watch is the watch that was saved ------------------------------


def inputs(rng: random.Random, n: int) -> list[dict[str, float]]:
    """Calm buckets with now and then an odd mix (scored above the threshold, so not learned), a
    two-input bucket (a tree's split feature missing from the walk) and one with every input."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.01:
            out.append({"volume": rng.uniform(5, 8), "negative_share": rng.uniform(5, 8), "impact_negativity": 6.0})
        elif r < 0.15:
            out.append({"volume": rng.gauss(0, 1), "negative_share": rng.gauss(0, 1)})
        elif r < 0.25:
            out.append({**calm(rng), "rating": rng.gauss(0, 2)})
        else:
            out.append(calm(rng))
    return out


def trace(w: AnomalyWatch, xs: list[dict[str, float]], at0: int) -> list[tuple[str, AnomalyHit | None]]:
    """What the watch says on each input: its raw score (exact bits) before learning, then its hit."""
    out = []
    for i, z in enumerate(xs):
        score = float(w.model.score_one({f: (max(-8.0, min(8.0, z.get(f, 0.0))) + 8.0) / 16.0 for f in FEATURES}))
        out.append((score.hex(), w.update(z, at=at0 + i)))
    return out


def nodes_of(w: AnomalyWatch) -> list[list[tuple[type, dict[str, object]]]]:
    """Every node's type and attributes (children as their positions in the tree)."""
    trees = []
    for nodes in w.model._tree_nodes:
        index = {id(n): i for i, n in enumerate(nodes)}
        trees.append(
            [
                (type(n), {k: [index[id(c)] for c in v] if k == "children" else v for k, v in vars(n).items()})
                for n in nodes
            ]
        )
    return trees


def learned(rng_seed: int, n: int = 600, **params: float) -> AnomalyWatch:
    rng = random.Random(rng_seed)
    w = AnomalyWatch(**params)  # type: ignore[arg-type]
    trace(w, inputs(rng, n), 0)
    return w


def v1_doc(w: AnomalyWatch) -> dict[str, Any]:
    """The document the first format saved: masses as one ``[l_mass, r_mass]`` pair per node."""
    d = w.to_dict()
    d["v"] = 1
    d["masses"] = [[[n.l_mass, n.r_mass] for n in nodes] for nodes in w.model._tree_nodes]
    for k in ("shape", "l_mass", "r_mass"):
        del d[k]
    return d


def assert_same_watch(a: AnomalyWatch, b: AnomalyWatch, rng: random.Random, n: int = 300) -> None:
    assert nodes_of(b) == nodes_of(a)
    assert b.model.rng.getstate() == a.model.rng.getstate()
    odd = {"volume": 7.5, "negative_share": 7.8, "impact_negativity": 7.9}
    xs = [*inputs(rng, n), odd, odd, *inputs(rng, 5), odd]  # ends with odd mixes: judged, not learned
    ta, tb = trace(a, xs, 10_000), trace(b, xs, 10_000)
    assert tb == ta
    assert any(hit is not None for _, hit in ta)
    assert b.to_dict() == a.to_dict()


def test_a_decoded_watch_scores_and_learns_exactly_as_the_saved_one() -> None:
    w = learned(21)
    assert w.scored > w.warmup and w.model.counter not in (0, w.window_size)  # mid-window, past warmup
    doc = orjson.loads(orjson.dumps(w.to_dict()))
    assert doc["v"] == 2 and isinstance(doc["shape"], int)
    assert anomaly_module._template(anomaly_module._key(w.model)).clonable  # River's nodes as expected
    assert_same_watch(w, AnomalyWatch.from_dict(doc), random.Random(22))


def test_two_watches_decoded_from_one_doc_share_no_node() -> None:
    w = learned(23, q=0.99, window_size=32, warmup=40)
    doc = orjson.loads(orjson.dumps(w.to_dict()))
    a, b = AnomalyWatch.from_dict(doc), AnomalyWatch.from_dict(doc)
    trace(a, inputs(random.Random(24), 200), 10_000)
    assert b.to_dict() == doc  # what a learned did not reach b
    assert_same_watch(w, b, random.Random(25))


def test_a_watch_saved_before_it_learned_draws_its_trees_as_a_new_one() -> None:
    doc = orjson.loads(orjson.dumps(AnomalyWatch(seed=5).to_dict()))
    assert doc["l_mass"] == [] and doc["shape"] is None
    w = AnomalyWatch.from_dict(doc)
    assert not w.model.trees
    assert_same_watch(learned(26, n=0, seed=5), w, random.Random(27))


def test_a_watch_saved_in_the_first_format_loads_and_behaves_as_it_did() -> None:
    for seed, n in ((31, 600), (32, 40)):  # past its first window; still in it
        w = learned(seed, n=n)
        doc = orjson.loads(orjson.dumps(v1_doc(w)))
        assert doc["v"] == 1 and len(doc["masses"]) == 10
        assert_same_watch(w, AnomalyWatch.from_dict(doc), random.Random(seed + 100))


def test_trees_of_another_shape_start_afresh() -> None:
    w = learned(41, window_size=48)
    doc = orjson.loads(orjson.dumps(w.to_dict()))
    other_shape = {**doc, "shape": doc["shape"] ^ 1}  # drawn from another seed, features or River
    short = {**doc, "l_mass": [t[:-1] for t in doc["l_mass"]], "r_mass": [t[:-1] for t in doc["r_mass"]]}
    fewer = {**doc, "l_mass": doc["l_mass"][:-1], "r_mass": doc["r_mass"][:-1]}
    old = v1_doc(w)
    old_short = {**old, "masses": [t[:-1] for t in old["masses"]]}
    for bad in (other_shape, short, fewer, old_short):
        fresh = AnomalyWatch.from_dict(bad)
        assert (fresh.seen, fresh.scored, len(fresh.scores), fresh.model.trees) == (0, 0, 0, [])
        assert fresh.window_size == 48  # its parameters are kept
        assert_same_watch(AnomalyWatch(window_size=48), fresh, random.Random(42))


def test_decoding_without_the_template_lets_river_draw_the_trees(monkeypatch: pytest.MonkeyPatch) -> None:
    w = learned(51)
    doc = orjson.loads(orjson.dumps(w.to_dict()))
    anomaly_module._template.cache_clear()
    monkeypatch.setattr(anomaly_module, "_spec", lambda nodes: None)  # River's nodes not as expected
    try:
        assert not anomaly_module._template(anomaly_module._key(w.model)).clonable
        assert_same_watch(w, AnomalyWatch.from_dict(doc), random.Random(52))
        assert_same_watch(learned(53), AnomalyWatch.from_dict(v1_doc(learned(53))), random.Random(54))
    finally:
        anomaly_module._template.cache_clear()
