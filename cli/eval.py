"""``repmon eval``: measure the models on labelled files (CSV, TSV, JSONL; .gz ok)."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from infra.settings import ConfigError, load_settings

__all__ = ["eval_app", "read_rows"]

eval_app = typer.Typer(no_args_is_help=True, help="Evaluate the models on labelled data.")


def read_rows(path: Path, fmt: str = "auto", header: bool = True) -> Iterator[dict[str, Any]]:
    """Rows of a CSV/TSV/JSONL file as dicts (columns by name, or by index without a header)."""
    name = path.name.removesuffix(".gz")
    if fmt == "auto":
        fmt = "jsonl" if name.endswith((".jsonl", ".json")) else ("tsv" if name.endswith((".tsv", ".txt")) else "csv")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="") as f:
        if fmt == "jsonl":
            for line in f:
                if line.strip():
                    yield orjson.loads(line)
            return
        delim = "\t" if fmt == "tsv" else ","
        if header:
            yield from csv.DictReader(f, delimiter=delim)
        else:
            for row in csv.reader(f, delimiter=delim, quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL):
                yield {str(i): v for i, v in enumerate(row)}


def _label_map(spec: str | None) -> dict[str, str]:
    if not spec:
        return {}
    out = {}
    for part in spec.split(","):
        k, _, v = part.partition("=")
        if v not in ("negative", "neutral", "positive"):
            raise typer.BadParameter(f"--map {part!r}: the label must be negative, neutral or positive")
        out[k.strip()] = v
    return out


def _norm(value: Any, mapping: dict[str, str]) -> str | None:
    s = str(value).strip()
    if s in mapping:
        return mapping[s]
    try:
        f = float(s)
        if f.is_integer() and str(int(f)) in mapping:
            return mapping[str(int(f))]
    except ValueError:
        pass
    s = s.lower()
    return s if s in ("negative", "neutral", "positive") else None


def _print(result: dict[str, Any], json_out: bool, title: str, keys: list[str]) -> None:
    if json_out:
        typer.echo(json.dumps(result))
        return
    tbl = Table(title=title)
    tbl.add_column("model")
    for k in keys:
        tbl.add_column(k)
    for name, val in result.items():
        if isinstance(val, dict) and all(k in val for k in keys):
            tbl.add_row(name, *(str(val[k]) for k in keys))
    Console().print(tbl)
    Console().print({k: v for k, v in result.items() if not isinstance(v, dict)})


@eval_app.command("sentiment")
def sentiment(
    data: Annotated[Path, typer.Option("--data", exists=True, help="Labelled file.")],
    text_col: Annotated[str, typer.Option("--text-col", help="Text column (name, or index with --no-header).")],
    label_col: Annotated[str, typer.Option("--label-col", help="Label column.")],
    label_map: Annotated[
        str | None, typer.Option("--map", help='Label values to classes, e.g. "0=negative,1=positive".')
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="auto, csv, tsv or jsonl.")] = "auto",
    header: Annotated[bool, typer.Option("--header/--no-header")] = True,
    limit: Annotated[int | None, typer.Option(help="First N rows only.")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Prequential accuracy and macro-F1: online model vs lexicon alone vs naive Bayes."""
    from models.evaluate import prequential_sentiment

    mapping = _label_map(label_map)
    rows: list[tuple[str, str]] = []
    skipped = 0
    for row in read_rows(data, fmt, header):
        text, label = row.get(text_col), _norm(row.get(label_col, ""), mapping)
        if not text or label is None:
            skipped += 1
            continue
        rows.append((str(text), label))
        if limit and len(rows) >= limit:
            break
    if not rows:
        raise typer.BadParameter("no labelled rows: check --text-col, --label-col and --map")
    result = prequential_sentiment(rows)
    result["skipped_rows"] = skipped
    result["data"] = data.name
    _print(result, json_out, f"sentiment on {data.name}", ["accuracy", "macro_f1"])


@eval_app.command("enrich")
def enrich(
    data: Annotated[Path, typer.Option("--data", exists=True, help="File with text and a true entity.")],
    text_col: Annotated[str, typer.Option("--text-col")] = "text",
    truth_col: Annotated[str, typer.Option("--truth-col")] = "airline",
    config: Annotated[Path | None, typer.Option("--config", "-c")] = None,
    profile: Annotated[str, typer.Option(help="fast or accurate.")] = "fast",
    truth_map: Annotated[
        str | None, typer.Option("--truth-map", help='Rename truth values first, e.g. "Delta=JetBlue".')
    ] = None,
    limit: Annotated[int | None, typer.Option()] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Precision/recall of brand attribution against a truth column (names or aliases)."""
    from models.evaluate import brand_attribution
    from models.nlp import Enricher

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    names: dict[str, str] = {}
    for e in settings.entities:
        for n in [e.name, *e.aliases]:
            names[n.strip().lower()] = e.key
    rename = {}
    for part in (truth_map or "").split(","):
        if "=" in part:
            a, _, b = part.partition("=")
            rename[a.strip().lower()] = b.strip().lower()
    rows, unknown = [], 0
    for row in read_rows(data):
        value = str(row.get(truth_col, "")).strip().lower()
        truth = names.get(rename.get(value, value))
        if truth is None:
            unknown += 1
            continue
        rows.append((str(row.get(text_col, "")), truth))
        if limit and len(rows) >= limit:
            break
    enricher = Enricher(settings.entities, profile=profile, model=settings.nlp.model)  # type: ignore[arg-type]
    result = brand_attribution(rows, enricher)
    result["rows_with_unknown_truth"] = unknown
    if json_out:
        typer.echo(json.dumps(result))
        return
    tbl = Table(title=f"brand attribution on {data.name} ({profile})")
    for col in ("entity", "precision", "recall", "f1", "n"):
        tbl.add_column(col)
    tbl.add_row("ALL (micro)", str(result["precision"]), str(result["recall"]), str(result["f1"]), str(result["n"]))
    for k, v in result["per_entity"].items():
        tbl.add_row(k, str(v["precision"]), str(v["recall"]), str(v["f1"]), str(v["n"]))
    Console().print(tbl)


def _register_detect() -> None:
    from tools.eval_detect import detect_command

    eval_app.command("detect")(detect_command)


_register_detect()
