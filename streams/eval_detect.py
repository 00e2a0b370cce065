"""``repmon eval detect``: the detectors on labelled series, scored the NAB way.

Every ``*.csv`` (``timestamp,value``) under ``--series`` is run through repmon's series detector
and the two baselines in one pass; labels are NAB's windows file (``combined_windows.json``:
``{"dir/file.csv": [[start, end], ...]}``), keys relative to ``--series``.
"""

from __future__ import annotations

import csv
import itertools
import json
import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from models.nab import PROFILES, FileScore, normalised, score_file
from models.series import HalfSpaceTreesDetector, RollingPeak, SeriesDetector

__all__ = ["detect_command", "eval_detect"]

DETECTORS = ("repmon", "rolling_mean_3sigma", "river_hst")


def _read(path: Path) -> list[tuple[datetime, float]]:
    with path.open(newline="") as f:
        return [(datetime.fromisoformat(r["timestamp"]), float(r["value"])) for r in csv.DictReader(f)]


def _windows(series: list[tuple[datetime, float]], spans: list[list[str]]) -> list[tuple[int, int]]:
    out = []
    for a, b in spans:
        ta, tb = datetime.fromisoformat(a), datetime.fromisoformat(b)
        idx = [i for i, (t, _) in enumerate(series) if ta <= t <= tb]
        if idx:
            out.append((idx[0], idx[-1]))
    return out


def run_detectors(series: list[tuple[datetime, float]]) -> dict[str, list[int]]:
    values = [v for _, v in series]
    gaps = [(b[0] - a[0]).total_seconds() for a, b in itertools.pairwise(series)]
    interval = statistics.median(gaps) if gaps else 60.0
    warmup = int(0.15 * len(series))  # NAB's probationary period: learn, never score
    return {
        "repmon": SeriesDetector(interval_seconds=interval, warmup=warmup).detect(series),
        "rolling_mean_3sigma": RollingPeak().detect(values),
        "river_hst": HalfSpaceTreesDetector().detect(values),
    }


def eval_detect(series_dir: Path, labels_file: Path) -> dict[str, Any]:
    labels: dict[str, list[list[str]]] = json.loads(labels_file.read_text())
    files = sorted(p for p in series_dir.rglob("*.csv"))
    if not files:
        raise ValueError(f"no *.csv series under {series_dir}")
    per_file: dict[str, Any] = {}
    scores: dict[str, dict[str, list[FileScore]]] = {p: {d: [] for d in DETECTORS} for p in PROFILES}
    t0 = time.perf_counter()
    for path in files:
        key = path.relative_to(series_dir).as_posix()
        if key not in labels:
            continue
        series = _read(path)
        wins = _windows(series, labels[key])
        dets = run_detectors(series)
        row: dict[str, Any] = {"points": len(series), "windows": len(wins)}
        for d, idx in dets.items():
            fs = {p: score_file(len(series), wins, idx, prof) for p, prof in PROFILES.items()}
            for p, s in fs.items():
                scores[p][d].append(s)
            st = fs["standard"]
            row[d] = {"detections": len(idx), "tp": st.tp, "fp": st.fp, "fn": st.fn, "raw": round(st.raw, 3)}
        per_file[key] = row
    result: dict[str, Any] = {
        "files": len(per_file),
        "scores": {p: {d: normalised(scores[p][d]) for d in DETECTORS} for p in PROFILES},
        "per_file": per_file,
        "seconds": round(time.perf_counter() - t0, 1),
        "method": "NAB (Lavin & Ahmad 2015): windows, scaled sigmoid, 15% probation, normalised 0 (null) .. 100",
    }
    return result


def detect_command(
    series: Annotated[Path, typer.Option("--series", exists=True, help="Directory of timestamp,value CSVs.")],
    labels: Annotated[Path, typer.Option("--labels", exists=True, help="NAB windows JSON.")],
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """NAB-style scores of repmon's detector and two baselines on labelled series."""
    result = eval_detect(series, labels)
    if json_out:
        typer.echo(json.dumps(result))
        return
    tbl = Table(title=f"NAB scores on {result['files']} series ({result['seconds']} s)")
    tbl.add_column("detector")
    for p in PROFILES:
        tbl.add_column(p)
    for d in DETECTORS:
        tbl.add_row(d, *(str(result["scores"][p][d]) for p in PROFILES))
    Console().print(tbl)
