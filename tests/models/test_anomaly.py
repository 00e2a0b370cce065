from __future__ import annotations

import random

import orjson

from models.anomaly import AnomalyWatch


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
