"""The worker's agents and timers driven in process: plain messages in, plain messages out.

No broker and no Redis: the components are built with ``memory=True`` and the outbox is a list.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from connectors.base import Malformed
from connectors.demo import generate
from contract.records import DeadLetter, EnrichedEvent, Incident, Signal
from infra.settings import load_settings
from models.detect import Verdict
from streams.compose import Components, build
from streams.detection import DetectionEngine
from streams.metrics import Metrics
from streams.runtime import Message, PublishError, Runtime
from streams.state import MemoryState
from streams.windows import MemoryWindows

START = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
MENTION = {
    "kind": "mention",
    "event_id": "x:1",
    "source": "x",
    "text": "Northwind lost my bag",
    "occurred_at": "2026-11-02T06:00:05+00:00",
}


class ListOutbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, key, value))

    async def send_many(self, records: Sequence[tuple[str, bytes | None, bytes]]) -> list[BaseException | None]:
        self.sent.extend(records)
        return [None] * len(records)

    def values(self, topic: str) -> list[bytes]:
        return [v for t, _, v in self.sent if t == topic]


@pytest.fixture(scope="module")
def components() -> Components:
    settings = load_settings(None, detect={"warmup_buckets": 30}, windows={"backfill_since": START})
    c = build(settings, memory=True)
    c.stage.load_models()
    return c


def fresh(c: Components) -> Components:
    """New, empty windows and state around the already loaded models."""
    s = c.settings
    windows, state = MemoryWindows(s), MemoryState()
    detection = DetectionEngine(s, windows, state, model_version=lambda: c.stage.model_version)
    return dataclasses.replace(c, windows=windows, state=state, detection=detection, metrics=Metrics())


def as_message(item: dict[str, object] | Malformed, offset: int) -> Message:
    value = item.payload if isinstance(item, Malformed) else orjson.dumps(item)
    return Message(value=value, key=b"k", topic="repmon.raw", partition=offset % 2, offset=offset)


async def test_raw_batch_is_enriched_counted_and_bad_input_dead_lettered(components: Components) -> None:
    out = ListOutbox()
    rt = Runtime(fresh(components), out)
    msgs = [
        Message(
            value=orjson.dumps(
                {
                    "kind": "mention",
                    "event_id": "x:1",
                    "source": "x",
                    "text": "Northwind lost my bag",
                    "occurred_at": "2026-11-02T06:00:05+00:00",
                }
            ),
            partition=0,
            offset=1,
        ),
        Message(value=b"\xff\xfe not json", key=None, topic="repmon.raw", partition=1, offset=7),
        Message(value=orjson.dumps({"kind": "review", "rating": 9}), partition=0, offset=2),
    ]
    await rt.on_raw(msgs)
    enriched = [EnrichedEvent.model_validate_json(v) for v in out.values("enriched")]
    assert [e.event_id for e in enriched] == ["x:1"] and enriched[0].entity == "northwind"
    dead = [DeadLetter.model_validate_json(v) for v in out.values("deadletter")]
    assert sorted((d.stage, d.partition, d.offset) for d in dead) == [("validate", 0, 2), ("validate", 1, 7)]
    assert all(d.reason for d in dead)
    assert (await rt.c.windows.stats())["counted"] == 1


async def test_a_generated_crisis_opens_one_incident_through_the_detect_timer(components: Components) -> None:
    out = ListOutbox()
    rt = Runtime(fresh(components), out)
    items = generate(components.settings.entities, start=START, minutes=150, crisis_at_minute=110)
    for i in range(0, len(items), 256):
        await rt.on_raw([as_message(x, i + j) for j, x in enumerate(items[i : i + 256])])
        while await rt.detect_tick() > 0:
            pass
    incidents = [Incident.model_validate_json(v) for v in out.values("incidents")]
    opened = [i for i in incidents if i.status == "open"]
    # the brand, and its app the crisis is about; nobody else
    assert {i.entity for i in opened} <= {"northwind", "northwind/go app"}, [i.title for i in incidents]
    assert [i.entity for i in opened].count("northwind") == 1
    assert START.timestamp() + 110 * 60 <= opened[0].opened_at.timestamp() <= START.timestamp() + 115 * 60
    ids = [Signal.model_validate_json(v).signal_id for v in out.values("signals")]
    assert ids and len(ids) == len(set(ids))  # the early and the closed verdict on a bucket are two signals
    v = Verdict("volume", 90.0, 20.0, 4.0, 17.0, 90, "critical", "d")
    early, closed = (rt.c.detection._signal("northwind", 600, v, early=x) for x in (True, False))
    assert early.signal_id != closed.signal_id
    assert rt.metrics.buckets._value.get() > 100


class RefusesSome(ListOutbox):
    """A broker that refuses every third incident message once (and takes it when sent again)."""

    def __init__(self) -> None:
        super().__init__()
        self.tries = 0
        self.refused: set[tuple[str, int]] = set()

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        if topic == "incidents":
            inc = Incident.model_validate_json(value)
            if (inc.incident_id, inc.seq) not in self.refused:
                self.tries += 1
                if self.tries % 3 == 0:
                    self.refused.add((inc.incident_id, inc.seq))
                    raise PublishError("incidents: KafkaTimeoutError: no acknowledgement")
        await super().send(topic, key, value)


async def test_a_detect_tick_the_broker_refused_is_judged_again_with_the_same_messages(
    components: Components,
) -> None:
    """A signal or incident message the broker did not take leaves the tick unsaved: the next tick
    judges the same buckets again and sends the same messages (same ids), none lost, none new."""
    items = generate(components.settings.entities, start=START, minutes=150, crisis_at_minute=110)

    async def run(out: ListOutbox) -> dict[tuple[str, int], dict[str, Any]]:
        rt = Runtime(fresh(components), out)
        # the model as it is for both runs: learning inline, the second run would score with
        # what the first taught it (the reviews go to the labels topic instead, as on a worker)
        rt.c.stage.learn_inline = False
        for i in range(0, len(items), 256):
            await rt.on_raw([as_message(x, i + j) for j, x in enumerate(items[i : i + 256])])
            while True:  # until a tick judges nothing and nothing was refused in it
                refused = len(getattr(out, "refused", ()))
                if await rt.detect_tick() == 0 and len(getattr(out, "refused", ())) == refused:
                    break
        sent: dict[tuple[str, int], dict[str, Any]] = {}
        for v in out.values("incidents"):
            x = Incident.model_validate_json(v).model_dump(
                exclude={"emitted_at": True, "signals": {"__all__": {"emitted_at"}}}
            )
            # a message sent again is the same message (only its emission time differs)
            assert sent.setdefault((x["incident_id"], x["seq"]), x) == x
        return sent

    try:
        clean = await run(ListOutbox())
        faulty = RefusesSome()
        assert await run(faulty) == clean and clean
    finally:
        components.stage.learn_inline = True
    assert faulty.refused


async def test_labels_teach_the_model_and_bad_labels_are_dead_lettered(components: Components) -> None:
    out = ListOutbox()
    rt = Runtime(fresh(components), out)
    assert rt.c.stage.sentiment is not None
    before = rt.c.stage.sentiment.n_learned
    good = [Message(value=orjson.dumps({"text": f"refund took {i} weeks", "label": "negative"})) for i in range(40)]
    await rt.on_labels([*good, Message(value=b'{"text": "x", "label": "meh"}', offset=5)])
    assert rt.c.stage.sentiment.n_learned == before + 40
    dead = [DeadLetter.model_validate_json(v) for v in out.values("deadletter")]
    assert len(dead) == 1 and "label must be" in dead[0].reason


async def test_an_undecodable_incident_is_dead_lettered_not_dropped(components: Components) -> None:
    out = ListOutbox()
    rt = Runtime(fresh(components), out)
    await rt.on_incident(Message(value=b'{"incident_id": 3}', topic="repmon.incidents", offset=9))
    dead = [DeadLetter.model_validate_json(v) for v in out.values("deadletter")]
    assert [(d.stage, d.offset) for d in dead] == [("dispatch", 9)]


class CountingState(MemoryState):
    """A MemoryState that counts the entity-state reads and writes the engine makes."""

    def __init__(self) -> None:
        super().__init__()
        self.saves = 0
        self.reads: Counter[tuple[str, str]] = Counter()  # (state name, entity) -> times read

    async def load(self, name: str, entities: object) -> dict[str, object]:  # type: ignore[override]
        ents = list(entities)  # type: ignore[call-overload]
        self.reads.update((name, e) for e in ents)
        return await super().load(name, ents)

    async def save(self, states: object, pointers: object) -> None:  # type: ignore[override]
        self.saves += 1
        await super().save(states, pointers)  # type: ignore[arg-type]


async def test_detection_state_stays_in_memory_while_this_engine_wrote_it_last(components: Components) -> None:
    s = components.settings
    windows, state = MemoryWindows(s), CountingState()
    c = dataclasses.replace(
        components, windows=windows, state=state, detection=DetectionEngine(s, windows, state), metrics=Metrics()
    )
    rt = Runtime(c, ListOutbox())
    items = generate(s.entities, start=START, minutes=60, crisis_at_minute=10_000)
    await rt.on_raw([as_message(x, i) for i, x in enumerate(items)])
    assert await rt.detect_tick() > 0
    # each entity's detector and thread read once (a detector when a bucket first needs it),
    # everything written once with the pointer
    reads, saves = Counter(state.reads), state.saves
    assert saves == 1 and reads and max(reads.values()) == 1, reads
    assert {e for n, e in reads if n == "det"} == {e.key for e in s.entities}
    # ticks with no bucket to close read and write nothing more (they ran twice a second on every entity)
    for _ in range(5):
        assert await rt.detect_tick() == 0
    assert (state.reads, state.saves) == (reads, saves)
    # another engine (a new leader) saved since: this one reads the state again, not its own copy
    await state.save_blob("det:token", {"token": "written-by-another-leader"})
    later = generate(s.entities, start=START.replace(hour=7), minutes=5, crisis_at_minute=10_000)
    await rt.on_raw([as_message(x, 10_000 + i) for i, x in enumerate(later)])
    assert await rt.detect_tick() > 0
    again = state.reads - reads
    assert state.saves == saves + 1 and again and max(again.values()) == 1, again
    assert {e for n, e in again if n == "inc"} == {e.key for e in s.entities}


async def test_training_examples_on_the_labels_topic_carry_the_redacted_text(components: Components) -> None:
    c = fresh(components)
    c.stage.learn_inline = False  # as in a worker: the fleet's learner learns from the labels topic
    out = ListOutbox()
    try:
        review = {
            "kind": "review",
            "event_id": "r:1",
            "source": "x",
            "brand": "Northwind",
            "rating": 1,
            "text": "Lost my bag, mail me at jane.doe@example.com or call +1 415 555 1234",
            "occurred_at": "2026-11-02T06:00:05+00:00",
        }
        await Runtime(c, out).on_raw([as_message(review, 0)])
    finally:
        c.stage.learn_inline = components.stage.learn_inline
    [example] = [orjson.loads(v) for v in out.values("labels")]
    assert example["label"] == "negative" and "[EMAIL]" in example["text"] and "[PHONE]" in example["text"]
    assert "jane.doe" not in example["text"] and "555" not in example["text"]
