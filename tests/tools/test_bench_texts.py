"""What ``repmon bench`` enriches: generated texts that never repeat (a cache keyed by the text
would otherwise be timed warm), and the texts of a recorded file naming tracked entities."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from infra.settings import load_settings
from tools.bench import _real_texts, _sample, read_texts


def test_the_generated_sample_never_repeats_a_text_or_an_id() -> None:
    settings = load_settings()
    rows = _sample(settings, 6000)
    assert len(rows) == 6000
    texts = [r["text"] for r in rows if r.get("text")]
    assert len(texts) > 4000 and len(set(texts)) == len(texts)
    assert len({r["event_id"] for r in rows}) == len(rows)
    assert {r["kind"] for r in rows} >= {"mention", "review", "purchase"}
    assert _sample(settings, 300) == _sample(settings, 300)  # the same bench every run


def test_recorded_texts_come_from_csv_jsonl_or_lines_and_name_a_tracked_entity(tmp_path: Path) -> None:
    csv_file = tmp_path / "t.csv"
    csv_file.write_text('id,text\n1,"@united lost my bag, again"\n2,no handle here\n', encoding="utf-8")
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_bytes(b'{"text": "una queja"}\n\n{"other": 1}\n')
    lines = tmp_path / "t.txt"
    lines.write_text("first\n\nsecond\n", encoding="utf-8")
    assert read_texts(csv_file) == ["@united lost my bag, again", "no handle here"]
    assert read_texts(jsonl) == ["una queja"]
    assert read_texts(lines) == ["first", "second"]

    settings = load_settings()
    rows = _sample(settings, 200)
    real = _real_texts(rows, read_texts(csv_file), settings)
    assert len(real) == sum(1 for r in rows if r.get("text"))
    refs = {ref for e in settings.entities for ref in (e.name, *e.aliases, *e.handles)}
    bag = [r["text"] for r in real if "lost my bag" in r["text"]]
    assert bag and all("@united" not in t and t.split(" lost")[0] in refs for t in bag)
    assert any(r["text"] == "no handle here" for r in real)


@pytest.mark.parametrize(
    ("name", "body"),
    [("no_column.csv", "id,body\n1,x\n"), ("bad.jsonl", "{not json\n"), ("empty.txt", "\n\n")],
)
def test_a_file_without_texts_is_one_clear_line_and_exit_2(tmp_path: Path, name: str, body: str) -> None:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ValueError, match=name):
        read_texts(path)
    res = CliRunner().invoke(app, ["bench", "--texts", str(path)])
    assert res.exit_code == 2, res.output
    assert "--texts" in res.output and name in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1  # one line, printed, not raised


def test_enrichment_as_a_worker_scores_unseen_texts_with_a_frozen_snapshot_of_what_was_learned() -> None:
    from tools.bench import bench_enrichment

    s = load_settings()
    fast = s.model_copy(update={"nlp": s.nlp.model_copy(update={"profile": "fast"})})
    rows, other = _sample(s, 400), _sample(s, 400, seed=8)
    seen = {r.get("text") for r in rows if r.get("text")}
    fresh = [r for r in other if not r.get("text") or r["text"] not in seen]
    assert len(fresh) < len(other)  # the two samples share texts: the bench must drop them
    out = bench_enrichment(fast, rows, other)
    worker = out["as_worker"]
    assert worker["events"] == len(fresh)
    assert worker["snapshot_labels"] > 0  # the first pass's reviews taught the snapshot
    assert worker["events_per_cpu_s"] > 0 and out["events_per_cpu_s"] > 0
