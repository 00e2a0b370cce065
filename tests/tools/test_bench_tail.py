"""The bench's measuring consumer: every enriched event id, once, with the time it was first seen,
on the embedded broker the bench runs on."""

from __future__ import annotations

import time

import confluent_kafka
import orjson
import pytest

from infra.embedded import EmbeddedBroker
from infra.kafka import ensure_topics
from tools.bench import _Enriched
from tools.stack import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.embedded]


def test_the_bench_tail_sees_every_event_once_from_every_partition_as_it_arrives() -> None:
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, ["bench.enriched"], 4)
        producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})

        def send(ids: range) -> None:
            for i in ids:
                producer.produce("bench.enriched", orjson.dumps({"event_id": f"e{i}", "n": i}), partition=i % 4)
            assert producer.flush(30) == 0

        send(range(0, 500))  # written before the tail starts: read from the beginning
        tail = _Enriched(broker.bootstrap, "bench.enriched")
        try:
            assert wait_until(lambda: len(tail.seen) >= 500, 60), len(tail.seen)
            sent_at = time.perf_counter()
            send(range(500, 1000))
            send(range(0, 100))  # a redelivery keeps the first sighting
            assert wait_until(lambda: len(tail.seen) >= 1000, 60), len(tail.seen)
            assert set(tail.seen) == {f"e{i}" for i in range(1000)}
            # the later events were seen after they were sent, the earlier ones before
            assert all(tail.seen[f"e{i}"] >= sent_at for i in range(500, 1000))
            assert all(tail.seen[f"e{i}"] < sent_at for i in range(0, 500))
        finally:
            tail.stop()
        assert not tail.is_alive()


def test_a_topic_the_broker_does_not_have_is_named() -> None:
    with EmbeddedBroker() as broker, pytest.raises(RuntimeError, match=r"no partitions of bench\.missing"):
        _Enriched(broker.bootstrap, "bench.missing", timeout=3)
