"""`repmon deadletter replay` on Apache Kafka and Redis: filter, re-validate, re-send once."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer

from cli.deadletter import replay_dead_letters
from contract.records import TOPICS, DeadLetter, dumps
from infra.kafka import ensure_topics
from infra.settings import load_settings
from streams.compose import build
from streams.runtime import Message, Runtime

from ..streams.test_runtime import ListOutbox

pytestmark = pytest.mark.integration


def raw_values(bootstrap: str, topic: str) -> list[bytes]:
    c = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None, consumer_timeout_ms=3000
    )
    try:
        return [m.value for m in c]
    finally:
        c.close()


def event(n: int, **fields: object) -> bytes:
    doc = {"kind": "mention", "event_id": f"dl:{n}", "source": "t", "text": "Northwind lost my bag", **fields}
    return orjson.dumps({"occurred_at": datetime.now(UTC).isoformat(), **doc})


async def test_replay_resends_the_fixed_ones_once(kafka_bootstrap: str, redis_url: str) -> None:
    prefix = f"dl{uuid.uuid4().hex[:8]}"
    topics = {t: f"{prefix}.{t}" for t in TOPICS}
    ensure_topics(kafka_bootstrap, topics.values(), 2)
    # the worker's own dead letters: two out of the live horizon (then backfill is allowed), one that
    # is still invalid, and a bad human label (not raw input)
    out = ListOutbox()
    c = build(load_settings(None), memory=True)  # live mode: history is out of the horizon
    c.stage.load_models()
    rt = Runtime(c, out)
    old = "2020-01-01T00:00:00+00:00"
    await rt.on_raw(
        [
            Message(event(1, occurred_at=old), topic=topics["raw"], partition=0, offset=1),
            Message(event(2, occurred_at=old), topic=topics["raw"], partition=1, offset=1),
            Message(orjson.dumps({"kind": "review", "rating": 9}), topic=topics["raw"], partition=0, offset=2),
        ]
    )
    await rt.dead_letter("labels", "label must be ...", "ValueError", Message(b'{"label": "meh"}', offset=3))
    dead = [DeadLetter.model_validate_json(v) for v in out.values("deadletter")]
    assert sorted(d.stage for d in dead) == ["horizon", "horizon", "labels", "validate"]
    # one more, cut to 64 KiB by the worker: it cannot be rebuilt
    cut = dead[0].model_copy(update={"payload_truncated": True, "payload_sha256": hashlib.sha256(b"x").hexdigest()})
    prod = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for d in [*dead, cut]:
        prod.send(topics["deadletter"], dumps(d))
    prod.flush()
    prod.close()
    # the operator set windows.backfill_since on the workers: the old events are taken back
    args = (kafka_bootstrap, topics["deadletter"], topics["raw"], redis_url, prefix)
    dry = replay_dead_letters(*args, stages=[], errors=[], reason=None, dry_run=True)
    assert dry["would_resend"] == 2 and raw_values(kafka_bootstrap, topics["raw"]) == []
    first = replay_dead_letters(*args, stages=["horizon", "validate"], errors=[], reason="days old")
    assert (first["matched"], first["resent"], first["truncated"]) == (3, 2, 1), first
    sent = sorted(orjson.loads(v)["event_id"] for v in raw_values(kafka_bootstrap, topics["raw"]))
    assert sent == ["dl:1", "dl:2"]
    every = replay_dead_letters(*args, stages=[], errors=[], reason=None)
    assert (every["resent"], every["already_replayed"], every["not_raw_input"], every["still_invalid"]) == (0, 2, 1, 1)
    assert "review.event_id: Field required" in next(iter(every["still_invalid_reasons"]))
    assert len(raw_values(kafka_bootstrap, topics["raw"])) == 2  # idempotent: nothing sent twice


def test_a_bad_stage_is_one_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "deadletter", "replay", "--stage", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "--stage 'nope' is not a stage" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
