"""NAB scoring, implemented from Lavin & Ahmad (2015), "Evaluating Real-time Anomaly Detection
Algorithms - the Numenta Anomaly Benchmark" (arXiv:1510.03336), and checked against the details of
Numenta's reference code (``nab/sweeper.py``, ``nab/labeler.py``, ``nab/runner.py``).

Pure functions: series length, anomaly windows and detections in, scores out. Positions are row
indices of one data file; windows are inclusive ``(first, last)`` index pairs.

**Windows.** NAB labels every anomaly with a window centred on it. ``combined_windows.json`` gives
them directly (timestamp pairs, :func:`windows_from_spans`); from bare anomaly points
(``combined_labels.json``) :func:`windows_from_points` rebuilds them as NAB's labeler does: length
``int(0.10 * n / k)`` rows for ``k`` anomalies in ``n`` rows, centred, clipped to the file; a first
window that starts inside the probationary period is dropped and overlapping windows are merged.

**Probation.** The first ``min(floor(0.15 n), 0.15 * 5000)`` rows are for learning: a detection
there is ignored, and a window lying entirely in it is not scored.

**Scaled sigmoid** (paper eq. 1, in the form NAB's code uses)::

    sigma(y) = 2 / (1 + exp(5 y)) - 1          (and -1 for y >= 3)

**True positives.** For a window ``[a, b]`` of width ``w = b - a + 1``, a detection at row ``i``
has relative position ``y = -(b - i + 1) / w`` (``-1`` at the window's first row, ``-1/w`` at its
last) and earns ``A_TP * sigma(y) / sigma(-1)``: exactly ``A_TP`` at the first row, about
``A_TP * 0.86`` at the centre (the labelled anomaly), close to 0 at the end. Only the earliest
detection in a window counts; later ones in the same window are ignored (neither TP nor FP).

**False positives.** A detection outside every window at row ``i`` is weighted by its distance
after the end ``b'`` of the preceding window (width ``w'``): ``y = (i - b') / (w' - 1)``, scoring
``A_FP * sigma(y)``, a small penalty right after a window, ``-A_FP`` from three window widths on.
Before the first window it costs ``-A_FP``. Every such detection counts.

**False negatives.** Each scored window without a detection costs ``-A_FN``. True negatives
score 0 in NAB (``A_TN`` is part of the profiles but never used).

**Raw and normalised scores** (paper eqs. 2-3): the raw score of a file is the sum of the above;
over a corpus, ``S = sum of raw scores`` and the final score is
``100 * (S - S_null) / (S_perfect - S_null)`` where the null detector never fires
(``-A_FN`` per window) and the perfect one fires once at the first row of each window (``A_TP``
per window): 0 = useless, 100 = perfect, negative = worse than never firing.

Profiles (NAB ``config/profiles.json``): standard ``A_TP=1, A_FP=0.11, A_FN=1``;
reward_low_FP_rate ``A_FP=0.22``; reward_low_FN_rate ``A_FN=2``. NAB also sweeps a threshold
per detector and profile to maximise the score; that is *not* part of scoring and is not done
here: detectors run with fixed settings and their detections are scored as they are.

A 1000-row file (probation 150 rows) with one 50-row window at rows 400..449:

>>> std = PROFILES["standard"]
>>> score_file(1000, [(400, 449)], [400], std).raw  # first row of the window: A_TP
1.0
>>> round(score_file(1000, [(400, 449)], [449], std).raw, 4)  # last row: almost nothing
0.0506
>>> score_file(1000, [(400, 449)], [], std).raw  # missed: -A_FN
-1.0
>>> score_file(1000, [(400, 449)], [400, 420, 1], std).raw  # later hit and probation ignored
1.0
>>> round(score_file(1000, [(400, 449)], [400, 900], std).raw, 4)  # FP 9 widths away: -A_FP
0.89
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "PROFILES",
    "FileScore",
    "Profile",
    "Window",
    "get_profile",
    "indices_of",
    "merge_windows",
    "normalised_score",
    "parse_label_entry",
    "parse_timestamp",
    "perfect_detections",
    "probationary_length",
    "scaled_sigmoid",
    "score_file",
    "summarise",
    "windows_for",
    "windows_from_points",
    "windows_from_spans",
]

Window = tuple[int, int]
"""Inclusive ``(first, last)`` row indices of an anomaly window."""

PROBATION_PERCENT = 0.15
WINDOW_FRACTION = 0.10


@dataclass(frozen=True, slots=True)
class Profile:
    """An application profile: NAB's cost matrix (weights are magnitudes, all >= 0)."""

    name: str
    a_tp: float
    a_fp: float
    a_tn: float
    a_fn: float


PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", a_tp=1.0, a_fp=0.11, a_tn=1.0, a_fn=1.0),
    "reward_low_FP_rate": Profile("reward_low_FP_rate", a_tp=1.0, a_fp=0.22, a_tn=1.0, a_fn=1.0),
    "reward_low_FN_rate": Profile("reward_low_FN_rate", a_tp=1.0, a_fp=0.11, a_tn=1.0, a_fn=2.0),
}


def get_profile(name: str) -> Profile:
    """A profile by NAB's name, case-insensitive; ``reward_low_FP``/``low_fp`` etc. also work.

    >>> get_profile("reward_low_fp").a_fp, get_profile("low_FN").a_fn
    (0.22, 2.0)
    """
    key = name.strip().lower().removeprefix("reward_").removesuffix("_rate")
    for p in PROFILES.values():
        if key == p.name.lower().removeprefix("reward_").removesuffix("_rate"):
            return p
    raise ValueError(f"unknown NAB profile {name!r}; choose from {', '.join(PROFILES)}")


def scaled_sigmoid(y: float) -> float:
    """NAB's scaled sigmoid ``2 / (1 + exp(5 y)) - 1``, and ``-1`` for ``y >= 3``.

    >>> round(scaled_sigmoid(-1.0), 5), round(scaled_sigmoid(-0.5), 5), scaled_sigmoid(0.0)
    (0.98661, 0.84828, 0.0)
    >>> round(scaled_sigmoid(1.0), 5), scaled_sigmoid(3.0)
    (-0.98661, -1.0)
    """
    if y >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def probationary_length(n: int, percent: float = PROBATION_PERCENT) -> int:
    """Rows at the start of a file that are never scored: ``min(floor(p n), p * 5000)``.

    >>> probationary_length(1000), probationary_length(22695)
    (150, 750)
    """
    return int(min(math.floor(percent * n), percent * 5000))


def merge_windows(windows: Iterable[Window]) -> list[Window]:
    """Sort windows and merge those that overlap or touch.

    >>> merge_windows([(50, 60), (10, 20), (18, 30), (30, 40)])
    [(10, 40), (50, 60)]
    """
    out: list[Window] = []
    for a, b in sorted(windows):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def windows_from_points(
    n: int,
    points: Sequence[int],
    window_fraction: float = WINDOW_FRACTION,
    probation_percent: float = PROBATION_PERCENT,
) -> list[Window]:
    """NAB's windows around labelled anomaly rows (``nab/labeler.py``).

    Length ``int(window_fraction * n / k)`` for ``k`` anomalies, centred on each (``a - L//2`` to
    ``a + L//2``, clipped to the file); the first window is dropped if it starts inside the
    probationary period; overlapping windows are merged.

    >>> windows_from_points(1000, [500])  # L = 100
    [(450, 550)]
    >>> windows_from_points(1000, [300, 320, 900])  # L = 33: the first two merge
    [(284, 336), (884, 916)]
    >>> windows_from_points(1000, [100, 600])  # L = 50: the first starts in probation
    [(575, 625)]
    """
    pts = sorted(set(points))
    if not pts or n <= 0:
        return []
    length = int(window_fraction * n / len(pts))
    half = length // 2
    wins = [(max(a - half, 0), min(a + half, n - 1)) for a in pts]
    if wins[0][0] < probationary_length(n, probation_percent):
        wins = wins[1:]
    return merge_windows(wins)


def windows_from_spans(timestamps: Sequence[datetime], spans: Iterable[tuple[datetime, datetime]]) -> list[Window]:
    """Rows covered by ``[start, end]`` timestamp spans (``timestamps`` sorted); empty spans dropped.

    >>> from datetime import datetime, timedelta
    >>> ts = [datetime(2024, 1, 1) + timedelta(hours=h) for h in range(10)]
    >>> windows_from_spans(ts, [(ts[2], ts[4]), (datetime(2024, 1, 1, 6, 30), datetime(2024, 1, 1, 8))])
    [(2, 4), (7, 8)]
    """
    wins = []
    for start, end in spans:
        a = bisect.bisect_left(timestamps, start)
        b = bisect.bisect_right(timestamps, end) - 1
        if a <= b:
            wins.append((a, b))
    return merge_windows(wins)


def parse_timestamp(value: str) -> datetime:
    """ISO timestamp as an aware datetime; naive ones (NAB's) are taken as UTC.

    >>> parse_timestamp("2014-07-10 12:29:00.000000")
    datetime.datetime(2014, 7, 10, 12, 29, tzinfo=datetime.timezone.utc)
    """
    ts = datetime.fromisoformat(value.strip())
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def parse_label_entry(entry: Sequence[Any]) -> tuple[list[tuple[datetime, datetime]], list[datetime]]:
    """One file's labels: ``(spans, [])`` for NAB windows, ``([], points)`` for anomaly points.

    >>> parse_label_entry([["2014-01-01 00:00:00", "2014-01-02 00:00:00"]])[0][0][1].day
    2
    >>> len(parse_label_entry(["2014-01-01 00:00:00"])[1])
    1
    """
    spans: list[tuple[datetime, datetime]] = []
    points: list[datetime] = []
    for item in entry:
        if isinstance(item, str):
            points.append(parse_timestamp(item))
        elif isinstance(item, Sequence) and len(item) == 2:
            spans.append((parse_timestamp(str(item[0])), parse_timestamp(str(item[1]))))
        else:
            raise ValueError(f"label {item!r} is neither a timestamp nor a [start, end] window")
    if spans and points:
        raise ValueError("a file's labels mix windows and points")
    return spans, points


def windows_for(
    timestamps: Sequence[datetime], entry: Sequence[Any], probation_percent: float = PROBATION_PERCENT
) -> list[Window]:
    """Windows of one file from its entry in a NAB labels file (windows or points)."""
    spans, points = parse_label_entry(entry)
    if spans:
        return windows_from_spans(timestamps, spans)
    idx = [min(bisect.bisect_left(timestamps, p), len(timestamps) - 1) for p in points]
    return windows_from_points(len(timestamps), idx, probation_percent=probation_percent)


def indices_of(timestamps: Sequence[datetime], times: Iterable[datetime]) -> list[int]:
    """Row index of each detection time (the first row at or after it; sorted ``timestamps``)."""
    out = []
    for t in times:
        i = bisect.bisect_left(timestamps, t)
        if i < len(timestamps):
            out.append(i)
    return out


@dataclass(frozen=True, slots=True)
class FileScore:
    """The NAB score of one detector on one file under one profile."""

    raw: float
    tp: int  # windows detected
    fp: int  # scored detections outside every window
    fn: int  # windows missed
    windows: int  # windows scored (not entirely in the probationary period)
    ignored: int  # detections not scored: in probation, or after the first in a window
    tp_score: float
    fp_score: float
    null: float  # raw score of a detector that never fires
    perfect: float  # raw score of one detection at the first row of each window


def perfect_detections(windows: Sequence[Window]) -> list[int]:
    """The perfect detector's detections: the first row of each window."""
    return [a for a, _ in windows]


def score_file(
    n: int,
    windows: Sequence[Window],
    detections: Iterable[int],
    profile: Profile,
    probation_percent: float = PROBATION_PERCENT,
) -> FileScore:
    """Score a detector's detections (row indices) on a file of ``n`` rows (see module doc).

    ``windows`` must lie inside ``[0, n)``; they are sorted and merged first.
    """
    wins = merge_windows(windows)
    if wins and (wins[0][0] < 0 or wins[-1][1] >= n):
        raise ValueError(f"windows {wins} fall outside a file of {n} rows")
    start = probationary_length(n, probation_percent)
    scored = [k for k, (_, b) in enumerate(wins) if b >= start]
    ends = [b for _, b in wins]
    best: dict[int, float] = {}
    fp_score = 0.0
    fp = ignored = 0
    max_tp = scaled_sigmoid(-1.0)
    for i in sorted(set(detections)):
        if i < start or i >= n:
            ignored += 1
            continue
        k = bisect.bisect_left(ends, i)  # first window ending at or after i
        if k < len(wins) and wins[k][0] <= i:
            a, b = wins[k]
            if k in best:
                ignored += 1
                continue
            best[k] = profile.a_tp * scaled_sigmoid(-(b - i + 1) / (b - a + 1)) / max_tp
            continue
        fp += 1
        if k == 0:  # no window before this row
            fp_score -= profile.a_fp
        else:
            a, b = wins[k - 1]
            fp_score += profile.a_fp * scaled_sigmoid((i - b) / max(b - a, 1))
    tp_score = sum(best.values())
    fn = len(scored) - len(best)
    raw = tp_score + fp_score - profile.a_fn * fn
    return FileScore(
        raw=raw,
        tp=len(best),
        fp=fp,
        fn=fn,
        windows=len(scored),
        ignored=ignored,
        tp_score=tp_score,
        fp_score=fp_score,
        null=-profile.a_fn * len(scored),
        perfect=profile.a_tp * len(scored),
    )


def normalised_score(files: Iterable[FileScore]) -> float:
    """NAB's final score over a corpus: ``100 (S - S_null) / (S_perfect - S_null)``.

    >>> std = PROFILES["standard"]
    >>> files = [score_file(1000, [(400, 449)], d, std) for d in ([], [400])]
    >>> normalised_score(files)  # one window hit perfectly, one missed
    50.0
    """
    fs = list(files)
    s = sum(f.raw for f in fs)
    null = sum(f.null for f in fs)
    perfect = sum(f.perfect for f in fs)
    if perfect == null:
        return 0.0
    return 100.0 * (s - null) / (perfect - null)


def summarise(files: Mapping[str, FileScore]) -> dict[str, Any]:
    """Totals of per-file scores, for reports."""
    fs = list(files.values())
    return {
        "score": normalised_score(fs),
        "raw": sum(f.raw for f in fs),
        "tp": sum(f.tp for f in fs),
        "fp": sum(f.fp for f in fs),
        "fn": sum(f.fn for f in fs),
        "windows": sum(f.windows for f in fs),
    }
