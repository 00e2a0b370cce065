"""Kafka plumbing shared by the worker, the connectors and the CLI (kafka-python, sync)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

__all__ = ["TopicTail", "end_offsets", "ensure_topics", "wait_for_broker"]

logger = logging.getLogger(__name__)


def wait_for_broker(bootstrap: str, timeout: float = 60.0) -> None:
    """Block until the broker answers a metadata request; raise ``TimeoutError`` naming it."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except (KafkaError, OSError) as exc:
            last = exc
            time.sleep(0.3)
    raise TimeoutError(f"Kafka at {bootstrap} did not answer within {timeout:.0f}s: {last}")


def ensure_topics(bootstrap: str, names: Iterable[str], partitions: int, replication: int = 1) -> list[str]:
    """Create the topics that do not exist yet; return the ones created.

    Topics must exist before a Faust worker subscribes, or it may start with no partitions.
    """
    wanted = list(dict.fromkeys(names))
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        existing = set(admin.list_topics())
        missing = [n for n in wanted if n not in existing]
        created: list[str] = []
        for name in missing:
            try:
                admin.create_topics([NewTopic(name, partitions, replication)])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        deadline = time.monotonic() + 30
        while created and time.monotonic() < deadline:
            if set(created) <= set(admin.list_topics()):
                break
            time.sleep(0.2)
        if created:
            logger.info("created topics: %s", ", ".join(created))
        return created
    finally:
        admin.close()


class TopicTail(threading.Thread):
    """Counts (and optionally keeps) every message of some topics, from the beginning.

    Counting by consuming works on every Kafka-compatible broker; the embedded tansu reports a
    partition's high watermark as the base offset of its last batch + 1, so end offsets
    undercount there.
    """

    def __init__(self, bootstrap: str, topics: Iterable[str], *, keep: Iterable[str] = ()) -> None:
        super().__init__(daemon=True, name="repmon-tail")
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.keep = set(keep)
        self.counts: dict[str, int] = dict.fromkeys(self.topics, 0)
        self.kept: dict[str, list[bytes]] = {t: [] for t in self.keep}
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self.start()

    def run(self) -> None:
        consumer = KafkaConsumer(
            *self.topics,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            metadata_max_age_ms=2000,
        )
        try:
            while not self._halt.is_set():
                for tp, msgs in consumer.poll(timeout_ms=200, max_records=5000).items():
                    with self._lock:
                        self.counts[tp.topic] += len(msgs)
                        if tp.topic in self.keep:
                            self.kept[tp.topic].extend(m.value for m in msgs)
                        self.take(tp.topic, [m.value for m in msgs])
        finally:
            consumer.close()

    def take(self, topic: str, values: list[bytes]) -> None:
        """Called with each polled run of one topic's values, under the lock: a subclass that
        derives something from every message does it here, once per message."""

    def count(self, topic: str) -> int:
        with self._lock:
            return self.counts[topic]

    def values(self, topic: str) -> list[bytes]:
        with self._lock:
            return list(self.kept[topic])

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def read_to_end(bootstrap: str, topic: str, *, timeout: float = 120.0) -> list[bytes]:
    """Every record of ``topic``, every partition from its start up to its end offset at call
    time (Apache Kafka: tansu's end offsets undercount, see :class:`TopicTail`); at most
    ``timeout`` seconds."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=10_000)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or {0})]
        c.assign(parts)
        c.seek_to_beginning(*parts)
        end = c.end_offsets(parts)
        out: list[bytes] = []
        deadline = time.monotonic() + timeout
        while any(c.position(tp) < end[tp] for tp in parts) and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=1000, max_records=5000).values():
                out.extend(r.value for r in recs)
        return out
    finally:
        c.close()


def end_offsets(bootstrap: str, topic: str) -> int:
    """Total messages ever written to ``topic`` (sum of end offsets over its partitions).

    Apache Kafka only: see :class:`TopicTail` for a count that works on tansu too.
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return 0
        return int(sum(consumer.end_offsets(tps).values()))
    finally:
        consumer.close()


def partition_count(bootstrap: str, topic: str, timeout: float = 30.0) -> int:
    """Number of partitions of ``topic`` as the broker has it (waits for its metadata)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        deadline = time.monotonic() + timeout
        while True:
            parts = consumer.partitions_for_topic(topic)
            if parts:
                return len(parts)
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {topic} has no partitions on {bootstrap} after {timeout:.0f} s")
            time.sleep(0.2)
    finally:
        consumer.close()
