"""Kafka plumbing shared by the worker, the connectors and the CLI.

Admin and reads use kafka-python (sync, pure Python); :class:`TopicTail` reads with librdkafka. Records are produced by
:class:`Producer`, on confluent-kafka (librdkafka, Apache-2.0): kafka-python's producer costs ~94
µs of Python per record (its CRC32C and record batches are pure Python, on a sender thread that
holds the GIL), which capped connectors and replay near 10k records/s and stalled the event loop
of ``repmon connect``; librdkafka builds, compresses and sends batches in C threads that do not
hold the GIL, so a send costs a few µs of the caller's time.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import confluent_kafka
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

__all__ = ["EndOffsets", "Producer", "ProducerWindow", "TopicTail", "end_offsets", "ensure_topics", "wait_for_broker"]

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
        # listed is not yet writable: a producer that asks before every partition has a leader
        # gets "unknown topic or partition", so wait for the leaders
        deadline = time.monotonic() + 30
        while created and time.monotonic() < deadline:
            if set(created) <= set(admin.list_topics()) and _led(admin, created):
                break
            time.sleep(0.2)
        if created:
            logger.info("created topics: %s", ", ".join(created))
        return created
    finally:
        admin.close()


def _led(admin: KafkaAdminClient, names: list[str]) -> bool:
    """Whether every partition of ``names`` has a leader."""
    try:
        described = admin.describe_topics(names)
    except Exception:  # still being created: asked again on the next round
        return False
    return all(
        not t.get("error_code")
        and t.get("partitions")
        and all(p.get("leader_id", p.get("leader", -1)) >= 0 for p in t["partitions"])
        for t in described
    )


class TopicTail(threading.Thread):
    """Counts (and optionally keeps) every message of some topics, from the beginning.

    Counting by consuming works on every Kafka-compatible broker; the embedded tansu reports a
    partition's high watermark as the base offset of its last batch + 1, so end offsets
    undercount there.

    librdkafka reads them (~7 µs of CPU per message; kafka-python's consumer cost ~320 µs, which
    at a benchmark's rates was most of a core taken from the workers it measured). It never joins
    a group: each partition is assigned from its start, and a topic created later (by a worker, a
    test) is found within ``REFRESH_S``.
    """

    REFRESH_S = 2.0

    def __init__(
        self, bootstrap: str, topics: Iterable[str], *, keep: Iterable[str] = (), fetch_wait_ms: int = 100
    ) -> None:
        super().__init__(daemon=True, name="repmon-tail")
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.keep = set(keep)
        self.fetch_wait_ms = fetch_wait_ms
        self.counts: dict[str, int] = dict.fromkeys(self.topics, 0)
        self.kept: dict[str, list[bytes]] = {t: [] for t in self.keep}
        self.reading = threading.Event()  # set once every tailed topic has partitions assigned
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self.start()

    def _unassigned(self, consumer: confluent_kafka.Consumer, assigned: set[tuple[str, int]]) -> list[Any]:
        """Partitions of the tailed topics the broker has and the tail does not read yet. Every
        topic is listed: asking for one by name lets a broker that creates topics on request
        (tansu) create it."""
        try:
            meta = consumer.list_topics(timeout=5).topics
        except confluent_kafka.KafkaException as exc:
            logger.debug("tail: no metadata from %s yet: %s", self.bootstrap, exc)
            return []
        start = confluent_kafka.OFFSET_BEGINNING
        return [
            confluent_kafka.TopicPartition(t, p, start)
            for t in self.topics
            if t in meta and meta[t].error is None
            for p in meta[t].partitions
            if (t, p) not in assigned
        ]

    def run(self) -> None:
        consumer = confluent_kafka.Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"repmon-tail-{uuid.uuid4().hex[:12]}",  # never joined (assigned, not subscribed)
                "enable.auto.commit": False,
                "fetch.wait.max.ms": self.fetch_wait_ms,
                "logger": logging.getLogger("librdkafka"),
            }
        )
        assigned: set[tuple[str, int]] = set()
        refresh_at = 0.0
        try:
            while not self._halt.is_set():
                if time.monotonic() >= refresh_at:
                    refresh_at = time.monotonic() + self.REFRESH_S
                    new = self._unassigned(consumer, assigned)
                    if new:
                        consumer.incremental_assign(new)
                        assigned.update((tp.topic, tp.partition) for tp in new)
                        if {t for t, _ in assigned} >= set(self.topics):
                            self.reading.set()
                if not assigned:
                    self._halt.wait(0.2)
                    continue
                # the first message as soon as it is there, then what else is queued, without
                # waiting: a subclass that stamps when messages were seen stamps them then
                first = consumer.poll(0.1)
                if first is None:
                    continue
                by_topic: dict[str, list[bytes]] = {}
                for m in [first, *consumer.consume(4999, 0)]:
                    if m.error() is None:
                        by_topic.setdefault(str(m.topic()), []).append(m.value() or b"")
                if not by_topic:
                    continue
                with self._lock:
                    for topic, values in by_topic.items():
                        self.counts[topic] += len(values)
                        if topic in self.keep:
                            self.kept[topic].extend(values)
                        self.take(topic, values)
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


class _OffsetClient:
    """A librdkafka consumer that only asks for offsets: it never subscribes, so it never joins
    its group, and it commits nothing. Blocking: call it in a thread."""

    def __init__(self, bootstrap: str, group: str, topic: str, timeout: float) -> None:
        self.topic, self.timeout = topic, timeout
        self._c = confluent_kafka.Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "logger": logging.getLogger("librdkafka"),
            }
        )
        self._lock = threading.Lock()  # one request at a time, whichever thread asks

    def close(self) -> None:
        with self._lock:
            self._c.close()


class EndOffsets(_OffsetClient):
    """The broker's end offset (next offset to be written) of each partition of ``topic``, asked
    anew on every call (ListOffsets). Raises when the broker does not answer within ``timeout``.
    Apache Kafka's are records; tansu's count batches (see ``kafka.verify_idle_offsets``)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, timeout: float = 5.0) -> None:
        super().__init__(bootstrap, f"{topic}.end-offsets", topic, timeout)
        self.partitions = partitions

    def __call__(self) -> dict[int, int]:
        # one ListOffsets request per partition leader for all partitions at once: the timestamp
        # -1 (OFFSET_END) asks for the latest offset, as get_watermark_offsets does one by one
        asked = [
            confluent_kafka.TopicPartition(self.topic, p, confluent_kafka.OFFSET_END) for p in range(self.partitions)
        ]
        with self._lock:
            got = self._c.offsets_for_times(asked, timeout=self.timeout)
        out = {}
        for tp in got:
            if tp.error is not None or tp.offset < 0:
                raise RuntimeError(f"no end offset for {self.topic}[{tp.partition}]: {tp.error or tp.offset}")
            out[tp.partition] = int(tp.offset)
        return out


class CommittedOffsets(_OffsetClient):
    """The offsets consumer group ``group`` has committed on ``topic`` (OffsetFetch), ``None``
    where it has committed nothing. Raises when the coordinator does not answer within ``timeout``."""

    def __init__(self, bootstrap: str, group: str, topic: str, timeout: float = 5.0) -> None:
        super().__init__(bootstrap, group, topic, timeout)

    def __call__(self, partitions: Iterable[int]) -> dict[int, int | None]:
        asked = [confluent_kafka.TopicPartition(self.topic, p) for p in partitions]
        if not asked:
            return {}
        # a group's coordinator can be moving or still loading its offsets (NOT_COORDINATOR on a
        # fresh broker, where __consumer_offsets is being created): librdkafka says so at once
        # instead of waiting, so a retriable answer is asked again within the timeout
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                with self._lock:
                    got = self._c.committed(asked, timeout=max(0.1, deadline - time.monotonic()))
                break
            except confluent_kafka.KafkaException as exc:
                err = exc.args[0] if exc.args else None
                retriable = isinstance(err, confluent_kafka.KafkaError) and err.retriable()
                if not retriable or time.monotonic() + 0.1 >= deadline:
                    raise
                time.sleep(0.1)
        out: dict[int, int | None] = {}
        for tp in got:
            if tp.error is not None:
                raise RuntimeError(f"no committed offset for {self.topic}[{tp.partition}]: {tp.error}")
            out[tp.partition] = int(tp.offset) if tp.offset >= 0 else None  # OFFSET_INVALID: none yet
        return out


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


class ProducerWindow:
    """Acknowledgements of the records sent since the last :meth:`Producer.flush` (delivery
    callbacks run in whichever thread serves the producer's queue, hence the lock)."""

    __slots__ = ("acked", "error", "failed", "lock", "sent")

    def __init__(self) -> None:
        self.sent = self.acked = self.failed = 0
        self.error: str | None = None
        self.lock = threading.Lock()

    def delivered(self, err: confluent_kafka.KafkaError | None, _msg: object) -> None:
        if err is None:
            with self.lock:
                self.acked += 1
        else:
            self.fail(f"{err.name()}: {err.str()}")

    def fail(self, error: str) -> None:
        with self.lock:
            self.failed += 1
            self.error = self.error or error


# kafka-python spellings the callers already use -> librdkafka's (CONFIGURATION.md of librdkafka)
_RENAMED = {
    "acks": "acks",
    "linger_ms": "linger.ms",
    "retries": "retries",
    "request_timeout_ms": "request.timeout.ms",
    "delivery_timeout_ms": "message.timeout.ms",
    "max_in_flight_requests_per_connection": "max.in.flight.requests.per.connection",
    "max_request_size": "message.max.bytes",
    "compression_type": "compression.type",
}


class Producer:
    """One topic's producer with an acknowledgement window (acks=all, every record checked).

    - :meth:`send` queues a record; it never waits for the broker except once per window for
      the topic's metadata (``max_block_ms``): a broker that does not answer fails the window at
      once instead of after the delivery timeout, and the records after a failure in the same
      window are failed without being queued;
    - :meth:`flush` waits (``timeout`` s at most) for the broker's answer on every record of the
      window and returns it: ``(sent, acked, first error)``; a record not answered in time is
      purged from the queue and counted as not acknowledged, so it is never claimed;
    - options take kafka-python's names (``linger_ms``, ``request_timeout_ms``,
      ``delivery_timeout_ms``, ``max_block_ms``...) or librdkafka's dotted ones; ``api_version``
      is ignored (librdkafka negotiates it).
    """

    def __init__(self, bootstrap: str, topic: str, **options: Any) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        options.pop("api_version", None)
        self.max_block = float(options.pop("max_block_ms", 60_000)) / 1000
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,
            # retries are bounded by the delivery timeout (message.timeout.ms), not by a count: a
            # topic the broker has just auto-created answers UNKNOWN_TOPIC_OR_PART to produce
            # requests until its leader is elected, which five quick retries can outlast
            # one request in flight per broker keeps per-key order across retries without
            # idempotence (which needs InitProducerId, not every Kafka-compatible broker has it)
            "max.in.flight.requests.per.connection": 1,
            "message.timeout.ms": 120_000,
            "logger": logging.getLogger("librdkafka"),
        }
        for k, v in options.items():
            config[_RENAMED.get(k, k)] = v
        self._p = confluent_kafka.Producer(config)
        self._window = ProducerWindow()
        self._ready = False  # the topic's metadata arrived once: the broker answers
        self._closed = False

    @property
    def failing(self) -> bool:
        return self._window.failed > 0

    def probe(self, timeout: float = 5.0) -> None:
        """Raise unless the broker answers a metadata request for the topic within ``timeout`` s
        (a health probe: blocking, run it in a thread)."""
        self._p.list_topics(self.topic, timeout=timeout)

    def _check_broker(self) -> str | None:
        try:
            md = self._p.list_topics(self.topic, timeout=self.max_block)
        except confluent_kafka.KafkaException as exc:
            return f"no metadata within {self.max_block:g} s: {exc.args[0].str() if exc.args else exc}"
        topic = md.topics.get(self.topic)
        deadline = time.monotonic() + self.max_block
        # a topic auto-created by this request has no leader for a moment: wait for one (within
        # max_block), so the first window is not spent on retries
        while (
            topic is not None
            and topic.partitions
            and any(p.leader < 0 for p in topic.partitions.values())
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
            try:
                topic = self._p.list_topics(self.topic, timeout=max(deadline - time.monotonic(), 0.1)).topics.get(
                    self.topic
                )
            except confluent_kafka.KafkaException:
                break
        if topic is None or not topic.partitions:
            err = topic.error.str() if topic is not None and topic.error is not None else "no partitions"
            return f"topic {self.topic}: {err}"
        self._ready = True
        return None

    def send(self, value: bytes, key: bytes | None = None) -> None:
        w = self._window
        w.sent += 1
        if w.failed:
            # the broker is refusing or gone: fail the rest of the window without queueing it
            w.fail("not sent after an earlier failure in the same batch")
            return
        if not self._ready and (problem := self._check_broker()) is not None:
            w.fail(problem)
            return
        deadline = time.monotonic() + self.max_block
        while True:
            try:
                self._p.produce(self.topic, value, key, on_delivery=w.delivered)
                break
            except BufferError:  # the local queue is full: let the broker drain it a little
                if time.monotonic() > deadline:
                    w.fail(f"local queue full for {self.max_block:g} s")
                    return
                self._p.poll(0.05)
            except confluent_kafka.KafkaException as exc:  # e.g. a record over message.max.bytes
                w.fail(f"{exc.args[0].name()}: {exc.args[0].str()}" if exc.args else str(exc))
                return
        self._p.poll(0)  # serve callbacks of earlier records; never blocks

    def flush(self, timeout: float | None = None) -> tuple[int, int, str | None]:
        """Wait for the window's answers; ``(sent, acked, error)`` of the window, then a new one."""
        w, self._window = self._window, ProducerWindow()
        left = self._p.flush(-1 if timeout is None else timeout)
        cause = None
        if left:
            # not answered in time: purge so they cannot be acknowledged after being reported lost
            self._p.purge(in_queue=True, in_flight=False)
            self._p.flush(0)
            cause = f"no acknowledgement within {timeout:g} s"
        with w.lock:
            return w.sent, min(w.acked, w.sent), w.error or cause

    def close(self, timeout: float = 30.0) -> ProducerWindow:
        """Wait up to ``timeout`` s for the records in flight, then drop the rest (a broker that
        is gone must not hang the exit); returns the last window, for what was not acknowledged."""
        w = self._window
        if self._closed:
            return w
        self._closed = True
        if self._p.flush(timeout):
            logger.error(
                "broker at %s did not acknowledge every message within %.0f s; closed anyway", self.bootstrap, timeout
            )
            self._p.purge()
            self._p.flush(0)
        # release the broker connections now rather than whenever the object is collected (its
        # threads would go on logging a broker that went away); older releases have no close()
        closer = getattr(self._p, "close", None)
        if closer is not None:
            closer()
        return w
