"""A killed worker does not forget what its sentiment model learned (checkpoint + restore)."""

from __future__ import annotations

import os
import signal
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer

from contract.records import TOPICS
from infra.kafka import ensure_topics
from infra.settings import load_settings
from models.sentiment import SentimentModel
from tools.stack import WorkerProcess, wait_until

pytestmark = pytest.mark.integration

PHRASE = "the zorblax on board was pure blorft"


def test_killed_worker_restores_its_model(kafka_bootstrap: str, redis_url: str) -> None:
    prefix = f"rs{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="repmon-restart-"))
    ckpt = workdir / "sentiment.json"
    settings = load_settings(None, kafka={"bootstrap": kafka_bootstrap, "topic_prefix": prefix, "partitions": 2})
    topics = {t: settings.topic(t) for t in TOPICS}
    ensure_topics(kafka_bootstrap, topics.values(), 2)
    env = {
        "REPMON_APP_ID": prefix,
        "REPMON_KAFKA__BOOTSTRAP": kafka_bootstrap,
        "REPMON_KAFKA__TOPIC_PREFIX": prefix,
        "REPMON_KAFKA__PARTITIONS": "2",
        "REPMON_REDIS__URL": redis_url,
        "REPMON_REDIS__KEY_PREFIX": prefix,
        "REPMON_SENTIMENT__CHECKPOINT_PATH": str(ckpt),
        "REPMON_SENTIMENT__CHECKPOINT_INTERVAL_SECONDS": "1",
    }
    cold = SentimentModel().predict(PHRASE)
    assert cold.label != "negative"  # the lexicon alone has no opinion on this phrase

    prod = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    with WorkerProcess(env, workdir / "worker1.log") as w1:
        for i in range(150):  # human corrections on the labels topic
            prod.send(topics["labels"], orjson.dumps({"text": f"{PHRASE} #{i}", "label": "negative"}))
            prod.send(topics["labels"], orjson.dumps({"text": f"boarding at gate {i}", "label": "neutral"}))
        prod.flush()

        def learned() -> bool:
            try:
                return ckpt.exists() and SentimentModel.load(ckpt).n_learned >= 300
            except (EOFError, ValueError, OSError):
                return False

        assert wait_until(lambda: learned() or not w1.alive(), 120), w1.tail()
        os.killpg(w1.proc.pid, signal.SIGKILL)  # a crash, not a clean shutdown
        w1.proc.wait(10)
    restored = SentimentModel.load(ckpt)
    assert restored.predict(PHRASE).label == "negative"

    with WorkerProcess(env, workdir / "worker2.log") as w2:
        event = {
            "kind": "mention",
            "event_id": f"rs:{prefix}",
            "source": "test",
            "occurred_at": datetime.now(UTC).isoformat(),
            "text": f"@northwind {PHRASE}",
        }
        prod.send(topics["raw"], orjson.dumps(event))
        prod.flush()
        c = KafkaConsumer(
            topics["enriched"],
            bootstrap_servers=kafka_bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            consumer_timeout_ms=1000,
        )
        got: list[dict[str, object]] = []
        deadline = time.monotonic() + 120
        while not got and time.monotonic() < deadline and w2.alive():
            got = [orjson.loads(m.value) for m in c]
        c.close()
        assert got, w2.tail()
        sent = got[0]["sentiment"]
        assert isinstance(sent, dict)
        assert sent["label"] == "negative" and sent["model_version"] == restored.version
    prod.close()
