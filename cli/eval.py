"""``repmon eval``: measure the models on labelled files (CSV, TSV, JSONL; .gz ok)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
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


def read_rows(
    path: Path, fmt: str = "auto", header: bool = True, encoding: str = "utf-8-sig"
) -> Iterator[dict[str, Any]]:
    """Rows of a CSV/TSV/JSONL file as dicts (columns by name, or by index without a header).

    Decoding is strict: a file that is not in ``encoding`` fails with the byte offset, instead of
    being scored on replacement characters.
    """
    name = path.name.removesuffix(".gz")
    if fmt == "auto":
        fmt = "jsonl" if name.endswith((".jsonl", ".json")) else ("tsv" if name.endswith((".tsv", ".txt")) else "csv")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as raw, io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline="") as f:
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


def _bins(spec: str | None) -> list[float]:
    if not spec:
        return []
    try:
        cuts = [float(x) for x in spec.split(",")]
    except ValueError:
        raise typer.BadParameter(f"--bins {spec!r}: give one or two numbers, e.g. 2.5,3.5") from None
    if len(cuts) not in (1, 2) or cuts != sorted(cuts):
        raise typer.BadParameter(f"--bins {spec!r}: one cut (negative|positive) or two ascending cuts")
    return cuts


def _binned(value: Any, cuts: list[float]) -> str | None:
    """A numeric label in its bin: below the first cut negative; with two cuts, below the second
    neutral; else positive."""
    try:
        f = float(str(value).strip())
    except ValueError:
        return None
    if f < cuts[0]:
        return "negative"
    if len(cuts) == 2 and f < cuts[1]:
        return "neutral"
    return "positive"


PARTS = ("all", "tune", "holdout")


def in_part(text: str, part: str) -> bool:
    """Whether ``text`` is in the ``tune`` or ``holdout`` half (``all``: both).

    The split is a hash of the text, not of its row: the same text is on the same side in every
    file, order and seed, so a choice made on ``tune`` has never seen a ``holdout`` text.

    >>> in_part("x", "all"), in_part("x", "tune") != in_part("x", "holdout")
    (True, True)
    """
    if part == "all":
        return True
    return (zlib.crc32(text.encode("utf-8", "surrogatepass")) % 2 == 0) == (part == "tune")


def _part(part: str) -> str:
    if part not in PARTS:
        raise typer.BadParameter(f"--part must be one of {', '.join(PARTS)}")
    return part


def _read(data: Path, fmt: str, header: bool, encoding: str) -> Iterator[dict[str, Any]]:
    try:
        yield from read_rows(data, fmt, header, encoding)
    except UnicodeDecodeError as exc:
        raise typer.BadParameter(
            f"{data.name} is not {encoding} (byte {exc.start}: {exc.reason}); pass --encoding, e.g. latin-1 or cp1252"
        ) from None


@eval_app.command("sentiment")
def sentiment(
    data: Annotated[Path, typer.Option("--data", exists=True, help="Labelled file.")],
    text_col: Annotated[str, typer.Option("--text-col", help="Text column (name, or index with --no-header).")],
    label_col: Annotated[str, typer.Option("--label-col", help="Label column.")],
    label_map: Annotated[
        str | None, typer.Option("--map", help='Label values to classes, e.g. "0=negative,1=positive".')
    ] = None,
    bins: Annotated[
        str | None,
        typer.Option(help='Numeric labels: "3" (<3 negative, else positive) or "2.5,3.5" (<2.5 neg, <3.5 neu).'),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="auto, csv, tsv or jsonl.")] = "auto",
    header: Annotated[bool, typer.Option("--header/--no-header")] = True,
    encoding: Annotated[str, typer.Option(help="Text encoding of the file (decoded strictly).")] = "utf-8-sig",
    order: Annotated[str, typer.Option(help="shuffle (default, seed printed) or file (keep file order).")] = "shuffle",
    seed: Annotated[int | None, typer.Option(help="Shuffle seed (default: random, printed).")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Settings (entities, nlp).")] = None,
    batch: Annotated[int, typer.Option(help="Events per enrichment batch (the worker's batches).")] = 32,
    lang: Annotated[
        str | None, typer.Option(help="The source's language hint (ISO 639-1), as a connector would set it.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="N rows only: a random sample when shuffling, else the first N.")
    ] = None,
    part: Annotated[
        str, typer.Option(help="all, tune or holdout: a fixed half of the texts (by a hash of each text).")
    ] = "all",
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Prequential accuracy and macro-F1 through the worker's enrichment path (language gate
    included): online model vs lexicon alone vs naive Bayes, overall and per language."""
    import random
    import sys
    from datetime import UTC, datetime

    from contract.records import Mention
    from models.evaluate import label_runs, prequential_sentiment
    from models.sentiment import SentimentResult
    from streams.enrich import EnrichStage

    if order not in ("shuffle", "file"):
        raise typer.BadParameter("--order must be shuffle or file")
    mapping, cuts, part = _label_map(label_map), _bins(bins), _part(part)
    rows: list[tuple[str, str]] = []
    skipped = 0
    for row in _read(data, fmt, header, encoding):
        raw = row.get(label_col, "")
        label = _norm(raw, mapping) if mapping or not cuts else None
        if label is None and cuts:
            label = _binned(raw, cuts)
        text = row.get(text_col)
        if not text or label is None:
            skipped += 1
            continue
        if not in_part(str(text), part):
            continue
        rows.append((str(text), label))
        if limit and order == "file" and len(rows) >= limit:
            break
    if not rows:
        raise typer.BadParameter("no labelled rows: check --text-col, --label-col, --map and --bins")
    runs = label_runs([lab for _, lab in rows])
    sorted_warning = None
    if runs["ratio"] < 0.5:
        sorted_warning = (
            f"labels look sorted in the file ({int(runs['runs'])} runs of equal labels, ~{runs['expected']:.0f} "
            "expected in a random order): file order flatters an online learner"
        )
    if order == "shuffle":
        seed = random.SystemRandom().randrange(2**31) if seed is None else seed
        random.Random(seed).shuffle(rows)
        rows = rows[:limit] if limit else rows  # a sample of the whole file, not its (maybe sorted) head
    if len({lab for _, lab in rows}) < 2:
        sorted_warning = (sorted_warning + "; " if sorted_warning else "") + "only one label class is scored"
    note = f"order: {order}" + (f", seed {seed} (repeat with --seed {seed})" if order == "shuffle" else "")
    print(note, file=sys.stderr)
    if sorted_warning:
        print(f"warning: {sorted_warning}" + ("; shuffled" if order == "shuffle" else ""), file=sys.stderr)
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    # the worker's path: the same stage, a cold model that is never saved
    settings = settings.model_copy(
        update={"sentiment": settings.sentiment.model_copy(update={"checkpoint_path": "/nonexistent/eval.json"})}
    )
    stage = EnrichStage(settings)
    stage.load_models()
    assert stage.sentiment is not None
    now = datetime.now(UTC)

    def enrich(texts: list[str]) -> list[tuple[str, SentimentResult | None]]:
        recs = [
            Mention(event_id=f"eval:{i}", source="eval", occurred_at=now, text=t, lang=lang)
            for i, t in enumerate(texts)
        ]
        out = []
        for ev in stage.enrich_batch(recs):
            s = ev.sentiment
            out.append((ev.lang or "und", SentimentResult(s.score, s.label, s.confidence) if s else None))
        return out

    result = prequential_sentiment(rows, stage.sentiment, enrich=enrich, batch=batch)
    result["skipped_rows"] = skipped
    result["data"] = data.name
    result["order"] = order
    result["part"] = part
    result["seed"] = seed if order == "shuffle" else None
    result["label_runs"] = runs
    if sorted_warning:
        result["warning"] = sorted_warning
    if json_out:
        typer.echo(json.dumps(result))
        return
    _print(
        {k: v for k, v in result.items() if k != "per_language"},
        False,
        f"sentiment on {data.name}",
        ["accuracy", "macro_f1"],
    )
    tbl = Table(title="per language (macro-F1)")
    for col in ("lang", "scored", "unscored", "online", "lexicon", "baseline_nb"):
        tbl.add_column(col)
    for lang, v in result["per_language"].items():
        tbl.add_row(
            lang,
            str(v.get("scored", 0)),
            str(v.get("unscored", 0)),
            *(str(v[k]["macro_f1"]) if k in v else "-" for k in ("online", "lexicon", "baseline_nb")),
        )
    Console().print(tbl)


NO_ENTITY = ("", "none", "no entity", "-", "null", "n/a")


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
    none_values: Annotated[
        str,
        typer.Option(help="Truth values meaning the text names no tracked entity (comma-separated, any case)."),
    ] = ",".join(NO_ENTITY),
    encoding: Annotated[str, typer.Option(help="Text encoding of the file (decoded strictly).")] = "utf-8-sig",
    limit: Annotated[int | None, typer.Option()] = None,
    part: Annotated[
        str, typer.Option(help="all, tune or holdout: a fixed half of the texts (by a hash of each text).")
    ] = "all",
    also_named: Annotated[
        Path | None,
        typer.Option(
            "--also-named",
            exists=True,
            help="JSON {row id: [entity key, ...]}: the other entities a row's text truly names (judged by hand).",
        ),
    ] = None,
    id_col: Annotated[str, typer.Option("--id-col", help="Row id column, for --also-named.")] = "tweet_id",
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Precision/recall of entity attribution against a truth column: brand or product names and
    aliases, or a "no entity" value (every entity found there is a false positive)."""
    from models.evaluate import brand_attribution
    from models.nlp import Enricher

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    names: dict[str, str] = {}
    for e in settings.entities:
        for n in [e.name, *e.aliases, e.key, *([f"{e.brand} {e.name}"] if e.kind == "product" and e.brand else [])]:
            names.setdefault(n.strip().lower(), e.key)
    none = {v.strip().lower() for v in none_values.split(",")}
    rename = {}
    for pair in (truth_map or "").split(","):
        if "=" in pair:
            a, _, b = pair.partition("=")
            rename[a.strip().lower()] = b.strip().lower()
    rows: list[tuple[str, str | None, frozenset[str]]] = []
    unknown = 0
    part = _part(part)
    also: dict[str, frozenset[str]] = {}
    if also_named is not None:
        doc = json.loads(also_named.read_text())
        keys = {e.key for e in settings.entities}
        for rid, ks in doc.items():
            bad = [k for k in ks if k not in keys]
            if bad:
                raise typer.BadParameter(f"--also-named: row {rid} names {bad}, not entity keys of the config")
            also[str(rid)] = frozenset(ks)
    for row in _read(data, "auto", True, encoding):
        if not in_part(str(row.get(text_col, "")), part):
            continue
        value = str(row.get(truth_col) or "").strip().lower()
        value = rename.get(value, value)
        more = also.get(str(row.get(id_col, "")), frozenset())
        if value in none:
            rows.append((str(row.get(text_col, "")), None, more))
        elif value in names:
            rows.append((str(row.get(text_col, "")), names[value], more))
        else:
            unknown += 1
            continue
        if limit and len(rows) >= limit:
            break
    enricher = Enricher(
        settings.entities,
        profile=profile,  # type: ignore[arg-type]
        model=settings.nlp.model,
        extra_aspects=settings.nlp.aspects,
    )
    result = brand_attribution(rows, enricher)
    result["rows_with_unknown_truth"] = unknown
    result["part"] = part
    if json_out:
        typer.echo(json.dumps(result))
        return
    tbl = Table(title=f"entity attribution on {data.name} ({profile})")
    for col in ("entity", "precision", "recall", "f1", "n"):
        tbl.add_column(col)
    tbl.add_row("ALL (micro)", str(result["precision"]), str(result["recall"]), str(result["f1"]), str(result["n"]))
    for k, v in result["per_entity"].items():
        tbl.add_row(k, str(v["precision"]), str(v["recall"]), str(v["f1"]), str(v["n"]))
    Console().print(tbl)
    Console().print({"no_entity": result["no_entity"], "rows_with_unknown_truth": unknown})


@eval_app.command("targets")
def targets(
    labels: Annotated[
        Path, typer.Option("--labels", exists=True, help="Hand labels: JSON {row id: {entity key: label}}.")
    ],
    data: Annotated[Path, typer.Option("--data", exists=True, help="The file the ids point into.")],
    text_col: Annotated[str, typer.Option("--text-col")] = "text",
    id_col: Annotated[str, typer.Option("--id-col")] = "tweet_id",
    label_col: Annotated[
        str | None,
        typer.Option(help="Whole-text label column: the other rows teach the model first, as a worker's stream would."),
    ] = None,
    label_map: Annotated[str | None, typer.Option("--map", help='Label values to classes, e.g. "0=negative".')] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c")] = None,
    part: Annotated[
        str, typer.Option(help="all, tune or holdout: a fixed half of the texts (by a hash of each text).")
    ] = "all",
    encoding: Annotated[str, typer.Option(help="Text encoding of the file (decoded strictly).")] = "utf-8-sig",
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Per-entity sentiment of texts naming several entities (target-dependent rules) vs giving
    each entity the whole text's label, against hand labels."""
    from models.evaluate import target_sentiment_accuracy
    from models.nlp import Enricher
    from models.sentiment import LABELS, SentimentModel

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    part, mapping = _part(part), _label_map(label_map)
    truth: dict[str, dict[str, str]] = {str(k): v for k, v in json.loads(labels.read_text()).items()}
    keys = {e.key for e in settings.entities}
    for rid, per in truth.items():
        bad = [k for k, lab in per.items() if k not in keys or lab not in LABELS]
        if bad:
            raise typer.BadParameter(f"--labels: row {rid}: {bad} is not an entity key of the config with a label")
    model, rows, seen, learned = SentimentModel(), [], set(), 0
    for row in _read(data, "auto", True, encoding):
        rid, text = str(row.get(id_col, "")), str(row.get(text_col) or "")
        if rid in truth:
            if rid not in seen and in_part(text, part):
                seen.add(rid)
                rows.append((text, truth[rid]))
        elif label_col and text:
            lab = _norm(row.get(label_col, ""), mapping)
            if lab is not None:
                model.learn_one(text, lab)
                learned += 1
    enricher = Enricher(settings.entities, extra_aspects=settings.nlp.aspects)
    result = target_sentiment_accuracy(rows, enricher, model)
    result.update({"part": part, "model_learned": learned, "ids_not_found": len(truth) - len(seen)})
    if part != "all":
        result["ids_not_found"] = None  # the other half's ids are left out on purpose
    if json_out:
        typer.echo(json.dumps(result))
        return
    mistakes = result.pop("mistakes")
    Console().print(result)
    for m in mistakes[:20]:
        Console().print(f"  {m['entity']}: truth {m['truth']}, got {m['got']}: {m['text'][:100]!r}")


def _register_detect() -> None:
    from tools.eval_detect import detect_command

    eval_app.command("detect")(detect_command)


_register_detect()
