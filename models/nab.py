"""NAB scoring, implemented from Lavin & Ahmad (2015), "Evaluating Real-time Anomaly Detection
Algorithms - the Numenta Anomaly Benchmark".

Per data file, with labelled anomaly windows (index ranges) and a detector's detections (indices):

- detections inside the first 15% of the file (the probationary period) are ignored;
- in each window only the earliest detection counts, as a true positive worth
  ``A_TP * sigma(y)`` where ``y`` is its position relative to the window's end, in window lengths
  (``y = -1`` at the window's first point, ``0`` just past its last), and
  ``sigma(y) = 2 / (1 + exp(5 y)) - 1``: early detection earns almost ``A_TP``, late almost nothing;
- a window without detection costs ``-A_FN``;
- a detection outside every window is a false positive worth ``A_FP * sigma(y)`` with ``y`` its
  distance past the end of the preceding window, in that window's lengths (just after a window it
  costs little, far away almost ``-A_FP``); before any window it costs ``-A_FP``.

The raw score of a detector is the sum over files; it is normalised against the null detector
(never fires: ``-A_FN`` per window) and the perfect one (one detection at each window's start):
``100 * (S - S_null) / (S_perfect - S_null)``. Profiles (A_TP, A_FP, A_FN): standard (1, 0.11, 1),
reward_low_FP (1, 0.22, 1), reward_low_FN (1, 0.11, 2).

>>> round(sigma(-1.0), 4), sigma(0.0)
(0.9866, 0.0)
>>> w = [(100, 119)]
>>> round(score_file(200, w, [100], PROFILES["standard"]).raw, 4)
0.9866
>>> score_file(200, w, [], PROFILES["standard"]).raw
-1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PROFILES", "FileScore", "Profile", "normalised", "score_file", "sigma"]


@dataclass(frozen=True)
class Profile:
    a_tp: float
    a_fp: float
    a_fn: float


PROFILES = {
    "standard": Profile(1.0, 0.11, 1.0),
    "reward_low_FP": Profile(1.0, 0.22, 1.0),
    "reward_low_FN": Profile(1.0, 0.11, 2.0),
}


def sigma(y: float) -> float:
    """NAB's scaled sigmoid, in (-1, 1)."""
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


@dataclass
class FileScore:
    raw: float
    tp: int
    fp: int
    fn: int
    null: float
    perfect: float


def score_file(
    length: int,
    windows: Sequence[tuple[int, int]],
    detections: Sequence[int],
    profile: Profile,
    probation: float = 0.15,
) -> FileScore:
    """Score one file. ``windows`` are inclusive ``(first, last)`` indices, sorted."""
    start = math.floor(probation * length)
    dets = sorted(d for d in set(detections) if d >= start)
    wins = sorted(windows)
    raw = 0.0
    tp = fp = 0
    hit = [False] * len(wins)
    for d in dets:
        inside = next((i for i, (a, b) in enumerate(wins) if a <= d <= b), None)
        if inside is not None:
            if not hit[inside]:
                a, b = wins[inside]
                width = b - a + 1
                y = -(b + 1 - d) / width  # -1 at the first point of the window
                raw += profile.a_tp * sigma(y)
                hit[inside] = True
                tp += 1
            continue
        prev = [(a, b) for a, b in wins if b < d]
        if prev:
            a, b = prev[-1]
            y = (d - b) / (b - a + 1)
            raw += profile.a_fp * sigma(y)
        else:
            raw -= profile.a_fp
        fp += 1
    fn = hit.count(False)
    raw -= profile.a_fn * fn
    null = -profile.a_fn * len(wins)
    perfect = profile.a_tp * sigma(-1.0) * len(wins)
    return FileScore(raw, tp, fp, fn, null, perfect)


def normalised(scores: Sequence[FileScore]) -> float:
    """NAB's normalised score over files: 0 = never fires, 100 = perfect."""
    s = sum(x.raw for x in scores)
    null = sum(x.null for x in scores)
    perfect = sum(x.perfect for x in scores)
    return round(100.0 * (s - null) / (perfect - null), 2) if perfect != null else 0.0
