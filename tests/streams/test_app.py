"""The Faust app the worker builds: settings Faust has no option for reach its consumer."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer
from kafka.partitioner.default import murmur2

from infra.kafka import ensure_topics
from infra.settings import load_settings
from streams.app import FaustOutbox, _faust_app
from streams.runtime import TOPICS, RecordRefused


async def test_the_worker_consumer_fetch_wait_is_the_setting() -> None:
    """Faust builds aiokafka's consumer with a fixed ``fetch_max_wait_ms`` of 1,500; the worker's
    comes from ``kafka.fetch_max_wait_ms`` and is what aiokafka's fetcher is given on start."""
    s = load_settings(None, kafka={"fetch_max_wait_ms": 37, "bootstrap": "127.0.0.1:9"})
    app = _faust_app(s, None)
    thread = app.consumer._thread  # type: ignore[attr-defined]
    consumer = thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == 37
        # the attribute aiokafka's start() hands to its Fetcher (a rename would silently undo this)
        import inspect

        from aiokafka.consumer.consumer import AIOKafkaConsumer

        assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(AIOKafkaConsumer.start)
    finally:
        await consumer.stop()


@pytest.mark.integration
async def test_the_outbox_sends_record_batches_where_any_kafka_client_would(kafka_bootstrap: str, unique: str) -> None:
    """``FaustOutbox.send_many`` queues one record batch per partition: every record arrives once,
    each keyed record in the partition Kafka's default partitioner (murmur2, kafka-python's own
    implementation here) gives its key, records of a key in their order, and a record larger
    than a request is refused alone while the rest of its partition's records go out."""
    prefix = f"ob{unique}"
    names = {t: f"{prefix}.{t}" for t in TOPICS}
    ensure_topics(kafka_bootstrap, names.values(), 4)
    s = load_settings(None, app_id=f"ob-{unique}", kafka={"bootstrap": kafka_bootstrap, "topic_prefix": prefix})
    app = _faust_app(s, None)
    topics = {
        t: app.topic(n, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw")
        for t, n in names.items()
    }
    await app.producer.start()
    try:
        out = FaustOutbox(app, topics)
        keys = [f"brand-{i % 7}".encode() for i in range(600)]
        records: list[tuple[str, bytes | None, bytes]] = [
            ("enriched", k, orjson.dumps({"i": i, "pad": "x" * (i % 900)})) for i, k in enumerate(keys)
        ]
        records.insert(300, ("enriched", b"brand-3", b"y" * 2_000_000))  # over max_request_size
        records.append(("deadletter", None, b'{"dead": true}'))
        aio = app.producer._producer  # type: ignore[attr-defined]
        calls = {"send": 0, "send_batch": 0}
        for name in calls:  # count what reaches aiokafka: batches, and the one record sent alone
            real = getattr(aio, name)

            async def counted(*a: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
                calls[_name] += 1
                return await _real(*a, **kw)

            setattr(aio, name, counted)
        errors = await out.send_many(records)
        assert calls["send"] == 1 and 4 <= calls["send_batch"] <= 100, calls
        assert [i for i, e in enumerate(errors) if e is not None] == [300]
        assert isinstance(errors[300], RecordRefused) and "MessageSizeTooLarge" in str(errors[300])
    finally:
        await app.producer.stop()
    got: dict[str, list[tuple[int, bytes | None, bytes]]] = {"enriched": [], "deadletter": []}
    consumer = KafkaConsumer(
        names["enriched"], names["deadletter"], bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )  # fmt: skip
    try:
        for m in consumer:
            got["enriched" if m.topic == names["enriched"] else "deadletter"].append((m.partition, m.key, m.value))
            if len(got["enriched"]) == 600 and got["deadletter"]:
                break
    finally:
        consumer.close()
    assert len(got["enriched"]) == 600 and [v for _, _, v in got["deadletter"]] == [b'{"dead": true}']
    order: dict[bytes, list[int]] = {}
    for part, key, value in got["enriched"]:
        assert key is not None and part == (murmur2(key) & 0x7FFFFFFF) % 4
        order.setdefault(key, []).append(orjson.loads(value)["i"])
    assert len({p for p, _, _ in got["enriched"]}) > 1  # the keys spread over several partitions
    assert all(seq == sorted(seq) for seq in order.values())
    assert sorted(i for seq in order.values() for i in seq) == list(range(600))
