"""NAB scoring on tiny hand-made files; expected values computed by hand from the formulas in
:mod:`models.nab` (and cross-checked against a literal port of NAB's sweeper)."""

from __future__ import annotations

import csv
import json
import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from models.nab import (
    PROFILES,
    Profile,
    get_profile,
    merge_windows,
    normalised_score,
    parse_label_entry,
    parse_timestamp,
    perfect_detections,
    probationary_length,
    scaled_sigmoid,
    score_file,
    windows_for,
    windows_from_points,
    windows_from_spans,
)

from ..conftest import SHARED_DATA

STD = PROFILES["standard"]
LOW_FP = PROFILES["reward_low_FP_rate"]
LOW_FN = PROFILES["reward_low_FN_rate"]
N = 1000  # probation: floor(0.15 * 1000) = 150 rows
W = [(400, 449)]  # one window of 50 rows
MAX_TP = 2 / (1 + math.exp(-5)) - 1  # sigma(-1) = 0.986614


def test_scaled_sigmoid_by_hand() -> None:
    assert scaled_sigmoid(-1.0) == pytest.approx(MAX_TP) == pytest.approx(0.986614, abs=1e-6)
    assert scaled_sigmoid(-0.5) == pytest.approx(0.848284, abs=1e-6)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(1.0) == pytest.approx(-0.986614, abs=1e-6)
    assert scaled_sigmoid(3.0) == -1.0 and scaled_sigmoid(10.0) == -1.0


def test_profiles_are_nabs() -> None:
    assert (STD.a_tp, STD.a_fp, STD.a_tn, STD.a_fn) == (1.0, 0.11, 1.0, 1.0)
    assert (LOW_FP.a_fp, LOW_FP.a_fn) == (0.22, 1.0)
    assert (LOW_FN.a_fp, LOW_FN.a_fn) == (0.11, 2.0)
    assert get_profile("reward_low_FP") is LOW_FP and get_profile("STANDARD") is STD
    with pytest.raises(ValueError, match="unknown NAB profile"):
        get_profile("lenient")


def test_probationary_length() -> None:
    assert probationary_length(1000) == 150
    assert probationary_length(4032) == 604
    assert probationary_length(22695) == 750  # capped at 0.15 * 5000


def test_detection_at_window_start_scores_a_tp() -> None:
    s = score_file(N, W, [400], STD)
    assert s.raw == pytest.approx(1.0) and (s.tp, s.fp, s.fn) == (1, 0, 0)


def test_detection_at_window_end_scores_almost_nothing() -> None:
    # y = -(449 - 449 + 1) / 50 = -0.02; sigma = tanh(0.05) = 0.049958; / sigma(-1) = 0.050636
    s = score_file(N, W, [449], STD)
    assert s.raw == pytest.approx(0.050636, abs=1e-6) and s.tp == 1


def test_detection_mid_window() -> None:
    # row 424: y = -(449 - 424 + 1) / 50 = -0.52; sigma = tanh(1.3) = 0.861723; / 0.986614
    assert score_file(N, W, [424], STD).raw == pytest.approx(0.873414, abs=1e-6)


def test_only_the_earliest_detection_in_a_window_counts() -> None:
    assert score_file(N, W, [440, 400, 410], STD).raw == pytest.approx(1.0)
    # earliest is 420: y = -30/50; tanh(1.5) / sigma(-1) = 0.905148 / 0.986614
    s = score_file(N, W, [420, 440, 445], STD)
    assert s.raw == pytest.approx(0.917429, abs=1e-6)
    assert (s.tp, s.fp, s.ignored) == (1, 0, 2)


def test_false_positive_far_after_a_window_costs_a_fp() -> None:
    # row 900: y = (900 - 449) / (50 - 1) = 9.2 >= 3 -> sigma = -1 -> -A_FP
    s = score_file(N, W, [400, 900], STD)
    assert s.raw == pytest.approx(1.0 - 0.11) and s.fp == 1
    assert score_file(N, W, [400, 900], LOW_FP).raw == pytest.approx(1.0 - 0.22)


def test_false_positive_right_after_a_window_costs_little() -> None:
    # row 450: y = 1/49; sigma = -tanh(2.5/49) = -0.050976; * 0.11 = -0.005607
    assert score_file(N, W, [400, 450], STD).raw == pytest.approx(1.0 - 0.005607, abs=1e-6)
    # row 498: y = 49/49 = 1; sigma(1) = -0.986614; * 0.11 = -0.108528
    assert score_file(N, W, [400, 498], STD).raw == pytest.approx(1.0 - 0.108528, abs=1e-6)


def test_false_positive_before_any_window_costs_a_fp() -> None:
    s = score_file(N, W, [200], STD)
    assert s.raw == pytest.approx(-0.11 - 1.0) and (s.tp, s.fp, s.fn) == (0, 1, 1)


def test_missed_window_costs_a_fn() -> None:
    assert score_file(N, W, [], STD).raw == -1.0
    assert score_file(N, W, [], LOW_FN).raw == -2.0
    s = score_file(N, [(300, 349), (600, 649)], [300], STD)
    assert s.raw == pytest.approx(1.0 - 1.0) and (s.tp, s.fn) == (1, 1)


def test_probation_is_not_scored() -> None:
    s = score_file(N, W, [10, 149], STD)
    assert s.raw == -1.0 and s.ignored == 2 and s.fp == 0
    # a window entirely inside the probation period is not scored at all
    s = score_file(N, [(10, 60), *W], [], STD)
    assert s.windows == 1 and s.null == -1.0 and s.perfect == 1.0


def test_normalised_score_null_is_0_and_perfect_is_100() -> None:
    files = [(N, W), (2000, [(500, 599), (1200, 1299)]), (500, [])]
    for prof in PROFILES.values():
        null = [score_file(n, w, [], prof) for n, w in files]
        perfect = [score_file(n, w, perfect_detections(w), prof) for n, w in files]
        assert normalised_score(null) == 0.0
        assert normalised_score(perfect) == pytest.approx(100.0)
    # 3 windows, all hit at the start, one far false positive: 100 * (3 - 0.11 + 3) / (3 + 3)
    fs = [score_file(N, W, [400], STD), score_file(2000, [(500, 599), (1200, 1299)], [500, 1200, 1900], STD)]
    assert normalised_score(fs) == pytest.approx(100 * (3 - 0.11 + 3) / 6)
    # half the windows hit perfectly, the other missed
    assert normalised_score([score_file(N, W, [400], STD), score_file(N, W, [], STD)]) == pytest.approx(50.0)


def test_windows_from_points_as_nab_labeler() -> None:
    assert windows_from_points(1000, [500]) == [(450, 550)]  # int(0.1 * 1000 / 1) = 100
    assert windows_from_points(1000, [300, 320, 900]) == [(284, 336), (884, 916)]  # 33 rows, merged
    assert windows_from_points(1000, [100, 600]) == [(575, 625)]  # first starts in probation
    assert windows_from_points(1000, [990]) == [(940, 999)]  # clipped to the file
    assert merge_windows([(5, 9), (1, 3), (3, 4)]) == [(1, 4), (5, 9)]


def test_windows_from_labels_files() -> None:
    ts = [datetime(2014, 1, 1, tzinfo=UTC) + timedelta(hours=h) for h in range(1000)]
    windows = [["2014-01-17 16:00:00.000000", "2014-01-19 17:00:00.000000"]]  # rows 400..449
    assert windows_for(ts, windows) == [(400, 449)]
    assert windows_from_spans(ts, [(ts[-1] + timedelta(hours=1), ts[-1] + timedelta(hours=5))]) == []
    assert windows_for(ts, ["2014-01-21 20:00:00"]) == [(450, 550)]  # point at row 500
    spans, points = parse_label_entry(windows)
    assert spans[0][0].tzinfo is UTC and points == []
    with pytest.raises(ValueError, match="mix"):
        parse_label_entry([["2014-01-01", "2014-01-02"], "2014-01-03"])


def _nab_sweeper(n: int, windows: list[tuple[int, int]], detections: set[int], prof: Profile) -> float:
    """A literal port of NAB's ``Sweeper.calcSweepScore`` + ``calcScoreByThreshold`` (one threshold)."""
    limits = list(windows)
    max_tp = scaled_sigmoid(-1.0)
    probation = min(math.floor(0.15 * n), 0.15 * 5000)
    cur: tuple[int, int] | None = None
    prev_right: int | None = None
    prev_width = 0.0
    width = 0.0
    points = []
    for i in range(n):
        if limits and i == limits[0][0]:
            cur = limits.pop(0)
            width = float(cur[1] - cur[0] + 1)
        if cur is not None:
            weighted = scaled_sigmoid(-(cur[1] - i + 1) / width) * prof.a_tp / max_tp
        else:
            pos = 3.0 if prev_right is None else abs(prev_right - i) / (prev_width - 1)
            weighted = scaled_sigmoid(pos) * prof.a_fp
        name = "probationary" if i < probation else (str(cur[0]) if cur is not None else None)
        points.append((i in detections, weighted, name))
        if cur is not None and i == cur[1]:
            prev_right, prev_width, cur = i, width, None
    scorable = [p for p in points if p[2] != "probationary"]
    parts: dict[str | None, float] = {"fp": 0.0}
    for _, _, name in scorable:
        if name is not None:
            parts[name] = -prof.a_fn
    for hit, weighted, name in scorable:
        if hit:
            if name is None:
                parts["fp"] += weighted
            else:
                parts[name] = max(parts[name], weighted)
    return sum(parts.values())


@pytest.mark.parametrize("seed", range(40))
def test_agrees_with_a_port_of_nabs_sweeper(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(200, 3000)
    windows: list[tuple[int, int]] = []
    start = rng.randint(0, n // 3)
    while len(windows) < rng.randint(0, 4):
        a = start + rng.randint(1, n // 4)
        b = a + rng.randint(2, n // 8)
        if b >= n:
            break
        windows.append((a, b))
        start = b + 1
    detections = set(rng.sample(range(n), rng.randint(0, 30)))
    for prof in PROFILES.values():
        assert score_file(n, windows, detections, prof).raw == pytest.approx(_nab_sweeper(n, windows, detections, prof))


NAB = SHARED_DATA / "nab_dev"


@pytest.mark.shared_data
def test_windows_rebuilt_from_points_match_nabs_windows_file() -> None:
    windows = json.loads((NAB / "labels" / "combined_windows.json").read_text())
    points = json.loads((NAB / "labels" / "combined_labels.json").read_text())
    assert set(windows) == set(points)
    for key in windows:
        with (NAB / "data" / key).open(newline="") as f:
            ts = [parse_timestamp(row["timestamp"]) for row in csv.DictReader(f)]
        assert windows_for(ts, points[key]) == windows_for(ts, windows[key]), key
