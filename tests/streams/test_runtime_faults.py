"""No input stops the worker, nothing leaks through the dead letters, an outage is waited out.

Driven in process (memory components, a list outbox); the same paths run in the worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from redis.exceptions import ConnectionError, ResponseError

from contract.records import DeadLetter, EnrichedEvent
from infra.settings import load_settings
from models.privacy import pseudonymize
from streams.compose import Components, build
from streams.runtime import DEAD_PAYLOAD_CHARS, Message, RecordRefused, Runtime
from streams.windows import MemoryWindows, as_doc

from .test_runtime import ListOutbox, fresh


def mention(i: int, when: datetime | None = None, **extra: object) -> bytes:
    when = when or datetime.now(UTC) - timedelta(minutes=5)
    return orjson.dumps(
        {
            "kind": "mention",
            "event_id": f"f:{i}",
            "source": "x",
            "text": f"Northwind lost my bag again {i}",
            "occurred_at": when.isoformat(),
            **extra,
        }
    )


@pytest.fixture(scope="module")
def components() -> Components:
    c = build(load_settings(None), memory=True)
    c.stage.load_models()
    return c


def dead(out: ListOutbox) -> list[DeadLetter]:
    return [DeadLetter.model_validate_json(v) for v in out.values("deadletter")]


async def test_a_megabyte_message_is_dead_lettered_small_and_the_next_one_goes_through(components: Components) -> None:
    out = ListOutbox()
    rt = Runtime(fresh(components), out)
    huge = b"\xff" * 1_000_000
    quotes = orjson.dumps({"kind": "mention", "text": '"' * 500_000})
    await rt.on_raw([Message(huge, offset=1), Message(quotes, offset=2), Message(mention(3), offset=3)])
    letters = dead(out)
    assert [d.offset for d in letters] == [1, 2]
    for d, original in zip(letters, [huge, quotes], strict=True):
        assert d.payload_truncated and d.payload_bytes == len(original)
        assert len(d.payload) <= DEAD_PAYLOAD_CHARS
        assert len(out.values("deadletter")[letters.index(d)]) < 200_000  # far below the broker's 1 MB
        assert d.payload_sha256 is not None and len(d.payload_sha256) == 64
    assert [EnrichedEvent.model_validate_json(v).event_id for v in out.values("enriched")] == ["f:3"]


async def test_non_finite_numbers_are_refused_at_validation(components: Components) -> None:
    out = ListOutbox()
    rt = Runtime(fresh(components), out)
    purchase = (
        b'{"kind": "purchase", "event_id": "p:1", "source": "shop", "order_id": "o1", "status": "paid",'
        b' "amount": 1e999, "brand": "Northwind", "occurred_at": "' + datetime.now(UTC).isoformat().encode() + b'"}'
    )
    await rt.on_raw([Message(purchase, offset=4)])
    [d] = dead(out)
    assert d.stage == "validate" and "amount" in d.reason and "finite" in d.reason
    assert (await rt.c.windows.stats()) == {"counted": 0, "duplicates": 0}


@pytest.mark.parametrize(
    ("when", "words"),
    [
        (datetime(1970, 1, 1, tzinfo=UTC), "days old"),
        (datetime(1, 1, 1, tzinfo=UTC), "days old"),
        (datetime(2100, 1, 1, tzinfo=UTC), "ahead of the wall clock"),
        (datetime(9999, 12, 31, tzinfo=UTC), "ahead of the wall clock"),
    ],
)
async def test_event_times_outside_the_horizon_never_reach_a_window(
    components: Components, when: datetime, words: str
) -> None:
    out = ListOutbox()
    rt = Runtime(fresh(components), out)
    await rt.on_raw([Message(mention(1, when), offset=1), Message(mention(2), offset=2)])
    [d] = dead(out)
    assert d.stage == "horizon" and words in d.reason
    windows = rt.c.windows
    assert isinstance(windows, MemoryWindows)
    assert windows.first is not None and abs(windows.first - (datetime.now(UTC).timestamp() - 300)) < 120
    assert await windows.watermark() == windows.first  # only the good event moved it


async def test_backfill_mode_accepts_history_from_its_start(components: Components) -> None:
    s = components.settings.model_copy(
        update={
            "windows": components.settings.windows.model_copy(
                update={"backfill_since": datetime(2015, 1, 1, tzinfo=UTC)}
            )
        }
    )
    out = ListOutbox()
    rt = Runtime(dataclasses.replace(fresh(components), settings=s), out)
    await rt.on_raw(
        [Message(mention(1, datetime(2015, 2, 1, tzinfo=UTC))), Message(mention(2, datetime(2014, 1, 1, tzinfo=UTC)))]
    )
    assert [EnrichedEvent.model_validate_json(v).event_id for v in out.values("enriched")] == ["f:1"]
    assert "backfill_since" in dead(out)[0].reason


async def test_dead_letters_redact_what_enrichment_redacts(components: Components) -> None:
    out = ListOutbox()
    rt = Runtime(fresh(components), out)
    bad = orjson.dumps(
        {
            "kind": "mention",
            "text": "Hi Maria, call +1 415 555 1234 or mail jane.doe@example.com. Regards, João Silva",
            "author": "Jane Q. Doe",
            "reviewer": {"display_name": "Ann Lee"},
            "session_token": "tok_9f8e7d secret",
            "card": "4111 1111 1111 1111",
            "url": "https://shop.example/o?session=abc&email=j%40x.io",
        }
    )
    await rt.on_raw([Message(bad, key=b"northwind", offset=8)])
    [d] = dead(out)
    for secret in ("555 1234", "jane.doe", "tok_9f8e7d", "secret", "4111 1111", "session=abc", "Maria", "João"):
        assert secret not in d.payload, secret
    for name in ("Jane", "Doe", "Ann Lee"):
        assert name not in d.payload, name
    assert "[EMAIL]" in d.payload and "[PHONE]" in d.payload and "Hi [PERSON]" in d.payload
    # the author is keyed as enrichment keys authors: the dead letter ties to their other events
    kept = orjson.loads(d.payload)
    assert kept["author"] == pseudonymize("Jane Q. Doe", components.stage.author_secret)


async def test_enriched_urls_lose_their_query(components: Components) -> None:
    out = ListOutbox()
    rt = Runtime(fresh(components), out)
    await rt.on_raw([Message(mention(1, url="https://t.example/s/1?session=abc&email=j%40x.io"))])
    [ev] = [EnrichedEvent.model_validate_json(v) for v in out.values("enriched")]
    assert ev.url == "https://t.example/s/1?[REDACTED]"


class FlakyWindows(MemoryWindows):
    """Redis going away for ``outage`` calls, then a record the server refuses (a script error)."""

    def __init__(self, c: Components, outage: int, poison: str | None = None) -> None:
        super().__init__(c.settings)
        self.outage, self.poison, self.calls = outage, poison, 0

    async def add_batch(self, items, **kwargs):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.outage > 0:
            self.outage -= 1
            raise ConnectionError("Connection refused")
        if self.poison and any(as_doc(ev)["event_id"] == self.poison for ev, _ in items):
            raise ResponseError("ERR Error running script: value is not a valid float")
        return await super().add_batch(items, **kwargs)


async def test_a_redis_outage_holds_the_batch_and_counts_it_once_after(components: Components) -> None:
    out = ListOutbox()
    c = fresh(components)
    windows = FlakyWindows(c, outage=3)
    rt = Runtime(dataclasses.replace(c, windows=windows), out)
    await rt.on_raw([Message(mention(i), offset=i) for i in range(5)])
    assert windows.calls == 4 and (await windows.stats())["counted"] == 5
    assert len(out.values("enriched")) == 5 and not out.values("deadletter")
    assert rt.metrics.dependency_errors.labels("redis")._value.get() == 3
    assert rt.metrics.dependency_up.labels("redis")._value.get() == 1


async def test_a_record_the_store_refuses_is_dead_lettered_and_the_rest_counted(components: Components) -> None:
    out = ListOutbox()
    c = fresh(components)
    windows = FlakyWindows(c, outage=0, poison="f:2")
    rt = Runtime(dataclasses.replace(c, windows=windows), out)
    await rt.on_raw([Message(mention(i), offset=i) for i in range(4)])
    assert [d.offset for d in dead(out)] == [2] and dead(out)[0].stage == "count"
    assert sorted(EnrichedEvent.model_validate_json(v).event_id for v in out.values("enriched")) == [
        "f:0",
        "f:1",
        "f:3",
    ]


class BrokerDown(ListOutbox):
    """A broker that acknowledges nothing for its first ``down`` calls, and refuses an enriched
    record holding ``too_large`` for good."""

    def __init__(self, down: int, too_large: bytes = b"\x00") -> None:
        super().__init__()
        self.down = down
        self.calls = 0
        self.too_large = too_large

    async def send_many(self, records: Sequence[tuple[str, bytes | None, bytes]]) -> list[BaseException | None]:
        self.calls += 1
        if self.calls <= self.down:
            return [TimeoutError("KafkaTimeoutError: batch expired") for _ in records]
        out: list[BaseException | None] = []
        for r in records:
            if r[0] == "enriched" and self.too_large in r[2]:
                out.append(RecordRefused("MessageSizeTooLargeError: over max_request_size"))
            else:
                self.sent.append(r)
                out.append(None)
        return out


async def test_a_broker_outage_holds_the_batch_and_publishes_it_once_back(components: Components) -> None:
    out = BrokerDown(down=3)
    rt = Runtime(fresh(components), out)
    await rt.on_raw([Message(mention(i), key=b"northwind", offset=i) for i in range(4)])
    # nothing dead-lettered for an outage: every record out once, after the broker came back
    assert sorted(EnrichedEvent.model_validate_json(v).event_id for v in out.values("enriched")) == [
        f"f:{i}" for i in range(4)
    ]
    assert dead(out) == [] and out.calls == 4
    assert rt.metrics.dependency_errors.labels("kafka")._value.get() == 3
    assert rt.metrics.dependency_up.labels("kafka")._value.get() == 1
    assert rt.done == {0: 4}


async def test_a_record_the_broker_refuses_for_good_is_dead_lettered_not_retried(components: Components) -> None:
    out = BrokerDown(down=0, too_large=b"again 1")
    rt = Runtime(fresh(components), out)
    await rt.on_raw([Message(mention(i), key=b"northwind", offset=i) for i in range(3)])
    assert sorted(EnrichedEvent.model_validate_json(v).event_id for v in out.values("enriched")) == ["f:0", "f:2"]
    [d] = dead(out)
    assert d.stage == "publish" and d.offset == 1 and "MessageSizeTooLarge" in d.reason
    assert out.calls == 2  # the batch, then its dead letter: the refused record is not sent again


async def test_a_dead_letter_during_a_broker_outage_goes_out_once_the_broker_is_back(
    components: Components,
) -> None:
    out = BrokerDown(down=2)
    rt = Runtime(fresh(components), out)
    await rt.on_incident(Message(b"not an incident", key=b"northwind", offset=3))
    [d] = dead(out)
    assert d.stage == "dispatch" and d.offset == 3 and out.calls == 3
    assert rt.metrics.dependency_errors.labels("kafka")._value.get() == 2


async def test_a_detect_tick_during_an_outage_is_skipped_not_fatal(components: Components) -> None:
    c = fresh(components)

    class Down(MemoryWindows):
        async def watermark(self, *, high: bool = False, ends: Mapping[int, int] | None = None) -> float | None:
            raise ConnectionError("Connection reset by peer")

    c.detection.windows = Down(c.settings)
    rt = Runtime(c, ListOutbox())
    assert await rt.detect_tick() == 0
    assert rt.metrics.dependency_up.labels("redis")._value.get() == 0


async def test_a_dependency_probe_reports_an_outage_and_the_recovery(components: Components) -> None:
    rt = Runtime(fresh(components), ListOutbox())
    up = rt.metrics.dependency_up.labels("kafka")
    errors = rt.metrics.dependency_errors.labels("kafka")

    async def refused() -> None:
        raise ConnectionRefusedError("127.0.0.1:9092")

    async def hangs() -> None:
        await asyncio.sleep(60)

    async def answers() -> None:
        return None

    assert await rt.probe("kafka", refused) is False and up._value.get() == 0 and errors._value.get() == 1
    assert await rt.probe("kafka", hangs, timeout=0.05) is False and errors._value.get() == 2
    assert await rt.probe("kafka", answers) is True and up._value.get() == 1 and errors._value.get() == 2


async def test_an_event_whose_horizon_passes_before_it_is_counted_is_dead_lettered(components: Components) -> None:
    """Validated inside the live horizon, but counted only after it (a long outage, a backlog):
    the windows refuse it, as its dedupe claim may be gone, and it goes to the dead letters."""
    live = components.settings.model_copy(
        update={"windows": components.settings.windows.model_copy(update={"backfill_since": None})}
    )
    c = dataclasses.replace(fresh(components), settings=live)
    horizon = live.windows.max_age_seconds or live.windows.bucket_retention_seconds
    windows = MemoryWindows(live, clock=lambda: time.time() + horizon - 600)  # 10 min left at counting
    rt = Runtime(dataclasses.replace(c, windows=windows), out := ListOutbox())
    now = datetime.now(UTC)
    await rt.on_raw([Message(mention(1, now - timedelta(minutes=15)), offset=1), Message(mention(2, now), offset=2)])
    [d] = dead(out)
    assert d.stage == "horizon" and d.offset == 1 and "before the event could be counted" in d.reason
    assert [EnrichedEvent.model_validate_json(v).event_id for v in out.values("enriched")] == ["f:2"]
    assert (await windows.stats())["counted"] == 1 and rt.done[0] == 3
