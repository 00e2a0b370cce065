"""One sentiment model for the fleet, on Apache Kafka and Redis, with real worker processes.

Two workers learn (through the one learner) from human labels and from review ratings, publish a
snapshot, and then score the same text on different raw partitions with the same model version
and score. The whole fleet is then killed (SIGKILL: no final snapshot) right after more labels
arrive, and restarted as three workers: the new learner resumes from the last snapshot and the
labels topic's offsets, so the lineage holds every label exactly once, and the three score alike.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from contract.records import TOPICS
from infra.kafka import ensure_topics
from models.sentiment import SentimentModel
from streams.learning import ModelSnapshots, decode_snapshot
from tools.stack import WorkerProcess, wait_until

from ..conftest import free_port

pytestmark = pytest.mark.integration

PHRASE = "the zorblax on board was pure blorft"
PARTITIONS = 3


class Fleet:
    def __init__(self, bootstrap: str, redis_url: str) -> None:
        self.prefix = f"fl{uuid.uuid4().hex[:8]}"
        self.bootstrap, self.redis_url = bootstrap, redis_url
        self.workdir = Path(tempfile.mkdtemp(prefix="repmon-fleet-"))
        self.topics = {t: f"{self.prefix}.{t}" for t in TOPICS}
        ensure_topics(bootstrap, self.topics.values(), PARTITIONS)
        self.r = redis.Redis.from_url(redis_url)
        _, self.k_latest, self.k_snap = ModelSnapshots.keys(self.prefix)
        self.workers: list[tuple[WorkerProcess, int]] = []
        self.prod = KafkaProducer(bootstrap_servers=bootstrap)
        self.sent = 0
        self.started = 0

    def start(self, n: int) -> None:
        for _ in range(n):
            port = free_port()
            env = {
                "REPMON_APP_ID": self.prefix,
                "REPMON_KAFKA__BOOTSTRAP": self.bootstrap,
                "REPMON_KAFKA__TOPIC_PREFIX": self.prefix,
                "REPMON_KAFKA__PARTITIONS": str(PARTITIONS),
                "REPMON_KAFKA__SESSION_TIMEOUT_SECONDS": "10",
                "REPMON_REDIS__URL": self.redis_url,
                "REPMON_REDIS__KEY_PREFIX": self.prefix,
                "REPMON_AUTHOR_KEY_SECRET": "test-secret",
                "REPMON_SENTIMENT__SNAPSHOT_INTERVAL_SECONDS": "1",
                "REPMON_SENTIMENT__REFRESH_SECONDS": "0.5",
                "REPMON_SENTIMENT__OWNER_LEASE_SECONDS": "3",
                "REPMON_WORKER__METRICS_PORT": str(port),
            }
            self.started += 1
            log = self.workdir / f"worker{self.started}.log"
            self.workers.append((WorkerProcess(env, log), port))

    def live(self) -> list[tuple[WorkerProcess, int]]:
        return [(w, p) for w, p in self.workers if w.alive()]

    def tails(self) -> str:
        return "\n\n".join(w.tail(25) for w, _ in self.workers)

    def kill_all(self) -> None:
        for w, _ in self.live():
            os.killpg(w.proc.pid, signal.SIGKILL)  # a crash of the whole fleet, not a clean stop
        for w, _ in self.workers:
            w.stop()
        self.workers = []

    def metrics(self, port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            return {}
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(body)
            for s in fam.samples
        }

    def raw_partitions(self, port: int) -> set[int]:
        return {
            int(dict(labels)["partition"])
            for (name, labels), _ in self.metrics(port).items()
            if name == "repmon_consumer_lag" and dict(labels)["topic"] == self.topics["raw"]
        }

    def scoring_version(self, port: int) -> float | None:
        return self.metrics(port).get(("repmon_sentiment_model_version", ()))

    def label(self, text: str, label: str) -> None:
        self.prod.send(self.topics["labels"], orjson.dumps({"text": text, "label": label}))

    def event(self, partition: int, **fields: Any) -> str:
        self.sent += 1
        doc = {"event_id": f"t:{self.prefix}:{self.sent}", "source": "test", "occurred_at": now(), **fields}
        self.prod.send(self.topics["raw"], orjson.dumps(doc), partition=partition)
        return str(doc["event_id"])

    def labels_end(self) -> int:
        c = KafkaConsumer(bootstrap_servers=self.bootstrap)
        try:
            tps = [TopicPartition(self.topics["labels"], p) for p in range(PARTITIONS)]
            return sum(c.end_offsets(tps).values())
        finally:
            c.close()

    def newest(self) -> tuple[int, dict[int, int], SentimentModel] | None:
        v = self.r.get(self.k_latest)
        raw = self.r.get(f"{self.k_snap}{int(v)}") if v is not None else None
        if raw is None:
            return None
        snap = decode_snapshot(int(v), raw)  # type: ignore[arg-type]
        return snap.version, snap.offsets, snap.model

    def snapshot_covers(self, end: int) -> bool:
        got = self.newest()
        return got is not None and sum(got[1].values()) >= end

    def enriched_ids(self, ids: list[str], timeout: float = 90) -> list[dict[str, Any]]:
        """The enriched events of ``ids`` (one each: a redelivery after a crash is enriched again)."""
        found: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while len(found) < len(ids) and time.monotonic() < deadline and self.live():
            found = {e["event_id"]: e for e in self.enriched(1 << 30, timeout=2) if e["event_id"] in ids}
        return list(found.values())

    def enriched(self, expect: int, timeout: float = 90) -> list[dict[str, Any]]:
        c = KafkaConsumer(
            self.topics["enriched"],
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            consumer_timeout_ms=500,
        )
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        try:
            while len(out) < expect and time.monotonic() < deadline and self.live():
                out.extend(orjson.loads(m.value) for m in c)
        finally:
            c.close()
        return out

    def close(self) -> None:
        for w, _ in self.workers:
            w.stop()
        self.prod.close()
        self.r.close()


def now() -> str:
    return datetime.now(UTC).isoformat()


def test_the_fleet_scores_with_one_model_and_keeps_every_label_across_a_full_restart(
    kafka_bootstrap: str, redis_url: str
) -> None:
    fleet = Fleet(kafka_bootstrap, redis_url)
    cold = SentimentModel().predict(f"@northwind {PHRASE}")
    assert cold.label != "negative"  # the lexicon alone has no opinion on this phrase
    try:
        fleet.start(2)
        # both workers hold raw partitions (the two texts below are scored by different workers)
        assert wait_until(
            lambda: all(fleet.raw_partitions(p) for _, p in fleet.live()) and len(fleet.live()) == 2, 180
        ), fleet.tails()
        owned = [fleet.raw_partitions(p) for _, p in fleet.live()]
        assert not owned[0] & owned[1]
        # human corrections, and reviews whose stars teach (through whichever worker enriches them)
        for i in range(40):
            fleet.label(f"{PHRASE} #{i}", "negative")
            fleet.label(f"boarding at gate {i}", "neutral")
        fleet.prod.send(fleet.topics["labels"], b'{"text": "x", "label": "meh"}')  # dead-lettered, not learned
        for i in range(30):
            fleet.event(i % PARTITIONS, kind="review", text=f"{PHRASE}, review {i}", rating=1, brand="Northwind")
        fleet.prod.flush()
        assert len(fleet.enriched(30)) == 30, fleet.tails()
        end = fleet.labels_end()
        assert end == 80 + 1 + 30  # every review became a training example on the labels topic
        assert wait_until(lambda: fleet.snapshot_covers(end) or not fleet.live(), 90), fleet.tails()
        got = fleet.newest()
        assert got is not None
        version, _, model = got
        assert model.n_learned == 110  # each label once; the bad one not at all
        assert wait_until(lambda: all(fleet.scoring_version(p) == version for _, p in fleet.live()), 60)

        # the same text on every raw partition: one model version, one score, the learned label
        ids = [fleet.event(p, kind="mention", text=f"@northwind {PHRASE}") for p in range(PARTITIONS)]
        fleet.prod.flush()
        scored = fleet.enriched_ids(ids)
        assert len(scored) == PARTITIONS, fleet.tails()
        sents = {(e["sentiment"]["model_version"], e["sentiment"]["score"], e["sentiment"]["label"]) for e in scored}
        assert len(sents) == 1, sents
        [(mv, score, label)] = sents
        # the learned reading: negative-leaning (the label itself leans to the rarer class of the
        # labels, neutral here, so the score is what shows the lesson)
        assert mv.endswith(f":v{version}") and score < min(cold.score, 0.0) - 0.2, (score, label, cold)

        # more labels, then the whole fleet dies at once, whether or not they were snapshotted
        for i in range(20):
            fleet.label(f"the blorft menu {i}", "negative")
        fleet.prod.flush()
        fleet.kill_all()

        fleet.start(3)
        end = fleet.labels_end()
        assert end == 111 + 20
        assert wait_until(lambda: fleet.snapshot_covers(end) or not fleet.live(), 120), fleet.tails()
        got = fleet.newest()
        assert got is not None
        version, offsets, model = got
        assert sum(offsets.values()) == end
        # nothing learned before the last snapshot is lost, nothing is learned twice
        assert model.n_learned == 130
        assert wait_until(lambda: all(fleet.scoring_version(p) == version for _, p in fleet.live()), 90)
        learners = [fleet.metrics(p).get(("repmon_sentiment_learner", ())) for _, p in fleet.live()]
        assert learners.count(1.0) == 1, learners
        # three workers, one raw partition each: the same text, one version, one score
        assert wait_until(lambda: all(len(fleet.raw_partitions(p)) == 1 for _, p in fleet.live()), 120)
        assert len(fleet.live()) == 3, fleet.tails()
        ids = [fleet.event(p, kind="mention", text=f"@northwind {PHRASE}") for p in range(PARTITIONS)]
        fleet.prod.flush()
        scored = fleet.enriched_ids(ids)
        assert len(scored) == PARTITIONS, fleet.tails()
        sents = {(e["sentiment"]["model_version"], e["sentiment"]["score"]) for e in scored}
        assert sents == {(f"{mv.rsplit(':', 1)[0]}:v{version}", scored[0]["sentiment"]["score"])}, sents
    finally:
        fleet.close()
