"""replay.v1: recorded events from CSV/TSV/JSONL (optionally .gz) through a column mapping.

A mapping is a small TOML file (see ``infra/config/replay/``)::

    kind = "mention"               # mention | review | purchase | feedback
    source = "twitter"
    format = "csv"                 # csv | tsv | jsonl; inferred from the file name if omitted
    [columns]                      # record field -> source column
    native_id = "tweet_id"
    text = "text"
    occurred_at = "tweet_created"
    [time]
    format = "%Y-%m-%d %H:%M:%S %z"  # strptime format, "iso", "epoch" or "epoch_ms"
    timezone = "UTC"               # applied when the parsed time has no zone
    [constants]
    channel = "twitter"
    [derived.status]               # small, safe computed fields (no eval)
    column = "InvoiceNo"
    prefix_map = { C = "cancelled" }
    default = "placed"
    [derived.amount]
    product = ["Quantity", "UnitPrice"]
    abs = true

Rows become records with stable ids (``source:native_id``, else a hash of the row). A row that
cannot become a valid record is not dropped: it goes to the sink as JSON with an ``_error``
field, so the pipeline dead-letters it with the reason. Replay runs as fast as possible
(``speed=0``) or ``speed`` times real time following the gaps in event time.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from connectors.base import Connector, Malformed, Sink
from contract.records import make_event_id, parse_raw

__all__ = ["Mapping", "ReplayStats", "Replayer", "load_mapping"]

logger = logging.getLogger(__name__)

csv.field_size_limit(10_000_000)


class TimeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str = "iso"
    timezone: str = "UTC"


class Derived(BaseModel):
    """A computed field: a prefix map on a column, or the product of columns."""

    model_config = ConfigDict(extra="forbid")
    column: str | None = None
    prefix_map: dict[str, str] = Field(default_factory=dict)
    default: str | float | None = None
    product: list[str] = Field(default_factory=list)
    abs: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> Derived:
        if bool(self.column) == bool(self.product):
            raise ValueError("give either `column` (with prefix_map/default) or `product = [columns]`")
        return self


class Mapping(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["mention", "review", "purchase", "feedback"]
    source: str
    format: Literal["csv", "tsv", "jsonl"] | None = None
    delimiter: str | None = None
    header: bool = True
    columns: dict[str, str | int]
    time: TimeSpec = Field(default_factory=TimeSpec)
    constants: dict[str, Any] = Field(default_factory=dict)
    values: dict[str, dict[str, Any]] = Field(default_factory=dict, description="field -> {source value: value}")
    derived: dict[str, Derived] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _needs_time(self) -> Mapping:
        if "occurred_at" not in self.columns:
            raise ValueError("columns.occurred_at is required: name the column holding the event time")
        return self


def load_mapping(path: Path | str) -> Mapping:
    """Load a mapping file; errors name the key and the fix."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"mapping {p} not found; see infra/config/replay/ for examples") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"mapping {p} is not valid TOML: {exc}") from None
    try:
        return Mapping(**data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"mapping {p}: {problems}") from None


def parse_time(value: Any, spec: TimeSpec) -> datetime:
    """Parse an event time by the mapping's spec; naive times get ``spec.timezone``.

    >>> parse_time("2015-02-24 11:35:52 -0800", TimeSpec(format="%Y-%m-%d %H:%M:%S %z")).isoformat()
    '2015-02-24T19:35:52+00:00'
    >>> parse_time(1388534400, TimeSpec(format="epoch")).isoformat()
    '2014-01-01T00:00:00+00:00'
    """
    fmt = spec.format
    if fmt == "epoch":
        dt = datetime.fromtimestamp(float(value), UTC)
    elif fmt == "epoch_ms":
        dt = datetime.fromtimestamp(float(value) / 1000.0, UTC)
    elif fmt == "iso":
        dt = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    else:
        dt = datetime.strptime(str(value).strip(), fmt)  # noqa: DTZ007 - zone applied below
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ZoneInfo(spec.timezone))
    return dt.astimezone(UTC)


@dataclass
class ReplayStats:
    read: int = 0
    sent: int = 0
    invalid: int = 0
    seconds: float = 0.0
    first_event: str | None = None
    last_event: str | None = None

    @property
    def events_per_s(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "events_per_s": round(self.events_per_s, 1)}


def _open(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors="replace", newline="")
    return path.open(encoding="utf-8-sig", errors="replace", newline="")


class Replayer(Connector):
    name = "replay.v1"

    def __init__(
        self,
        mapping: Mapping,
        files: Sequence[Path | str],
        *,
        speed: float = 0.0,
        limit: int | None = None,
        progress: bool = True,
        sort_by_time: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        max_sleep: float = 5.0,
    ) -> None:
        self.mapping = mapping
        self.files = [Path(f) for f in files]
        self.speed = speed
        self.limit = limit
        self.progress = progress
        self.sort_by_time = sort_by_time
        self.sleep = sleep
        self.max_sleep = max_sleep

    # -- reading ----------------------------------------------------------------------------
    def _rows(self, path: Path) -> Iterator[dict[str, Any]]:
        fmt = self.mapping.format
        name = path.name.removesuffix(".gz")
        if fmt is None:
            fmt = "jsonl" if name.endswith((".jsonl", ".json")) else ("tsv" if name.endswith(".tsv") else "csv")
        with _open(path) as f:
            if fmt == "jsonl":
                for line in f:
                    if line.strip():
                        try:
                            obj = orjson.loads(line)
                        except orjson.JSONDecodeError:
                            yield {"__unparsable__": line.rstrip("\n")}
                            continue
                        yield obj if isinstance(obj, dict) else {"__unparsable__": line.rstrip("\n")}
                return
            delim = self.mapping.delimiter or ("\t" if fmt == "tsv" else ",")
            if self.mapping.header:
                yield from csv.DictReader(f, delimiter=delim)
            else:
                for row in csv.reader(f, delimiter=delim):
                    yield {str(i): v for i, v in enumerate(row)}

    def _derive(self, name: str, d: Derived, row: dict[str, Any]) -> Any:
        if d.column:
            raw = str(row.get(d.column, ""))
            for prefix, mapped in d.prefix_map.items():
                if raw.startswith(prefix):
                    return mapped
            return d.default
        product = 1.0
        for col in d.product:
            product *= float(row[col])
        return abs(product) if d.abs else product

    def to_record(self, row: dict[str, Any]) -> dict[str, Any]:
        """Map one source row to a raw-record dict (not yet validated)."""
        m = self.mapping
        out: dict[str, Any] = {"kind": m.kind, "source": m.source, **m.constants}
        native_id = None
        for field, col in m.columns.items():
            value = row.get(str(col))
            if value in (None, ""):
                continue
            if field in m.values:
                value = m.values[field].get(str(value), value)
            if field == "native_id":
                native_id = str(value)
            elif field == "occurred_at":
                out[field] = parse_time(value, m.time).isoformat()
            elif field == "rating":
                out[field] = round(float(value))
            elif field in ("reach", "score"):
                out[field] = int(float(value))
            elif field == "verified":
                out[field] = str(value).lower() in ("true", "1", "yes", "y")
            elif field == "amount":
                out[field] = abs(float(value))
            else:
                out[field] = value if isinstance(value, bool | int | float) else str(value)
        for field, d in m.derived.items():
            out[field] = self._derive(field, d, row)
        out["event_id"] = make_event_id(m.source, native_id, row)
        return out

    def events(self) -> Iterator[dict[str, Any] | Malformed]:
        n = 0
        for path in self.files:
            for row in self._rows(path):
                if self.limit is not None and n >= self.limit:
                    return
                n += 1
                if "__unparsable__" in row:
                    yield Malformed(str(row["__unparsable__"]).encode(), "unparsable line")
                    continue
                try:
                    rec = self.to_record(row)
                    parse_raw(rec)
                    yield rec
                except (ValueError, KeyError, TypeError, ValidationError) as exc:
                    bad = {**{str(k): v for k, v in row.items()}, "_error": str(exc)[:300]}
                    yield Malformed(orjson.dumps(bad, default=str), str(exc)[:300])

    # -- running ----------------------------------------------------------------------------
    def run(self, sink: Sink) -> ReplayStats:  # type: ignore[override]
        stats = ReplayStats()
        t0 = time.monotonic()
        items: Iterator[dict[str, Any] | Malformed] | list[dict[str, Any] | Malformed] = self.events()
        if self.sort_by_time or self.speed > 0:
            everything = list(items)
            bad = [e for e in everything if isinstance(e, Malformed)]
            good = sorted((e for e in everything if isinstance(e, dict)), key=lambda e: str(e["occurred_at"]))
            items = [*bad, *good]
        prev_event: datetime | None = None
        prog = None
        if self.progress:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            prog = Progress(
                TextColumn("replay"),
                BarColumn(),
                TextColumn("{task.completed} events"),
                TextColumn("{task.fields[rate]:.0f}/s"),
                TextColumn("invalid {task.fields[invalid]}"),
                TimeElapsedColumn(),
                transient=False,
            )
            prog.start()
            task = prog.add_task("replay", total=self.limit, rate=0.0, invalid=0)
        try:
            for item in items:
                stats.read += 1
                if isinstance(item, Malformed):
                    stats.invalid += 1
                else:
                    ts = datetime.fromisoformat(item["occurred_at"])
                    if self.speed > 0 and prev_event is not None:
                        gap = (ts - prev_event) / timedelta(seconds=1) / self.speed
                        if gap > 0:
                            self.sleep(min(gap, self.max_sleep))
                    prev_event = ts
                    stats.first_event = stats.first_event or item["occurred_at"]
                    stats.last_event = item["occurred_at"]
                sink.send_any(item)
                stats.sent += 1
                if prog is not None and stats.read % 500 == 0:
                    el = time.monotonic() - t0
                    prog.update(task, completed=stats.read, rate=stats.read / el if el else 0, invalid=stats.invalid)
        finally:
            sink.flush()
            stats.seconds = round(time.monotonic() - t0, 3)
            if prog is not None:
                prog.update(task, completed=stats.read, rate=stats.events_per_s, invalid=stats.invalid)
                prog.stop()
        return stats
