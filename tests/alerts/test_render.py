"""alerts.render: every message explains itself; SMS bodies fit one GSM-7 segment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alerts.render import SMS_LIMIT, gsm_length, notify_type, render, to_gsm
from contract.records import Incident, Signal, TopMention

T0 = datetime(2026, 11, 2, 9, 20, tzinfo=UTC)
IID = "inc-northwind-20261102T0920-e7b252d5"


def sig(
    name: str = "negative_share", value: float = 0.62, baseline: float = 0.14, z: float = 9.1, **kw: object
) -> Signal:
    fields: dict[str, object] = {
        "signal_id": f"s-{name}",
        "entity": "northwind",
        "signal": name,
        "bucket_start": T0,
        "bucket_seconds": 60,
        "value": value,
        "baseline": baseline,
        "scale": 0.05,
        "z": z,
        "support": 80,
        "severity": "critical",
        "detector": "ew-seasonal-binomial-v1",
    }
    fields.update(kw)
    return Signal.model_validate(fields)


def incident(status: str = "open", severity: str = "critical", seq: int = 1, **kw: object) -> Incident:
    fields: dict[str, object] = {
        "incident_id": IID,
        "entity": "northwind",
        "status": status,
        "seq": seq,
        "severity": severity,
        "opened_at": T0,
        "updated_at": T0 + timedelta(minutes=5),
        "title": "Northwind - negative share, volume",
        "summary": "negative share 62% vs baseline 14% (z=9.1, n=80)",
        "signals": [
            sig(),
            sig("volume", value=240, baseline=11.3, z=12.0),
            sig("aspect_negativity", value=0.81, baseline=0.2, z=6.4, aspect="refunds"),
        ],
        "top_mentions": [
            TopMention(
                event_id="t:1",
                text="Northwind   app is down again\nand support hangs up on me, mail me at bob@example.com "
                + "word " * 80,
                sentiment=-0.81,
                impact=3.2,
                url="https://social.example/p/1",
            ),
            TopMention(event_id="t:2", text="refund still not here after 3 weeks", sentiment=-0.6, impact=1.4),
        ],
        "top_aspects": [("app", 40), ("refunds", 22), ("support", 9)],
        "top_terms": [("down", 31), ("refund", 20)],
        "evidence": {
            "window": ["2026-11-02T09:20:00+00:00", "2026-11-02T09:21:00+00:00"],
            "bucket_seconds": 60,
            "detectors": ["ew-seasonal-binomial-v1", "poisson-volume-v2"],
            "sentiment_model": "vader+sgd-7",
            "nlp_profile": "fast",
            "team": "cx",
        },
    }
    fields.update(kw)
    return Incident.model_validate(fields)


def test_full_body_explains_itself() -> None:
    m = render(incident())
    assert m.title.startswith("[CRITICAL] OPEN: Northwind - negative share, volume")
    assert f"thread {IID} #1" in m.title
    body = m.body
    first = body.splitlines()[0]
    assert "OPEN" in first and "northwind" in first and "critical" in first and f"{IID} #1" in first
    # every signal, value vs baseline
    assert "negative share 62% vs baseline 14% (z=9.1, n=80)" in body
    assert "volume 240 vs baseline 11.3 (z=12.0)" in body
    assert "negativity about refunds 81% vs baseline 20%" in body
    # since when (event time, ISO)
    assert "Active since 2026-11-02T09:20:00Z" in body
    # top mentions: on one line, cut at a word boundary, scrubbed, with their links
    assert '"Northwind app is down again and support hangs up on me, mail me at [EMAIL] word' in body
    assert "bob@example.com" not in body
    mention_line = next(line for line in body.splitlines() if "app is down" in line)
    assert "word…" in mention_line and "wor…" not in mention_line
    assert "https://social.example/p/1" in body
    assert "refund still not here after 3 weeks" in body
    assert "Top aspects: app (40), refunds (22), support (9)" in body
    assert "Top terms: down (31), refund (20)" in body
    evidence = next(line for line in body.splitlines() if line.startswith("Evidence:"))
    assert "2026-11-02T09:20:00+00:00 .. 2026-11-02T09:21:00+00:00" in evidence
    assert "ew-seasonal-binomial-v1" in evidence and "vader+sgd-7" in evidence


def test_resolved_body_says_how_long() -> None:
    inc = incident(
        "resolved",
        seq=7,
        signals=[],
        summary="No crisis signal for 15 buckets.",
        resolved_at=T0 + timedelta(minutes=65),
        updated_at=T0 + timedelta(minutes=65),
        title="Northwind is back to normal",
    )
    m = render(inc)
    assert m.title == f"[CRITICAL] RESOLVED: Northwind is back to normal (thread {IID} #7)"
    assert "after 1h05m" in m.body and "No crisis signal for 15 buckets." in m.body
    sms = render(inc, sms=True).body
    assert sms.startswith("RESOLVED critical northwind: back to normal after 1h05m")
    assert "#7" in sms


def test_sms_fits_one_segment_most_important_first() -> None:
    inc = incident(entity="northwind/super-long-product-name-that-goes-on", summary="x" * 400)
    m = render(inc, sms=True)
    assert m.title == ""  # SMS gateways prepend the title to the body
    assert len(m.body) <= SMS_LIMIT and gsm_length(m.body) <= SMS_LIMIT
    assert m.body == to_gsm(m.body)  # GSM-7 only: never a 70-char UCS-2 segment
    assert m.body.startswith("OPEN critical northwind/super-long-product-name-that-goes-on: ")
    assert "negative share 62% vs baseline 14% (z=9.1)" in m.body
    assert "since 2026-11-02 09:20Z" in m.body
    assert m.body.endswith("ref e7b252d5#1")


def test_sms_never_cuts_mid_word() -> None:
    inc = incident(entity="northwind " + "crisis " * 40, signals=[])
    body = render(inc, sms=True).body
    assert gsm_length(body) <= SMS_LIMIT
    head = body.split("; ")[0]
    assert head.endswith("...")
    assert head[:-3].split()[-1] in {"crisis", "northwind", "critical"}


def test_sms_transliterates_to_gsm() -> None:
    t = Incident.model_validate(
        incident(entity="café-crême", top_aspects=[("naïve—app", 3)]).model_dump() | {"signals": []}
    )
    body = render(t, sms=True).body
    assert "café-creme" in body and "naive-app" in body
    assert gsm_length(body) <= SMS_LIMIT


@pytest.mark.parametrize(
    ("status", "severity", "expected"),
    [
        ("open", "critical", "failure"),
        ("escalated", "critical", "failure"),
        ("update", "warning", "warning"),
        ("open", "info", "info"),
        ("resolved", "critical", "success"),
        ("resolved", "warning", "success"),
    ],
)
def test_notify_type_mapping(status: str, severity: str, expected: str) -> None:
    inc = incident(status, severity)
    assert notify_type(inc) == expected
    assert render(inc).notify_type == expected
    assert render(inc, sms=True).notify_type == expected


def test_the_renderer_puts_the_status_in_front_of_the_title() -> None:
    m = render(incident("escalated", seq=4, title="Northwind negative share"))
    assert m.title == f"[CRITICAL] ESCALATED: Northwind negative share (thread {IID} #4)"
