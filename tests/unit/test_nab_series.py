from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from models.nab import PROFILES, normalised, score_file, sigma
from models.series import HalfSpaceTreesDetector, RollingPeak, SeriesDetector
from streams.eval_detect import eval_detect

from ..conftest import SHARED_DATA

STD = PROFILES["standard"]


def test_nab_scores_by_hand() -> None:
    w = [(400, 449)]  # a 50-point window, after the 15% probation
    early = score_file(1000, w, [400], STD)
    late = score_file(1000, w, [449], STD)
    assert early.raw == pytest.approx(sigma(-1.0)) and early.tp == 1
    assert late.raw == pytest.approx(sigma(-1 / 50)) and late.raw < 0.06
    assert score_file(1000, w, [400, 420], STD).raw == early.raw  # only the first counts
    near = score_file(1000, w, [400, 451], STD).raw - early.raw
    far = score_file(1000, w, [400, 900], STD).raw - early.raw
    assert -STD.a_fp < far < near < 0 and far == pytest.approx(STD.a_fp * sigma(451 / 50))
    assert score_file(1000, w, [], STD).raw == -STD.a_fn
    assert score_file(1000, w, [50], STD).raw == -STD.a_fn  # probation: ignored
    assert score_file(1000, w, [200], STD).raw == -STD.a_fp - STD.a_fn  # before any window
    null = [score_file(1000, w, [], STD), score_file(500, [(300, 320), (400, 420)], [], STD)]
    perfect = [score_file(1000, w, [400], STD), score_file(500, [(300, 320), (400, 420)], [300, 400], STD)]
    assert normalised(null) == 0.0 and normalised(perfect) == 100.0


def series(n: int, spike_at: int | None = None) -> list[tuple[datetime, float]]:
    t0 = datetime(2026, 1, 5)
    out = []
    for i in range(n):
        t = t0 + timedelta(hours=i)
        daily = 50 + 30 * (1 if 8 <= t.hour <= 18 else 0) + (i % 5) * 0.5
        out.append((t, daily * (4 if i == spike_at else 1)))
    return out


def test_series_detector_daily_pattern_and_one_spike() -> None:
    quiet = SeriesDetector(interval_seconds=3600, warmup=24 * 14).detect(series(24 * 42))
    assert quiet == []
    hits = SeriesDetector(interval_seconds=3600, warmup=24 * 14).detect(series(24 * 42, spike_at=24 * 30 + 3))
    assert hits == [24 * 30 + 3]


def test_baselines_run() -> None:
    values = [v for _, v in series(24 * 20, spike_at=400)]
    assert 400 in RollingPeak().detect(values)
    assert isinstance(HalfSpaceTreesDetector().detect(values), list)


NAB = SHARED_DATA / "nab_dev"


@pytest.mark.skipif(not NAB.exists(), reason="shared data not present")
def test_eval_detect_on_real_series(tmp_path: object) -> None:
    import json
    import shutil
    from pathlib import Path

    root = Path(str(tmp_path))
    labels = json.loads((NAB / "labels" / "combined_windows.json").read_text())
    keep = ["realTraffic/speed_7578.csv", "realKnownCause/nyc_taxi.csv"]
    for k in keep:
        (root / "data" / k).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(NAB / "data" / k, root / "data" / k)
    (root / "labels.json").write_text(json.dumps({k: labels[k] for k in keep}))
    out = eval_detect(root / "data", root / "labels.json")
    assert out["files"] == 2 and set(out["scores"]) == set(PROFILES)
    assert out["scores"]["standard"]["repmon"] > out["scores"]["standard"]["rolling_mean_3sigma"]
    assert out["per_file"]["realKnownCause/nyc_taxi.csv"]["windows"] == 5
