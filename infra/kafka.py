"""Kafka plumbing shared by the worker, the connectors and the CLI (kafka-python, sync)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

__all__ = ["end_offsets", "ensure_topics", "wait_for_broker"]

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


def end_offsets(bootstrap: str, topic: str) -> int:
    """Total messages ever written to ``topic`` (sum of end offsets over its partitions)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return 0
        return int(sum(consumer.end_offsets(tps).values()))
    finally:
        consumer.close()
