"""The leader's shortcuts are exact: an empty bucket learned on its own (``EntityDetector.empty``)
is a full update, and ``update_standardized`` is ``standardize`` then ``update``.

The leader defers an entity's empty buckets and learns them when it next needs the detector,
so this equality is what keeps its verdicts the same as judging every entity on every bucket.
"""

from __future__ import annotations

import random

import pytest

from connectors.demo import _poisson
from infra.settings import DetectSettings
from models.detect import EntityDetector
from streams.detection import hour_of_week

T0 = 1_762_041_600  # a Monday, 00:00 UTC


def _bucket(rng: random.Random, i: int, rate: float, crisis: range) -> dict[str, float]:
    """Mentions with a daily cycle, and a negative burst during ``crisis``."""
    lam = rate * (1.6 if 8 <= (i // 60) % 24 < 20 else 0.4) * (8 if i in crisis else 1)
    n = _poisson(rng, lam)
    if not n:
        return {}
    neg = sum(rng.random() < (0.6 if i in crisis else 0.15) for _ in range(n))
    return {"n": n, "events": n, "neg": neg, "pos": n - neg, "sent_sum": 0.3 * (n - 2 * neg), "impact": n}


@pytest.mark.parametrize("rate", [0.05, 0.4, 2.0, 8.0])
def test_empty_buckets_learned_later_give_the_same_verdicts_and_state(rate: float) -> None:
    rng = random.Random(int(rate * 100))
    cfg = DetectSettings()
    eager, lazy = EntityDetector(cfg), EntityDetector(cfg)
    crisis = range(1440 * 4 + 600, 1440 * 4 + 640)
    pending: list[int] = []
    fired = 0
    for i in range(1440 * 6):
        how = hour_of_week(T0 + 60 * i)
        st = _bucket(rng, i, rate, crisis)
        expected = eager.update(st, how)
        if not st:
            assert expected == []  # a bucket without events never fires
            pending.append(how)
            continue
        for h in pending:
            lazy.empty(h)
        pending = []
        assert lazy.update(st, how) == expected, i
        fired += len(expected)
    for h in pending:
        lazy.empty(h)
    assert lazy.to_dict() == eager.to_dict()
    assert fired > 0 or rate < 0.1  # the crisis was seen (the sparsest stream may not show it)


def test_the_closed_form_idle_is_not_an_exact_stand_in() -> None:
    """Why the leader replays empty buckets instead of using ``idle(k)`` (the backtest's
    shortcut for runs no entity has events in): the closed form leaves out the seasonal slots,
    the spreads and the calibration, so a detector idled differs from one that learned them."""
    rng = random.Random(3)
    cfg = DetectSettings()
    a = EntityDetector(cfg)
    for i in range(600):
        st = _bucket(rng, i, 3.0, range(0))
        a.update(st or {"n": 1, "events": 1, "pos": 1}, hour_of_week(T0 + 60 * i))
    b = EntityDetector.from_dict(cfg, a.to_dict())
    for j in range(5):
        a.empty(hour_of_week(T0 + 60 * (600 + j)))
    b.idle(5)
    assert a.to_dict() != b.to_dict()


def test_one_pass_over_the_readings_gives_the_standardised_inputs_and_the_update() -> None:
    rng = random.Random(11)
    cfg = DetectSettings()
    two, one = EntityDetector(cfg), EntityDetector(cfg)
    crisis = range(1500, 1540)
    fired = 0
    for i in range(1440 * 2):
        how = hour_of_week(T0 + 60 * i)
        st = _bucket(rng, i, 4.0, crisis)
        if st:  # reviews, an aspect and reach too: every kind of reading
            r = st["n"] // 3
            st |= {"asp:delivery:n": st["n"] // 2, "asp:delivery:neg": st["neg"] // 2, "impact_neg": 2.0 * st["neg"]}
            st |= {
                "rating_n": r,
                "rating_sum": r * (2.4 if i in crisis else 4.2),
                "rating_sq": r * (7.0 if i in crisis else 18.4),
            }
        zs, verdicts = one.update_standardized(st, how)
        assert zs == two.standardize(st, how)
        assert verdicts == two.update(st, how), i
        fired += len(verdicts)
    assert one.to_dict() == two.to_dict() and fired > 0
    assert {"rating", "win:rating", "asp:delivery", "seq:rating"} <= set(one.signals)
