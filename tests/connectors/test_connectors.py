"""The connector contract, the registry and the one mapping code (replay and webhook share it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from connectors import registry
from connectors.base import Connector, DeliveryError, Item, ListSink, Malformed, Sink
from connectors.mapping import Mapping, TimeSpec, to_item, to_record
from connectors.replay import Replayer
from connectors.runtime import Runtime

GOOD = {
    "kind": "review",
    "event_id": "shop:1",
    "source": "shop",
    "occurred_at": "2026-11-20T10:00:00+00:00",
    "rating": 2,
    "text": "slow",
}


def test_builtin_kinds_are_registered_and_unknown_kinds_name_the_known_ones() -> None:
    kinds = registry.list_kinds()
    assert {"replay", "demo"} <= set(kinds) and kinds == sorted(kinds)
    assert registry.get("replay") is Replayer
    with pytest.raises(ValueError, match=r"known kinds: .*replay"):
        registry.get("carrier-pigeon")


def test_register_refuses_a_taken_kind_a_bad_kind_and_non_connectors() -> None:
    class Twin(Connector):
        kind = "replay"

        def stream(self) -> Iterator[Item]:
            yield from ()

    with pytest.raises(ValueError, match=r"taken by connectors\.replay\.Replayer"):
        registry.register(Twin)
    Twin.kind = ""
    with pytest.raises(ValueError, match="kind must be"):
        registry.register(Twin)
    with pytest.raises(TypeError):
        registry.register(dict)  # type: ignore[type-var]


class Fixed(Connector):
    kind = "fixed-test"
    name = "fixed-test.v1"

    def __init__(self, items: list[Item]) -> None:
        self.items = items
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    def stream(self) -> Iterator[Item]:
        yield from self.items

    def stop(self) -> None:
        self.calls.append("stop")


def test_a_registered_connector_runs_through_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_KINDS", dict(registry._KINDS))
    registry.register(Fixed)
    conn = registry.create("fixed-test", items=[GOOD, Malformed(b"{oops", "unparsable")])
    sink = ListSink()
    stats = conn.run(sink)
    assert conn.calls == ["start", "stop"]  # type: ignore[attr-defined]
    assert (stats.read, stats.sent, stats.invalid, stats.failed) == (2, 2, 1, 0)
    assert stats.first_event == stats.last_event == GOOD["occurred_at"]
    assert [v for _, v in sink.items] == [orjson.dumps(GOOD), b"{oops"]


def test_run_stats_span_the_earliest_to_the_latest_event_whatever_the_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_KINDS", dict(registry._KINDS))
    registry.register(Fixed)
    times = ["2026-11-20T10:00:00+00:00", "2026-11-20T11:00:00+02:00", "2026-11-19T23:00:00-03:00"]
    items: list[Item] = [{**GOOD, "event_id": f"shop:{i}", "occurred_at": t} for i, t in enumerate(times)]
    stats = registry.create("fixed-test", items=items).run(ListSink())
    # in UTC: 10:00, 09:00 (later as text, earlier in time) and 02:00, all on the 20th
    assert (stats.first_event, stats.last_event) == (times[2], times[0])


class Lossy(Sink):
    """Loses every record from the third on, as a broker that went away would."""

    def __init__(self) -> None:
        self.n = 0

    def send_bytes(self, value: bytes, key: bytes | None) -> None:
        self.n += 1

    @property
    def failing(self) -> bool:
        return self.n >= 3

    def flush(self, timeout: float | None = None) -> None:
        if self.n >= 3:
            raise DeliveryError(self.n - 2, self.n, "127.0.0.1:9", "gone")


def test_run_stops_at_the_first_lost_record_and_raises_with_the_stats() -> None:
    conn = Fixed([GOOD] * 10)
    with pytest.raises(DeliveryError, match=r"1 of 3 records were not acknowledged by Kafka at 127.0.0.1:9") as exc:
        conn.run(Lossy())
    assert exc.value.stats is not None and exc.value.stats.read == 3 and exc.value.stats.failed == 1
    assert conn.calls == ["start", "stop"]  # stop runs after a failure too


MAPPING = Mapping(
    kind="purchase",
    source="shop",
    columns={"native_id": "id", "occurred_at": "when", "currency": "cur"},
    time=TimeSpec(format="%d/%m/%Y %H:%M", timezone="Europe/London"),
    values={"currency": {"pound": "GBP"}},
    derived={"status": {"column": "id", "prefix_map": {"C": "cancelled"}, "default": "placed"}},  # type: ignore[dict-item]
    constants={"customer": "c-1"},
)


def test_mapping_fields_derived_values_time_and_event_id() -> None:
    rec = to_record(MAPPING, {"id": "C9", "when": "01/07/2020 10:00", "cur": "pound"})
    assert rec == {
        "kind": "purchase",
        "source": "shop",
        "customer": "c-1",
        "occurred_at": "2020-07-01T09:00:00+00:00",
        "currency": "GBP",
        "status": "cancelled",
        "event_id": "shop:C9",
    }
    # no native id: a content hash, the same for the same row
    a = to_record(MAPPING, {"when": "01/07/2020 10:00"})["event_id"]
    assert a == to_record(MAPPING, {"when": "01/07/2020 10:00"})["event_id"] != "shop:None"


@pytest.mark.parametrize(
    ("row", "mapping", "reason"),
    [
        ({"id": "1", "when": "yesterday"}, MAPPING, "does not match format"),
        ({"kind": "review", "rating": 9}, None, "rating"),
        (["not", "an", "object"], None, "not a JSON object"),
    ],
)
def test_rows_that_cannot_be_records_keep_their_content_and_reason(
    row: Any, mapping: Mapping | None, reason: str
) -> None:
    item = to_item(row, mapping)
    assert isinstance(item, Malformed) and reason in item.reason
    if isinstance(row, dict):
        kept = orjson.loads(item.payload)
        assert {k: kept[k] for k in row} == row and kept["_error"]


def test_a_valid_record_passes_unmapped() -> None:
    assert to_item(dict(GOOD)) == GOOD


class Counting(ListSink):
    def __init__(self) -> None:
        super().__init__()
        self.flushes: list[int] = []

    def flush(self, timeout: float | None = None) -> None:
        self.flushes.append(len(self.items))


def test_run_checks_acknowledgements_periodically_for_long_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Fixed, "flush_every", 4)
    sink = Counting()
    Fixed([GOOD] * 10).run(sink)
    assert sink.flushes == [4, 8, 10]


async def test_the_longest_loop_block_is_in_the_metrics_while_the_runtime_runs() -> None:
    """A scrape during a run shows the block, not 0 until the run ends."""
    rt = Runtime([], ListSink(), store=None)  # type: ignore[arg-type]
    rt.monitor.start()
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.2)  # blocking work on the loop, on purpose
        await asyncio.sleep(0.05)
        line = next(
            x
            for x in rt.metrics.exposition().decode().splitlines()
            if x.startswith("repmon_connect_loop_block_seconds ")
        )
        assert float(line.split()[1]) >= 0.15
    finally:
        await rt.monitor.stop()
