from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from cli.main import app
from contract.records import (
    RECORDS,
    SCHEMA_VERSION,
    EnrichedEvent,
    Mention,
    Purchase,
    Review,
    json_schemas,
    make_event_id,
    parse_raw,
)

NOW = "2026-11-02T10:00:00+01:00"


def test_parse_each_kind_and_utc() -> None:
    m = parse_raw({"kind": "mention", "event_id": "x:1", "source": "x", "occurred_at": NOW, "text": "hi"})
    assert isinstance(m, Mention) and m.occurred_at.tzinfo is not None
    assert m.occurred_at == datetime(2026, 11, 2, 9, 0, tzinfo=UTC) and m.version == SCHEMA_VERSION
    r = parse_raw(orjson.dumps({"kind": "review", "event_id": "r:1", "source": "s", "occurred_at": NOW, "rating": 2}))
    assert isinstance(r, Review) and r.rating == 2
    for status in ("placed", "paid", "cancelled", "refunded", "returned", "chargeback"):
        p = parse_raw(
            {
                "kind": "purchase",
                "event_id": "p:1",
                "source": "s",
                "occurred_at": NOW,
                "order_id": "o1",
                "status": status,
                "amount": 3.5,
            }
        )
        assert isinstance(p, Purchase) and p.status == status
    f = parse_raw(
        {"kind": "feedback", "event_id": "f:1", "source": "s", "occurred_at": NOW, "metric": "nps", "score": 10}
    )
    assert f.kind == "feedback"


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        (b"not json", "json"),
        (
            {"kind": "mention", "event_id": "x:1", "source": "x", "occurred_at": "2026-11-02T10:00:00", "text": "a"},
            "timezone",
        ),
        ({"kind": "review", "event_id": "x:1", "source": "x", "occurred_at": NOW, "rating": 9}, "rating"),
        (
            {"kind": "feedback", "event_id": "x:1", "source": "x", "occurred_at": NOW, "metric": "csat", "score": 9},
            "csat score",
        ),
        ({"kind": "tweet", "event_id": "x:1", "source": "x", "occurred_at": NOW}, "kind"),
        ({"kind": "mention", "event_id": "x:1", "source": "x", "occurred_at": NOW, "text": "a", "extra": 1}, "extra"),
    ],
)
def test_bad_input_is_rejected_with_reason(payload: object, where: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_raw(payload)  # type: ignore[arg-type]
    assert where.lower() in str(info.value).lower()


def test_event_ids_are_stable() -> None:
    assert make_event_id("tw", "1") == "tw:1"
    a = make_event_id("csv", None, {"text": "x", "t": 1})
    assert a == make_event_id("csv", None, {"t": 1, "text": "x"}) and a != make_event_id("csv", None, {"t": 2})


def test_enriched_roundtrip() -> None:
    ev = EnrichedEvent(
        event_id="x:1",
        kind="mention",
        source="x",
        occurred_at=datetime.now(UTC),
        ingested_at=datetime.now(UTC),
        entity="acme",
    )
    assert EnrichedEvent.model_validate_json(ev.dumps()) == ev


def test_schema_command_writes_valid_schemas(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["schema", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    files = sorted(p.name for p in tmp_path.glob("*.schema.json"))
    assert files == sorted(f"{n}.schema.json" for n in RECORDS)
    incident = json.loads((tmp_path / "incident.schema.json").read_text())
    assert "incident_id" in incident["properties"] and "incident_id" in incident["required"]
    raw = json_schemas()["raw_event"]
    assert "discriminator" in json.dumps(raw) or "oneOf" in json.dumps(raw)


def test_enriched_records_built_as_dicts_are_the_contract() -> None:
    """The worker publishes the dicts it builds (no pydantic model per event): each must validate
    against the published JSON Schema and read back as the record, field for field."""
    from jsonschema import Draft202012Validator

    from connectors.demo import generate
    from infra.settings import load_settings
    from streams.enrich import EnrichStage

    settings = load_settings(None)
    start = datetime(2026, 11, 2, tzinfo=UTC)
    rows = [r for r in generate(settings.entities, start=start, minutes=60) if isinstance(r, dict)]
    rows += [
        {"kind": "mention", "event_id": "m:1", "source": "x", "occurred_at": NOW, "reach": 999,
         "text": "Skyline is way better than Northwind, mail me at jane@example.com",
         "url": "https://t.example/s?session=abc", "author": "@jane", "lang": "en"},
        {"kind": "review", "event_id": "r:1", "source": "s", "occurred_at": NOW, "rating": 1, "brand": "Northwind"},
        {"kind": "feedback", "event_id": "f:1", "source": "s", "occurred_at": NOW, "metric": "nps", "score": 3,
         "comment": "la entrega llegó tarde", "customer_key": "c1"},
    ]  # fmt: skip
    recs = [parse_raw(r) for r in rows]
    stage = EnrichStage(settings)
    stage.load_models()
    docs = stage.enrich_docs(recs)
    assert {d["kind"] for d in docs} == {"mention", "review", "purchase", "feedback"}
    assert any(m["sentiment"] for d in docs for m in d["entities"]) and any(d["aspects"] for d in docs)
    schema = Draft202012Validator(json_schemas()["enriched_event"])
    for doc in docs:
        errors = [e.message for e in schema.iter_errors(doc)]
        assert not errors, (doc["event_id"], errors)
        wire = orjson.dumps(doc)
        ev = EnrichedEvent.model_validate_json(wire)
        assert ev.model_dump(mode="json") == doc  # the same fields, types and formats pydantic writes
    bad = dict(docs[0], sentiment={"score": 2.0, "label": "bad", "confidence": 0.5, "model_version": "m"})
    assert list(schema.iter_errors(bad))  # the schema check can fail
