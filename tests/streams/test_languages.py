"""A Portuguese and a Japanese crisis page through a real worker on Apache Kafka and Redis.

Northwind is talked about in Portuguese (mentions, no language hint), Skyline reviewed in
Japanese (1-5 stars). Both have a quiet stretch, then a crisis in their own language: each must
reach the local HTTP receiver as an incident thread opened by a negativity signal, with the
language of every event detected and none of them dropped for it.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.base import KafkaSink
from contract.records import TOPICS
from infra.kafka import TopicTail, ensure_topics
from tools.receiver import HttpReceiver
from tools.stack import WorkerProcess, wait_until, worker_env

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
MINUTES, CRISIS = 150, range(100, 120)

PT_QUIET = [
    "Voei com a Northwind hoje, tudo certo e no horário",
    "A tripulação da Northwind foi simpática, voo tranquilo",
    "Check-in rápido na Northwind, gostei do serviço",
    "Northwind chegou no horário, ótimo voo",
]
PT_CRISIS = [
    "A Northwind perdeu minha mala, atendimento péssimo, horrível",
    "Voo da Northwind cancelado de novo, que vergonha, pior empresa",
    "Northwind é uma decepção, ninguém resolve nada, péssimo",
    "Horrível a Northwind, atraso de cinco horas e nenhum suporte",
]
JA_GOOD = ["座席が快適で、スタッフもとても親切でした", "定刻に到着しました。また利用したいです", "機内食がおいしかった"]
JA_BAD = ["最悪です。遅延ばかりで説明もない", "荷物が届かない。対応がひどい", "二度と使いません。ひどいサービス"]


def stream() -> list[dict[str, Any]]:
    rng = random.Random(11)
    out: list[dict[str, Any]] = []
    for m in range(MINUTES):
        hot = m in CRISIS
        for i in range(rng.randint(6, 9) * (5 if hot else 1)):
            bad = rng.random() < (0.85 if hot else 0.05)
            out.append(
                {
                    "kind": "mention",
                    "event_id": f"pt:{m}:{i}",
                    "source": "lang-test",
                    "text": rng.choice(PT_CRISIS if bad else PT_QUIET),
                    "occurred_at": (START + timedelta(minutes=m, seconds=rng.uniform(0, 59))).isoformat(),
                }
            )
        for i in range(rng.randint(3, 5) * (4 if hot else 1)):
            # few bad reviews while quiet: this test is about languages, and at a few reviews a minute
            # a chance cluster of three 1-star reviews is a rating drop the detector may rightly report
            bad = rng.random() < (0.85 if hot else 0.01)
            out.append(
                {
                    "kind": "review",
                    "event_id": f"ja:{m}:{i}",
                    "source": "lang-test",
                    "brand": "Skyline",
                    "rating": rng.choice([1, 2]) if bad else rng.choice([4, 5]),
                    "text": rng.choice(JA_BAD if bad else JA_GOOD),
                    "occurred_at": (START + timedelta(minutes=m, seconds=rng.uniform(0, 59))).isoformat(),
                }
            )
    return out


def test_a_portuguese_and_a_japanese_crisis_page_through_kafka(
    kafka_bootstrap: str, redis_url: str, unique: str
) -> None:
    prefix = f"lg{unique}"
    workdir = Path(tempfile.mkdtemp(prefix="repmon-lang-"))
    topics = {t: f"{prefix}.{t}" for t in TOPICS}
    ensure_topics(kafka_bootstrap, topics.values(), 2)
    events = stream()
    with HttpReceiver() as rx:
        routes = [{"name": "it", "urls": [rx.apprise_url("/it")], "rate_per_second": 20}]
        env = worker_env(
            kafka_bootstrap,
            redis_url,
            prefix,
            workdir,
            REPMON_WINDOWS__BACKFILL_SINCE=START.isoformat(),  # generated history: backfill mode
            REPMON_ALERTS__ROUTES=json.dumps(routes),
        )
        kept = [topics["enriched"], topics["incidents"]]
        tail = TopicTail(kafka_bootstrap, kept, keep=kept)
        try:
            with WorkerProcess(env, workdir / "worker.log") as worker:
                sink = KafkaSink(kafka_bootstrap, topics["raw"])
                for e in events:
                    sink.send_any(e)
                sink.flush()
                sink.close()
                assert wait_until(lambda: not worker.alive() or tail.count(topics["enriched"]) >= len(events), 240), (
                    tail.counts,
                    worker.tail(),
                )
                assert worker.alive(), worker.tail()

                def opened() -> set[str]:
                    return {
                        json.loads(v)["entity"]
                        for v in tail.values(topics["incidents"])
                        if json.loads(v)["status"] == "open"
                    }

                assert wait_until(lambda: {"northwind", "skyline"} <= opened() or not worker.alive(), 120), (
                    opened(),
                    worker.tail(),
                )
                got = rx.wait_for(
                    lambda rs: (
                        sum(" OPEN: " in r.title and ("Northwind" in r.title or "Skyline" in r.title) for r in rs) >= 2
                    ),
                    60,
                )
            enriched = [json.loads(v) for v in tail.values(topics["enriched"])]
            incidents = [json.loads(v) for v in tail.values(topics["incidents"])]
        finally:
            tail.stop()
    # every event counted, whatever its language, and the language is the right one
    assert len({e["event_id"] for e in enriched}) == len(events)
    langs = Counter((e["event_id"].split(":")[0], e["lang"]) for e in enriched)
    assert langs[("pt", "pt")] >= 0.95 * sum(v for (k, _), v in langs.items() if k == "pt"), langs
    assert langs[("ja", "ja")] == sum(v for (k, _), v in langs.items() if k == "ja"), langs
    # each crisis is a thread opened during its crisis by a negativity signal, never before it
    for entity in ("northwind", "skyline"):
        opens = [i for i in incidents if i["entity"] == entity and i["status"] == "open"]
        assert len(opens) == 1, [(i["opened_at"], i["summary"]) for i in opens]
        onset = datetime.fromisoformat(opens[0]["opened_at"])
        assert START + timedelta(minutes=CRISIS.start) <= onset <= START + timedelta(minutes=CRISIS.start + 8), onset
        assert {s["signal"] for s in opens[0]["signals"]} - {"volume", "trending"}, opens[0]["signals"]
    titles = [r.title for r in got if " OPEN: " in r.title]
    assert any("Northwind" in t for t in titles) and any("Skyline" in t for t in titles), titles
