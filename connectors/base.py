"""Connector base: outside sources -> records on the raw topic (confluent-kafka).

All raw kinds go to one topic, ``<prefix>.raw``: one validated entry point, the record's ``kind``
discriminates. Connectors never drop bad input: a row that cannot become a valid record is sent
as it is (with an ``_error`` field where it was JSON), so the pipeline dead-letters it with the
reason and nothing is lost silently.

Acknowledgement discipline: a record counts as delivered only when the broker acknowledged it
(acks=all). :meth:`Sink.flush` raises :class:`DeliveryError` when any record handed to the sink
since the previous flush was not acknowledged, so no caller can claim it as accepted.

The contract every (pull) connector follows is :class:`Connector`; :mod:`connectors.registry`
finds them by ``kind``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel

from contract.records import dumps
from infra.kafka import Producer

__all__ = ["RAW", "Connector", "DeliveryError", "Item", "KafkaSink", "ListSink", "Malformed", "RunStats", "Sink"]

logger = logging.getLogger(__name__)

RAW = "raw"


@dataclass(frozen=True, slots=True)
class Malformed:
    """Input that cannot become a record: sent to the raw topic byte for byte, so the pipeline
    dead-letters it with the reason (``reason`` here is the connector's own note)."""

    payload: bytes
    reason: str


Item = BaseModel | dict[str, Any] | Malformed


class DeliveryError(Exception):
    """Records handed to a sink were not acknowledged by the broker (nothing may be claimed)."""

    def __init__(self, failed: int, total: int, address: str, cause: str) -> None:
        self.failed, self.total, self.address, self.cause = failed, total, address, cause
        self.stats: RunStats | None = None  # set by Connector.run
        super().__init__(f"{failed} of {total} records were not acknowledged by Kafka at {address}: {cause}")


class Sink(ABC):
    """Where a connector's events go. ``send_any`` accepts records, dicts and :class:`Malformed`."""

    sent = 0
    invalid = 0

    @abstractmethod
    def send_bytes(self, value: bytes, key: bytes | None) -> None: ...

    @property
    def failing(self) -> bool:
        """True once a record since the last flush is known to be lost: stop sending, flush, report."""
        return False

    def flush(self, timeout: float | None = None) -> None:  # noqa: B027 - optional hook
        """Wait for every record since the last flush; raise :class:`DeliveryError` if any was lost."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @staticmethod
    def key_of(item: dict[str, Any] | BaseModel) -> bytes | None:
        d = item if isinstance(item, dict) else item.model_dump()
        k = d.get("brand") or d.get("product") or d.get("event_id")
        return str(k).encode() if k else None

    def send_any(self, item: Item) -> None:
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
    """Produces to one topic through :class:`infra.kafka.Producer` (confluent-kafka, acks=all,
    small linger); every send is checked.

    ``producer`` overrides the producer settings (e.g. ``delivery_timeout_ms``, ``max_block_ms``).
    """

    def __init__(self, bootstrap: str, topic: str, **producer: Any) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.acked = 0
        self.failed = 0
        self.producer = Producer(bootstrap, topic, **producer)

    @property
    def failing(self) -> bool:
        return self.producer.failing

    def send_bytes(self, value: bytes, key: bytes | None) -> None:
        self.producer.send(value, key)

    def probe(self, timeout: float = 5.0) -> None:
        """Raise unless the broker answers within ``timeout`` s (blocking: run it in a thread)."""
        self.producer.probe(timeout)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until the broker answered for every record since the last flush (``timeout`` s at
        most); raise :class:`DeliveryError` naming the broker if any was not acknowledged."""
        sent, acked, error = self.producer.flush(timeout)
        self.acked += acked
        self.failed += sent - acked
        if acked < sent:
            raise DeliveryError(sent - acked, sent, self.bootstrap, error or "not acknowledged")

    def close(self, timeout: float = 30.0) -> None:
        """Flush and close; gives up after ``timeout`` s (a broker that is gone must not hang exit)."""
        w = self.producer.close(timeout)
        if w.sent > w.acked:  # sent after the last flush and not acknowledged: say so, never silently
            logger.error(
                "%d of %d records sent since the last flush were not acknowledged by Kafka at %s: %s",
                w.sent - w.acked,
                w.sent,
                self.bootstrap,
                w.error or "no answer before close",
            )


class ListSink(Sink):
    """Collects payloads in memory (backtests, tests)."""

    def __init__(self) -> None:
        self.items: list[tuple[bytes | None, bytes]] = []

    def send_bytes(self, value: bytes, key: bytes | None) -> None:
        self.items.append((key, value))


@dataclass
class RunStats:
    """What one :meth:`Connector.run` did. ``failed``: records the broker did not acknowledge."""

    read: int = 0
    sent: int = 0
    invalid: int = 0
    failed: int = 0
    seconds: float = 0.0
    first_event: str | None = None
    last_event: str | None = None

    @property
    def events_per_s(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "events_per_s": round(self.events_per_s, 1)}

    def count(self, item: Item) -> None:
        self.read += 1
        if isinstance(item, Malformed):
            self.invalid += 1
            return
        when = item.get("occurred_at") if isinstance(item, dict) else getattr(item, "occurred_at", None)
        if when is not None:
            when = when.isoformat() if hasattr(when, "isoformat") else str(when)
            # the earliest and the latest event time, whatever the file's order
            if self.first_event is None or _before(when, self.first_event):
                self.first_event = when
            if self.last_event is None or _before(self.last_event, when):
                self.last_event = when


def _before(a: str, b: str) -> bool:
    """``a`` is an earlier event time than ``b`` (ISO 8601, any offset; text order otherwise)."""
    try:
        return datetime.fromisoformat(a) < datetime.fromisoformat(b)
    except (TypeError, ValueError):
        return a < b


class Connector(ABC):
    """The contract of a source of raw events (one file per source, registered by ``kind``).

    - ``kind``: the registry key (``repmon`` names the source by it); ``name``: kind + contract
      version, e.g. ``replay.v1``;
    - :meth:`start` opens what the source needs (sessions, cursors); :meth:`stop` releases it and
      is always called, also after an error;
    - :meth:`stream` yields records, dicts in the record shape, or :class:`Malformed` for input it
      cannot read; never drops input; is idempotent on ``event_id`` (the same input yields the
      same ids, so a re-run is deduplicated downstream) and never blocks forever;
    - :meth:`run` is the one way to produce: through a :class:`Sink`, stopping at the first lost
      record, and raising :class:`DeliveryError` (with the stats) unless every record was
      acknowledged.
    """

    kind: ClassVar[str] = ""
    name: ClassVar[str] = "connector.v1"
    flush_every: ClassVar[int] = 10_000  # check acknowledgements at least this often (endless streams)
    progress: bool = False
    total: int | None = None  # expected number of items, for the progress bar

    def start(self) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    def stream(self) -> Iterator[Item]: ...

    def stop(self) -> None:  # noqa: B027 - optional hook
        pass

    def run(self, sink: Sink) -> RunStats:
        stats = RunStats()
        t0 = time.monotonic()
        self.start()
        try:
            with self._progress(stats, t0) as tick:
                for item in self.stream():
                    stats.count(item)
                    sink.send_any(item)
                    stats.sent += 1
                    if sink.failing:
                        break
                    if stats.sent % self.flush_every == 0:
                        sink.flush()
                    tick()
                sink.flush()
        except DeliveryError as exc:
            stats.failed = exc.failed
            exc.stats = stats
            raise
        finally:
            stats.seconds = round(time.monotonic() - t0, 3)
            self.stop()
        return stats

    @contextlib.contextmanager
    def _progress(self, stats: RunStats, t0: float) -> Iterator[Callable[[], None]]:
        if not self.progress:
            yield lambda: None
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        prog = Progress(
            TextColumn(self.kind or self.name),
            BarColumn(),
            TextColumn("{task.completed} events"),
            TextColumn("{task.fields[rate]:.0f}/s"),
            TextColumn("invalid {task.fields[invalid]}"),
            TimeElapsedColumn(),
            transient=False,
        )
        task = prog.add_task(self.kind, total=self.total, rate=0.0, invalid=0)

        def update() -> None:
            el = time.monotonic() - t0
            prog.update(task, completed=stats.read, rate=stats.read / el if el else 0, invalid=stats.invalid)

        def tick() -> None:
            if stats.read % 500 == 0:
                update()

        prog.start()
        try:
            yield tick
        finally:
            update()
            prog.stop()
