"""``repmon eval detect``: the worker's detector and two baselines on labelled series, scored
the NAB way (:mod:`models.nab`, Lavin & Ahmad 2015), all three NAB profiles in one run.

Every ``*.csv`` (``timestamp,value``; naive timestamps are UTC) under ``--series``, recursively, is
run through three detectors in one pass:

- ``repmon``: the code the worker runs, :class:`models.detect.EntityDetector` with the stream's
  settings (:class:`infra.settings.DetectSettings`, loaded from ``--config`` and the environment
  as the worker loads them: ``detect.holidays`` included), fed one bucket ``{"n": count}`` per row with
  its hour of the week, as :class:`streams.detection.DetectionEngine` feeds it, early firing on the
  filling bucket included (:class:`models.series.EntityVolumeDetector`); a detection is the onset
  of a volume episode;
- ``rolling_3sigma``: :class:`models.series.RollingPeak`, Huginn's rolling mean + 3 sigma peaks;
- ``river_hst``: :class:`models.series.HalfSpaceTreesDetector`, River HalfSpaceTrees at defaults.

``--series-detector`` adds ``repmon_series``, the eval-only :class:`models.series.SeriesDetector`
(two-sided, for gauges), for comparison only: it is not what the worker runs.

``--holdout PATTERN`` (repeatable) reports the files whose path contains a pattern as the
``holdout`` group and the others as ``tune`` (``groups`` in the JSON): tune on one, report both.
``--rotate`` reports every leave-one-series-out fold from the same run (``folds`` in the JSON:
each file held out in turn, the others as its tuning group) and the mean of the held-out scores,
for every detector: a change judged on four series is then scored on the fifth, five times over,
so a gain that only one series carries shows up as one good fold, not as a better mean.

Every detector is told the NAB probationary period (the first 15% of a file, at most 750 rows) as
its warmup: NAB ignores detections there anyway. No threshold is tuned on the labels. Two
reference rows frame the scale: ``null`` (never fires, 0 by definition) and ``perfect`` (one
detection at the start of every window, 100).

``--labels`` is a NAB labels file whose keys are paths relative to ``--series``:
``combined_windows.json`` (``{"dir/file.csv": [[start, end], ...]}``) or ``combined_labels.json``
(anomaly timestamps; windows are then built as NAB's labeler does).
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from infra.settings import ConfigError, DetectSettings, load_settings
from models.nab import (
    PROFILES,
    FileScore,
    Window,
    get_profile,
    indices_of,
    normalised_score,
    parse_timestamp,
    perfect_detections,
    probationary_length,
    score_file,
    windows_for,
)
from models.series import EntityVolumeDetector, HalfSpaceTreesDetector, RollingPeak, SeriesDetector, StreamDetector

__all__ = ["DETECTORS", "detect_command", "eval_detect", "read_series"]

Series = list[tuple[Any, float]]

DETECTORS: dict[str, Callable[[int], StreamDetector]] = {
    "repmon": lambda warmup: EntityVolumeDetector(warmup=warmup),
    "rolling_3sigma": lambda warmup: RollingPeak(warmup=warmup),
    "river_hst": lambda warmup: HalfSpaceTreesDetector(warmup=warmup),
}
"""Detector factories, called with the warmup (the file's probationary length) for each file."""

SERIES: dict[str, Callable[[int], StreamDetector]] = {
    "repmon_series": lambda warmup: SeriesDetector.from_settings(DetectSettings(), warmup=warmup),
}
"""``--series-detector``: the eval-only SeriesDetector too (not the worker's detector)."""

REFERENCES = ("null", "perfect")

DESCRIPTIONS = {
    "repmon": "the worker's EntityDetector on {'n': count} buckets (log-seasonal robust spike + CUSUM, "
    "early firing), onsets of volume episodes",
    "repmon_series": "eval-only SeriesDetector: seasonal EW baseline, z >= 5 two-sided, refractory 50 points",
    "rolling_3sigma": "Huginn PeakDetector: mean + 3 std of the last 14 days, peaks 2 days apart",
    "river_hst": "MinMaxScaler | HalfSpaceTrees (defaults), QuantileFilter q=0.999, fires on crossing",
    "null": "never fires (NAB's null detector: score 0)",
    "perfect": "one detection at the first row of every window (score 100)",
}


def read_series(path: Path) -> Series:
    """``(timestamp, value)`` rows of a ``timestamp,value`` CSV, sorted by time; rows without a valid
    timestamp or a finite value are skipped."""
    rows: Series = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        for row in csv.DictReader(f):
            try:
                ts, value = parse_timestamp(row["timestamp"]), float(row["value"])
            except (KeyError, TypeError, ValueError):
                continue
            if math.isfinite(value):
                rows.append((ts, value))
    rows.sort(key=lambda r: r[0])
    return rows


def _label_key(rel: str, labels: dict[str, Any]) -> str | None:
    if rel in labels:
        return rel
    # --series may be a parent of the labelled tree (e.g. nab_dev instead of nab_dev/data)
    return next((k for k in labels if rel.endswith("/" + k)), None)


def eval_detect(
    series_dir: Path,
    labels_file: Path,
    profile: str = "standard",
    *,
    series_detector: bool = False,
    holdout: Sequence[str] = (),
    settings: DetectSettings | None = None,
    rotate: bool = False,
) -> dict[str, Any]:
    """Run the detectors on every labelled CSV under ``series_dir`` and score them the NAB way.

    Returns a JSON-ready dict: ``score`` (normalised NAB score per detector under ``profile``),
    ``scores`` (per detector, every profile), ``totals`` (raw score, TP/FP/FN windows and
    detections per detector, under ``profile``), ``per_file`` (points, windows, and per detector
    its detections, TP/FP/FN and raw score for every profile), ``seconds`` (per detector), plus
    ``unlabelled`` CSVs and labelled ``missing`` files. With ``holdout`` patterns, ``groups``
    holds the same scores for the ``tune`` and ``holdout`` files separately. ``settings``: the
    worker detector's settings (default: :class:`DetectSettings` defaults). With ``rotate``,
    ``folds`` holds one entry per file (held out: that file; tune: the others) and ``folds_mean``
    the mean held-out score per detector and profile.
    """
    prof = get_profile(profile)
    labels: dict[str, Any] = json.loads(labels_file.read_text())
    files = sorted(series_dir.rglob("*.csv"))
    if not files:
        raise ValueError(f"no *.csv series under {series_dir}")
    runs = {**DETECTORS, **(SERIES if series_detector else {})}
    if settings is not None:
        cfg = settings
        runs["repmon"] = lambda warmup: EntityVolumeDetector(cfg, warmup=warmup)
    names = [*runs, *REFERENCES]
    scores: dict[str, dict[str, list[FileScore]]] = {d: {p: [] for p in PROFILES} for d in names}
    seconds = dict.fromkeys(runs, 0.0)
    per_file: dict[str, Any] = {}
    unlabelled: list[str] = []
    seen_keys: set[str] = set()
    t_all = time.perf_counter()
    for path in files:
        rel = path.relative_to(series_dir).as_posix()
        key = _label_key(rel, labels)
        if key is None:
            unlabelled.append(rel)
            continue
        seen_keys.add(key)
        series = read_series(path)
        if not series:
            unlabelled.append(rel)
            continue
        ts = [t for t, _ in series]
        n = len(series)
        windows: list[Window] = windows_for(ts, labels[key])
        warmup = probationary_length(n)
        detections: dict[str, list[int]] = {}
        for name, make in runs.items():
            t0 = time.perf_counter()
            detections[name] = indices_of(ts, make(warmup).detect(series))
            seconds[name] += time.perf_counter() - t0
        detections["null"] = []
        detections["perfect"] = perfect_detections(windows)
        days = max((ts[-1] - ts[probationary_length(n)]).total_seconds() / 86400.0, 1e-9)
        row: dict[str, Any] = {"points": n, "windows": len(windows), "scored_days": round(days, 2), "detectors": {}}
        for name, idx in detections.items():
            fs = {p: score_file(n, windows, idx, pr) for p, pr in PROFILES.items()}
            for p, s in fs.items():
                scores[name][p].append(s)
            sel = fs[prof.name]
            row["detectors"][name] = {
                "detections": len(idx),
                "tp": sel.tp,
                "fp": sel.fp,
                "fn": sel.fn,
                "raw": {p: round(s.raw, 4) for p, s in fs.items()},
            }
        row["windows"] = scores["null"][prof.name][-1].windows
        per_file[key] = row
    if not per_file:
        raise ValueError(f"none of the CSVs under {series_dir} has labels in {labels_file}")

    def budget(name: str, keys: Sequence[str]) -> float:
        """False detections per series per 30 days outside the labelled windows (alert budget)."""
        days = sum(per_file[k]["scored_days"] for k in keys)
        fp = sum(per_file[k]["detectors"][name]["fp"] for k in keys)
        return round(fp / max(days / 30.0, 1e-9), 3)

    def total(name: str) -> dict[str, Any]:
        fs = scores[name][prof.name]
        return {
            "raw": round(sum(f.raw for f in fs), 4),
            "tp": sum(f.tp for f in fs),
            "fp": sum(f.fp for f in fs),
            "fn": sum(f.fn for f in fs),
            "detections": sum(r["detectors"][name]["detections"] for r in per_file.values()),
            "fp_per_series_30d": budget(name, list(per_file)),
        }

    keys = list(per_file)

    def group(sel_idx: list[int]) -> dict[str, Any]:
        return {
            "files": [keys[i] for i in sel_idx],
            "windows": sum(per_file[keys[i]]["windows"] for i in sel_idx),
            "scores": {
                d: {p: round(normalised_score([scores[d][p][i] for i in sel_idx]), 2) for p in PROFILES} for d in names
            },
            "fp": {d: sum(scores[d][prof.name][i].fp for i in sel_idx) for d in names},
            "fp_per_series_30d": {d: budget(d, [keys[i] for i in sel_idx]) for d in names},
        }

    groups: dict[str, Any] = {}
    if holdout:
        for gname, pick in (("tune", False), ("holdout", True)):
            groups[gname] = group([i for i, k in enumerate(keys) if any(p in k for p in holdout) == pick])
    folds: list[dict[str, Any]] = []
    folds_mean: dict[str, dict[str, float]] = {}
    if rotate and len(keys) > 1:
        for i, k in enumerate(keys):
            folds.append({"holdout": k, "tune": group([j for j in range(len(keys)) if j != i]), "held": group([i])})
        folds_mean = {
            d: {p: round(sum(f["held"]["scores"][d][p] for f in folds) / len(folds), 2) for p in PROFILES}
            for d in names
        }

    return {
        "series": str(series_dir),
        "labels": str(labels_file),
        "profile": prof.name,
        "files": len(per_file),
        "points": sum(r["points"] for r in per_file.values()),
        "windows": sum(r["windows"] for r in per_file.values()),
        "score": {d: round(normalised_score(scores[d][prof.name]), 2) for d in names},
        "scores": {d: {p: round(normalised_score(scores[d][p]), 2) for p in PROFILES} for d in names},
        "totals": {d: total(d) for d in names},
        "detectors": {d: DESCRIPTIONS[d] for d in names},
        "groups": groups,
        "folds": folds,
        "folds_mean": folds_mean,
        "per_file": per_file,
        "seconds": {**{d: round(s, 2) for d, s in seconds.items()}, "total": round(time.perf_counter() - t_all, 2)},
        "unlabelled": unlabelled,
        "missing": sorted(set(labels) - seen_keys),
        "method": (
            "NAB (Lavin & Ahmad 2015): windows from the labels, earliest detection per window scored "
            "A_TP*sigma(y)/sigma(-1), false positives A_FP*sigma(distance after the preceding window), "
            "missed windows -A_FN, first 15% (max 750 rows) of each file not scored; "
            "score = 100*(S - S_null)/(S_perfect - S_null); no threshold tuned on labels"
        ),
    }


_SERIES_OPT = typer.Option(..., "--series", help="Directory of timestamp,value CSVs (searched recursively).")
_LABELS_OPT = typer.Option(..., "--labels", help="NAB labels JSON: combined_windows.json or combined_labels.json.")
_JSON_OPT = typer.Option(False, "--json", help="Print one JSON object.")
_SERIES_DET_OPT = typer.Option(
    False, "--series-detector", help="Also score the eval-only SeriesDetector (not the worker's detector)."
)
_HOLDOUT_OPT = typer.Option(
    [], "--holdout", help="Files whose path contains this are reported as the held-out group (repeatable)."
)
_ROTATE_OPT = typer.Option(
    False, "--rotate", help="Also report every leave-one-series-out fold and the mean held-out score."
)
_CONFIG_OPT = typer.Option(
    None,
    "--config",
    "-c",
    help="Config TOML whose [detect] the worker's detector runs with (default: $REPMON_CONFIG "
    "or the bundled demo config; REPMON_DETECT__* override it, e.g. REPMON_DETECT__HOLIDAYS='[\"US\"]').",
)


def detect_command(
    series: Path = _SERIES_OPT,
    labels: Path = _LABELS_OPT,
    json_out: bool = _JSON_OPT,
    profile: str = "standard",
    series_detector: bool = _SERIES_DET_OPT,
    holdout: list[str] = _HOLDOUT_OPT,
    rotate: bool = _ROTATE_OPT,
    config: Path | None = _CONFIG_OPT,
) -> None:
    """NAB scores (three profiles) of the worker's detector against a rolling 3-sigma peak detector
    and River HalfSpaceTrees (0 = never fires, 100 = perfect)."""
    if not series.is_dir():
        raise typer.BadParameter(f"{series} is not a directory", param_hint="--series")
    if not labels.is_file():
        raise typer.BadParameter(f"{labels} is not a file", param_hint="--labels")
    try:
        cfg = load_settings(config).detect  # the worker's detect settings, as it would load them
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        result = eval_detect(
            series, labels, profile, series_detector=series_detector, holdout=holdout, settings=cfg, rotate=rotate
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if json_out:
        typer.echo(json.dumps(result))
        return
    sel = result["profile"]
    tbl = Table(
        title=f"NAB scores: {result['files']} series, {result['windows']} windows, {result['seconds']['total']} s",
        caption=f"* = --profile; TP/FP/FN (windows hit, false positives, windows missed) under {sel}; "
        "FP/30d: false detections per series per 30 days (alert budget)",
    )
    tbl.add_column("detector")
    for p in PROFILES:
        short = p.removeprefix("reward_").removesuffix("_rate")
        tbl.add_column(short + ("*" if p == sel else ""), justify="right")
    for col in ("alerts", "TP", "FP", "FN", "FP/30d", "s"):
        tbl.add_column(col, justify="right")
    for d, by_profile in result["scores"].items():
        t = result["totals"][d]
        tbl.add_row(
            d,
            *(f"{by_profile[p]:.1f}" for p in PROFILES),
            str(t["detections"]),
            str(t["tp"]),
            str(t["fp"]),
            str(t["fn"]),
            str(t["fp_per_series_30d"]),
            str(result["seconds"].get(d, "")),
        )
    console = Console()
    console.print(tbl)
    for gname, g in result["groups"].items():
        gt = Table(title=f"{gname}: {len(g['files'])} files, {g['windows']} windows")
        gt.add_column("detector")
        for p in PROFILES:
            gt.add_column(p.removeprefix("reward_").removesuffix("_rate"), justify="right")
        gt.add_column("FP", justify="right")
        gt.add_column("FP/30d", justify="right")
        for d, by_profile in g["scores"].items():
            gt.add_row(d, *(f"{by_profile[p]:.1f}" for p in PROFILES), str(g["fp"][d]), str(g["fp_per_series_30d"][d]))
        console.print(gt)
    if result["folds"]:
        ft = Table(title="leave one series out: held-out score per fold (standard / low_FP / low_FN)")
        ft.add_column("held out")
        dets = list(result["folds_mean"])
        for d in dets:
            ft.add_column(d, justify="right")
        for f in [*result["folds"], None]:
            by = f["held"]["scores"] if f else result["folds_mean"]
            label = Path(f["holdout"]).stem if f else "mean"
            ft.add_row(label, *(" / ".join(f"{by[d][p]:.1f}" for p in PROFILES) for d in dets))
        console.print(ft)
    for d, text in result["detectors"].items():
        console.print(f"[bold]{d}[/bold]: {text}")
    if result["unlabelled"] or result["missing"]:
        missing = len(result["missing"])
        console.print(f"unlabelled CSVs: {len(result['unlabelled'])}; labelled files not found: {missing}")
