"""Connector base: outside sources -> records on the raw topic (kafka-python).

All raw kinds go to one topic, ``<prefix>.raw``: one validated entry point, the record's ``kind``
discriminates. Connectors never drop bad input: a row that cannot become a valid record is sent
as it is (with an ``_error`` field where it was JSON), so the pipeline dead-letters it with the
reason and nothing is lost silently.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError
from pydantic import BaseModel

from contract.records import dumps

__all__ = ["RAW", "Connector", "KafkaSink", "Malformed", "Sink"]

logger = logging.getLogger(__name__)

RAW = "raw"


@dataclass(frozen=True, slots=True)
class Malformed:
    """Input that cannot become a record: sent to the raw topic byte for byte, so the pipeline
    dead-letters it with the reason (``reason`` here is the connector's own note)."""

    payload: bytes
    reason: str


class Sink(ABC):
    """Where a connector's events go. ``send_any`` accepts records, dicts and :class:`Malformed`."""

    sent = 0
    invalid = 0

    @abstractmethod
    def send_bytes(self, value: bytes, key: bytes | None) -> None: ...

    def flush(self) -> None:  # noqa: B027 - optional hook
        pass

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @staticmethod
    def key_of(item: dict[str, Any] | BaseModel) -> bytes | None:
        d = item if isinstance(item, dict) else item.model_dump()
        k = d.get("brand") or d.get("product") or d.get("event_id")
        return str(k).encode() if k else None

    def send_any(self, item: BaseModel | dict[str, Any] | Malformed) -> None:
        if isinstance(item, Malformed):
            self.invalid += 1
            self.send_bytes(item.payload, None)
            return
        if isinstance(item, BaseModel):
            self.send_bytes(dumps(item), self.key_of(item))
        else:
            if "_error" in item or "_malformed" in item:
                self.invalid += 1
            self.send_bytes(orjson.dumps(item, default=str), self.key_of(item))
        self.sent += 1


class KafkaSink(Sink):
    """Produces to one topic with kafka-python (acks=all, small linger)."""

    def __init__(self, bootstrap: str, topic: str, **producer: Any) -> None:
        self.topic = topic
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=5,
            retries=5,
            max_in_flight_requests_per_connection=1,  # keeps per-key order across retries
            **producer,
        )

    def send_bytes(self, value: bytes, key: bytes | None) -> None:
        self.producer.send(self.topic, key=key, value=value)

    def flush(self) -> None:
        self.producer.flush()

    def close(self, timeout: float = 30.0) -> None:
        """Flush and close; gives up after ``timeout`` s (a broker that is gone must not hang exit)."""
        try:
            # close() flushes first; kafka-python raises there when the broker is gone (its own
            # atexit hook would then wait forever), so a timeout is logged and the sender dropped
            self.producer.close(timeout=timeout)
        except KafkaTimeoutError:
            logger.error("broker did not acknowledge every message within %.0f s; closed anyway", timeout)


class ListSink(Sink):
    """Collects payloads in memory (backtests, tests)."""

    def __init__(self) -> None:
        self.items: list[tuple[bytes | None, bytes]] = []

    def send_bytes(self, value: bytes, key: bytes | None) -> None:
        self.items.append((key, value))


class Connector(ABC):
    """A source of raw events.

    Rules: :meth:`events` must be idempotent on ``event_id`` (the same input yields the same
    ids, so a re-run is deduplicated downstream), must not block forever, and yields records,
    dicts in the record shape, or :class:`Malformed` for input it cannot read.
    """

    name: str = "connector.v1"

    @abstractmethod
    def events(self) -> Iterator[BaseModel | dict[str, Any] | Malformed]: ...

    def run(self, sink: Sink) -> int:
        n = 0
        for ev in self.events():
            sink.send_any(ev)
            n += 1
        sink.flush()
        return n
