"""`repmon eval sentiment` and `repmon eval enrich` on small files written here (our own text)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cli.eval import eval_app

runner = CliRunner()

POS = ["great flight, lovely crew", "excelente servicio, muy amables", "ótimo, chegou antes do prazo", "良い商品です"]
NEG = ["awful delay, lost my bag", "pésimo, nunca más", "péssimo, não recebi", "配送が遅い、最悪"]


def write_sorted(tmp_path: Path, n: int = 20) -> Path:
    """Labels in file order: every negative row first (the trap the shuffle avoids)."""
    rows = ["text,stars"]
    rows += [f'"{NEG[i % 4]} {i}",1' for i in range(n)]
    rows += [f'"{POS[i % 4]} {i}",5' for i in range(n)]
    p = tmp_path / "sorted.csv"
    p.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return p


def test_sentiment_shuffles_with_a_seed_warns_on_sorted_labels_bins_and_reports_languages(tmp_path: Path) -> None:
    data = write_sorted(tmp_path)
    args = ["sentiment", "--data", str(data), "--text-col", "text", "--label-col", "stars", "--bins", "3", "--json"]
    res = runner.invoke(eval_app, [*args, "--seed", "5"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["order"] == "shuffle" and out["seed"] == 5 and "sorted" in out["warning"]
    assert "seed 5" in res.stderr and "labels look sorted" in res.stderr
    assert out["labels"] == {"negative": 20, "positive": 20} and out["scored"] == 40  # 1 -> negative, 5 -> positive
    assert {"en", "ja"} <= set(out["per_language"])  # every language scored, none crashes the baselines
    again = json.loads(runner.invoke(eval_app, [*args, "--seed", "5"]).stdout.strip().splitlines()[-1])
    assert again["online"] == out["online"]  # the printed seed repeats the run
    kept = json.loads(runner.invoke(eval_app, [*args, "--order", "file"]).stdout.strip().splitlines()[-1])
    assert kept["order"] == "file" and kept["seed"] is None
    head = json.loads(runner.invoke(eval_app, [*args, "--order", "file", "--limit", "10"]).stdout.splitlines()[-1])
    assert head["labels"] == {"negative": 10} and "only one label class" in head["warning"]
    sample = json.loads(runner.invoke(eval_app, [*args, "--seed", "5", "--limit", "10"]).stdout.splitlines()[-1])
    assert set(sample["labels"]) == {"negative", "positive"}  # a sample of the file, not its sorted head


def test_sentiment_decodes_strictly_and_names_the_encoding_option(tmp_path: Path) -> None:
    p = tmp_path / "latin.csv"
    p.write_bytes("text,label\nmuy malo el café,negative\nqué bueno,positive\n".encode("latin-1"))
    args = ["sentiment", "--data", str(p), "--text-col", "text", "--label-col", "label", "--json"]
    bad = runner.invoke(eval_app, args)
    assert bad.exit_code != 0 and "--encoding" in bad.output
    good = runner.invoke(eval_app, [*args, "--encoding", "latin-1"])
    assert good.exit_code == 0 and json.loads(good.stdout.strip().splitlines()[-1])["scored"] == 2


def test_enrich_scores_brand_product_and_no_entity_truth(tmp_path: Path) -> None:
    p = tmp_path / "truth.csv"
    p.write_text(
        "text,truth\n"
        "I flew northwind today,Northwind\n"
        "the Northwind Go App crashed again,Go App\n"
        "skyline lost my bag,Skyline\n"
        "my apple pie recipe,none\n"
        "nothing to see here,\n"
        "northwind is my favourite direction,none\n",
        encoding="utf-8",
    )
    res = runner.invoke(eval_app, ["enrich", "--data", str(p), "--truth-col", "truth", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["recall"] == 1.0 and out["per_entity"]["northwind/go app"]["recall"] == 1.0
    assert out["no_entity"] == {
        "rows": 3,
        "rows_with_a_false_positive": 1,
        "false_positives": 1,
        "false_positive_rate": 0.3333,
    }
