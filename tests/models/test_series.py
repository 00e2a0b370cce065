"""Series detectors on synthetic series, and ``repmon eval detect`` on real NAB files."""

from __future__ import annotations

import json
import math
import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from models.nab import PROFILES
from models.series import HalfSpaceTreesDetector, RollingPeak, SeriesDetector
from tools.eval_detect import detect_command, eval_detect

from ..conftest import SHARED_DATA

T0 = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday


def daily(hours: int, seed: int = 0, noise: float = 2.0) -> list[tuple[datetime, float]]:
    """Hourly metric: busy days (x3 from 8h to 18h), quieter weekends, gaussian noise."""
    rng = random.Random(seed)
    out = []
    for i in range(hours):
        t = T0 + timedelta(hours=i)
        level = 100.0 + 200.0 * (8 <= t.hour <= 18) - 40.0 * (t.weekday() >= 5)
        out.append((t, level + rng.gauss(0, noise)))
    return out


Series = list[tuple[datetime, float]]


def fired(det: SeriesDetector | RollingPeak | HalfSpaceTreesDetector, series: Series) -> list[int]:
    index = {t: i for i, (t, _) in enumerate(series)}
    return [index[t] for t in det.detect(series)]


def test_daily_pattern_does_not_fire() -> None:
    assert fired(SeriesDetector(warmup=48), daily(24 * 42)) == []
    assert fired(SeriesDetector(warmup=48), daily(24 * 42, seed=1, noise=10.0)) == []


def test_injected_spike_fires_once_at_its_point() -> None:
    series = daily(24 * 42)
    at = 24 * 30 + 3  # 3 am on a Saturday night: a spike of 60 where 60 is within the day's range
    series[at] = (series[at][0], series[at][1] + 60.0)
    assert fired(SeriesDetector(warmup=48), series) == [at]
    # without the seasonal baseline the daily swing hides it
    assert fired(SeriesDetector(warmup=48, season="none"), series) == []


def test_drop_fires_too() -> None:
    series = daily(24 * 42)
    at = 24 * 31 + 12  # noon: 300 -> 150
    series[at] = (series[at][0], series[at][1] - 150.0)
    assert fired(SeriesDetector(warmup=48), series) == [at]
    assert fired(SeriesDetector(warmup=48, two_sided=False), series) == []


def test_refractory_one_anomaly_one_detection() -> None:
    series = daily(24 * 42)
    for at in (24 * 30 + 3, 24 * 30 + 13):  # two spikes 10 points apart
        series[at] = (series[at][0], series[at][1] + 80.0)
    assert fired(SeriesDetector(warmup=48, refractory=50), series) == [24 * 30 + 3]
    assert fired(SeriesDetector(warmup=48, refractory=5), series) == [24 * 30 + 3, 24 * 30 + 13]


def test_level_shift_is_reported_once_then_learned() -> None:
    series = daily(24 * 42)
    shift = 24 * 28
    series = [(t, x + (150.0 if i >= shift else 0.0)) for i, (t, x) in enumerate(series)]
    hits = fired(SeriesDetector(warmup=48), series)
    assert hits[0] == shift
    assert len(hits) <= 3 and all(h < shift + 24 * 4 for h in hits)


def poisson(rng: random.Random, lam: float) -> int:
    k, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def test_quiet_count_series_needs_minimum_support() -> None:
    rng = random.Random(3)
    series = [(T0 + timedelta(minutes=5 * i), float(poisson(rng, 0.5))) for i in range(3000)]
    quiet = list(series)
    quiet[2000] = (quiet[2000][0], 8.0)  # 8 mentions where 0.5 are usual: below min_count 10
    assert fired(SeriesDetector(warmup=300), quiet) == []
    loud = list(series)
    loud[2000] = (loud[2000][0], 40.0)
    assert fired(SeriesDetector(warmup=300), loud) == [2000]


def test_missing_values_are_skipped() -> None:
    series = daily(24 * 42)
    series[24 * 30] = (series[24 * 30][0], math.nan)
    series[24 * 31] = (series[24 * 31][0], math.inf)
    for det in (SeriesDetector(warmup=48), RollingPeak(), HalfSpaceTreesDetector(warmup=48)):
        hits = fired(det, series)
        assert 24 * 30 not in hits and 24 * 31 not in hits
    assert fired(SeriesDetector(warmup=48), series) == []


def test_from_settings_uses_the_stream_thresholds() -> None:
    from infra.settings import DetectSettings

    det = SeriesDetector.from_settings(DetectSettings(z_threshold=4.0, min_volume=3), warmup=10)
    assert (det.threshold, det.min_count, det.warmup) == (4.0, 3.0, 10)


@pytest.mark.parametrize("drift", ["adwin", "page_hinkley"])
def test_drift_options_run(drift: str) -> None:
    series = daily(24 * 42)
    shift = 24 * 28
    series = [(t, x + (150.0 if i >= shift else 0.0)) for i, (t, x) in enumerate(series)]
    hits = fired(SeriesDetector(warmup=48, drift_detector=drift, drift_fires=True), series)  # type: ignore[arg-type]
    assert shift in hits


def test_rolling_peak_is_huginns() -> None:
    # Huginn's own spec: 15 is a peak; 50 comes too soon after it (2-day spacing)
    vals = [5, 6, 4, 5, 4, 5, 15, 11, 8, 50, 4, 5]
    series = [(T0 + timedelta(hours=i), float(v)) for i, v in enumerate(vals)]
    assert fired(RollingPeak(), series) == [6]
    assert fired(RollingPeak(spacing=None), series) == [6, 9]
    assert fired(RollingPeak(window=3, spacing=None, min_points=3), series) == [6, 9]
    drop = [(T0 + timedelta(hours=i), v) for i, v in enumerate([5.0, 6, 4, 5, 4, 5, -20])]
    assert fired(RollingPeak(), drop) == [] and fired(RollingPeak(two_sided=True), drop) == [6]


def test_rolling_peak_window_in_time() -> None:
    series = daily(24 * 30, noise=2.0)
    series[24 * 20 + 3] = (series[24 * 20 + 3][0], 1000.0)
    assert 24 * 20 + 3 in fired(RollingPeak(), series)


def test_half_space_trees_baseline_runs() -> None:
    rng = random.Random(1)
    series = [(T0 + timedelta(minutes=5 * i), 50.0 + rng.gauss(0, 1)) for i in range(3000)]
    hits = fired(HalfSpaceTreesDetector(warmup=500), series)
    every = fired(HalfSpaceTreesDetector(warmup=500, edge=False), series)
    assert hits and set(hits) <= set(every)  # fires on crossings only
    assert min(hits) >= 500  # nothing during the warmup
    assert isinstance(HalfSpaceTreesDetector(threshold=0.95).detect(series[:300]), list)


NAB = SHARED_DATA / "nab_dev"
KEEP = ["realTraffic/speed_7578.csv", "realKnownCause/ec2_request_latency_system_failure.csv"]


@pytest.fixture
def two_nab_files(tmp_path: Path) -> tuple[Path, Path]:
    labels = json.loads((NAB / "labels" / "combined_windows.json").read_text())
    for k in KEEP:
        (tmp_path / "data" / k).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(NAB / "data" / k, tmp_path / "data" / k)
    (tmp_path / "labels.json").write_text(json.dumps({k: labels[k] for k in KEEP}))
    return tmp_path / "data", tmp_path / "labels.json"


@pytest.mark.shared_data
def test_eval_detect_on_real_nab_files(two_nab_files: tuple[Path, Path]) -> None:
    data, labels = two_nab_files
    out = eval_detect(data, labels)
    assert out["files"] == 2 and out["profile"] == "standard" and out["windows"] == 7
    detectors = {"repmon", "rolling_3sigma", "river_hst", "null", "perfect"}
    assert set(out["score"]) == set(out["scores"]) == set(out["totals"]) == detectors
    for d in detectors:
        assert set(out["scores"][d]) == set(PROFILES)
        assert out["score"][d] == out["scores"][d]["standard"]
    assert all(out["scores"]["null"][p] == 0.0 for p in PROFILES)
    assert all(out["scores"]["perfect"][p] == 100.0 for p in PROFILES)
    assert set(out["per_file"]) == set(KEEP)
    speed = out["per_file"]["realTraffic/speed_7578.csv"]
    assert speed["points"] == 1127 and speed["windows"] == 4
    for d in detectors:
        row = speed["detectors"][d]
        assert row["tp"] + row["fn"] == 4 and set(row["raw"]) == set(PROFILES)
        assert row["detections"] >= row["tp"] + row["fp"]
    assert out["totals"]["null"] == {"raw": -7.0, "tp": 0, "fp": 0, "fn": 7, "detections": 0, "fp_per_series_30d": 0.0}
    assert out["unlabelled"] == [] and out["missing"] == []
    low_fn = eval_detect(data, labels, profile="reward_low_FN")
    assert low_fn["profile"] == "reward_low_FN_rate" and low_fn["totals"]["null"]["raw"] == -14.0


@pytest.mark.shared_data
def test_detect_command_prints_json_and_table(two_nab_files: tuple[Path, Path]) -> None:
    data, labels = two_nab_files
    app = typer.Typer()
    app.command()(detect_command)
    res = CliRunner().invoke(app, ["--series", str(data), "--labels", str(labels), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["scores"]["null"]["standard"] == 0.0
    res = CliRunner().invoke(app, ["--series", str(data), "--labels", str(labels), "--profile", "reward_low_FP_rate"])
    assert res.exit_code == 0, res.output
    assert "repmon" in res.output and "river_hst" in res.output


def _synthetic_labelled(tmp: Path) -> tuple[Path, Path]:
    """Two 5-minute count series with a day/night cycle and one labelled burst each."""
    labels = {}
    for k, name in enumerate(("a/one.csv", "b/two.csv")):
        rng = random.Random(k)
        path = tmp / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        rows, burst = [], 4000 + 500 * k
        for i in range(6000):
            t = T0 + timedelta(minutes=5 * i)
            lam = 20.0 * (2.0 if 8 <= t.hour <= 20 else 0.5) * (8.0 if burst <= i < burst + 12 else 1.0)
            rows.append(f"{t:%Y-%m-%d %H:%M:%S},{poisson(rng, lam)}")
        path.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
        a, b = T0 + timedelta(minutes=5 * (burst - 100)), T0 + timedelta(minutes=5 * (burst + 200))
        labels[name] = [[f"{a:%Y-%m-%d %H:%M:%S}", f"{b:%Y-%m-%d %H:%M:%S}"]]
    (tmp / "labels.json").write_text(json.dumps(labels))
    return tmp / "data", tmp / "labels.json"


def test_eval_scores_the_workers_detector_with_holdout_groups(tmp_path: Path) -> None:
    from infra.settings import DetectSettings
    from models.detect import EntityDetector
    from models.series import EntityVolumeDetector, how_of

    data, labels = _synthetic_labelled(tmp_path)
    out = eval_detect(data, labels, holdout=["b/"], series_detector=True)
    assert set(out["scores"]) == {"repmon", "rolling_3sigma", "river_hst", "repmon_series", "null", "perfect"}
    assert out["groups"]["tune"]["files"] == ["a/one.csv"] and out["groups"]["holdout"]["files"] == ["b/two.csv"]
    for g in out["groups"].values():
        assert set(g["scores"]["repmon"]) == set(PROFILES)
    assert out["totals"]["repmon"]["tp"] == 2 and out["totals"]["repmon"]["fp"] == 0
    assert all(out["scores"]["repmon"][p] > 80 for p in PROFILES)

    # "repmon" is the worker's EntityDetector fed {"n": count} buckets: its detections are the
    # onsets of volume verdicts of a hand-fed EntityDetector
    from tools.eval_detect import read_series

    series = read_series(data / "a" / "one.csv")
    warm = 900
    got = EntityVolumeDetector(warmup=warm, early=False).detect(series)
    det = EntityDetector(DetectSettings(warmup_buckets=warm), bucket_seconds=300)
    want = [t for t, x in series if any(v.key == "volume" and v.onset for v in det.update({"n": x}, how_of(t)))]
    assert got == want and got


TWEETS = SHARED_DATA / "nab_tweets_dev"


@pytest.mark.shared_data
def test_eval_detect_on_real_tweet_volumes(tmp_path: Path) -> None:
    """Two NAB realTweets series (of the three the detector was tuned on): the worker's detector
    beats never firing under every profile, with one detection per episode at most a few a week."""
    keep = ["realTweets/Twitter_volume_CRM.csv", "realTweets/Twitter_volume_FB.csv"]
    labels = json.loads((TWEETS / "labels" / "combined_windows.json").read_text())
    for k in keep:
        (tmp_path / "data" / k).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(TWEETS / "data" / k, tmp_path / "data" / k)
    (tmp_path / "labels.json").write_text(json.dumps({k: labels[k] for k in keep}))
    out = eval_detect(tmp_path / "data", tmp_path / "labels.json", holdout=["CRM"])
    assert out["files"] == 2 and out["windows"] == 5
    assert all(out["scores"]["repmon"][p] > 0 for p in PROFILES), out["scores"]["repmon"]
    weeks = sum(r["points"] for r in out["per_file"].values()) * 300 / (7 * 86400)
    assert out["totals"]["repmon"]["detections"] <= 3 * weeks
    assert out["groups"]["holdout"]["files"] == ["realTweets/Twitter_volume_CRM.csv"]


def test_eval_reports_the_alert_budget(tmp_path: Path) -> None:
    data, labels = _synthetic_labelled(tmp_path)
    out = eval_detect(data, labels)
    days = sum(r["scored_days"] for r in out["per_file"].values())
    assert 30 < days < 45  # two series of ~17.6 scored days each (6000 5-minute rows less probation)
    for d in ("repmon", "rolling_3sigma", "river_hst"):
        assert out["totals"][d]["fp_per_series_30d"] == round(out["totals"][d]["fp"] / (days / 30.0), 3)
    assert out["totals"]["null"]["fp_per_series_30d"] == 0.0


def test_eval_rotates_one_series_out_at_a_time(tmp_path: Path) -> None:
    """``rotate``: one fold per file, each scored on that file alone and tuned on the others, from
    the same run; the mean is the mean of the held-out scores (not the pooled score)."""
    data, labels = _synthetic_labelled(tmp_path)
    out = eval_detect(data, labels, rotate=True)
    assert [f["holdout"] for f in out["folds"]] == ["a/one.csv", "b/two.csv"]
    for f in out["folds"]:
        assert f["held"]["files"] == [f["holdout"]] and f["holdout"] not in f["tune"]["files"]
        assert f["tune"]["files"] and set(f["tune"]["files"]) | {f["holdout"]} == set(out["per_file"])
    # a fold's held-out group is the same file scored alone: the holdout group of --holdout
    alone = eval_detect(data, labels, holdout=["b/"])["groups"]["holdout"]["scores"]
    assert out["folds"][1]["held"]["scores"] == alone
    for d in ("repmon", "river_hst", "rolling_3sigma", "null", "perfect"):
        for p in PROFILES:
            held = [f["held"]["scores"][d][p] for f in out["folds"]]
            assert out["folds_mean"][d][p] == round(sum(held) / len(held), 2)
    assert out["folds_mean"]["perfect"]["standard"] == 100.0 and out["folds_mean"]["null"]["standard"] == 0.0
    assert eval_detect(data, labels)["folds"] == []
