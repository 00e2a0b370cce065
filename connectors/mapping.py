"""Column mappings: one outside row (CSV/TSV/JSONL line, pushed JSON object) -> a raw-record dict.

The one place where a row becomes a record, used by every connector that maps foreign shapes
(``repmon replay`` files, ``repmon webhook`` pushes). A mapping is a small TOML file (see
``infra/config/replay/``)::

    kind = "mention"               # mention | review | purchase | feedback
    source = "twitter"
    format = "csv"                 # csv | tsv | jsonl (files only); inferred from the name if omitted
    [columns]                      # record field -> source column (or field of a JSON object)
    native_id = "tweet_id"
    text = "text"
    occurred_at = "tweet_created"
    [time]
    format = "%Y-%m-%d %H:%M:%S %z"  # strptime format, "iso", "epoch" or "epoch_ms"
    timezone = "UTC"               # applied when the parsed time has no zone
    [constants]
    channel = "twitter"
    [values.sentiment_label]       # field -> {source value: value}
    neg = "negative"
    [derived.status]               # small, safe computed fields (no eval)
    column = "InvoiceNo"
    prefix_map = { C = "cancelled" }
    default = "placed"
    [derived.amount]
    product = ["Quantity", "UnitPrice"]
    abs = true

A column may also be a JMESPath expression (https://jmespath.org) reaching into nested JSON, so a
new pushed payload needs a mapping, not code: ``rating = "eventData.stars"``,
``order_id = "data.object.payment_intent || data.object.id"``. A key present in the row as
written wins (CSV headers with dots keep working). Pushed payloads also take::

    when = "type != 'customer.created'"   # JMESPath: rows where it is false are skipped
    [scale]
    amount = 0.01                           # minor units (cents) -> major
    [case]
    currency = "upper"

Records get stable ids (``source:native_id``, else a hash of the row), so a re-run or a retried
push is deduplicated downstream. :func:`to_item` is what connectors call: a valid record dict,
or :class:`~connectors.base.Malformed` carrying the row and the reason (never dropped).
"""

from __future__ import annotations

import functools
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import jmespath
import jmespath.exceptions
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from connectors.base import Malformed
from contract.records import make_event_id, parse_raw

__all__ = ["Derived", "Mapping", "TimeSpec", "load_mapping", "lookup", "parse_time", "skipped", "to_item", "to_record"]

ROW_ERRORS = (ValueError, KeyError, TypeError, ValidationError, jmespath.exceptions.JMESPathError)


@functools.lru_cache(maxsize=1024)
def _compiled(expr: str) -> Any:
    return jmespath.compile(expr)


def lookup(row: dict[str, Any], column: str | int) -> Any:
    """The value of ``column`` in ``row``: the key as written, else a JMESPath expression.

    >>> lookup({"a.b": 1, "a": {"b": 2}}, "a.b"), lookup({"e": {"xs": [{"n": 7}]}}, "e.xs[0].n")
    (1, 7)
    """
    key = str(column)
    if key in row:
        return row[key]
    try:
        return _compiled(key).search(row)
    except jmespath.exceptions.ParseError:
        return None  # a plain column name that is not in this row (e.g. "Unit Price")


def _check_expression(expr: str, where: str) -> None:
    try:
        _compiled(expr)
    except jmespath.exceptions.ParseError as exc:
        raise ValueError(f"{where}: {expr!r} is not a JMESPath expression ({exc}); see https://jmespath.org") from None


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

    def value(self, row: dict[str, Any]) -> Any:
        if self.column:
            got = lookup(row, self.column)
            raw = "" if got is None else str(got)
            for prefix, mapped in self.prefix_map.items():
                if raw.startswith(prefix):
                    return mapped
            return self.default
        product = 1.0
        for col in self.product:
            got = lookup(row, col)
            if got is None:
                raise KeyError(col)
            product *= float(got)
        return abs(product) if self.abs else product


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
    when: str | None = Field(default=None, description="JMESPath: rows for which it is false are skipped.")
    scale: dict[str, float] = Field(default_factory=dict, description="field -> factor (cents: 0.01)")
    case: dict[str, Literal["upper", "lower"]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _needs_time(self) -> Mapping:
        if "occurred_at" not in self.columns:
            raise ValueError("columns.occurred_at is required: name the column holding the event time")
        if self.when:
            _check_expression(self.when, "when")
        return self


def skipped(mapping: Mapping | None, row: Any) -> bool:
    """True when the mapping's ``when`` filter rejects ``row`` (an event type it does not map)."""
    if mapping is None or not mapping.when or not isinstance(row, dict):
        return False
    return not _compiled(mapping.when).search(row)


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


def to_record(mapping: Mapping, row: dict[str, Any]) -> dict[str, Any]:
    """Map one source row to a raw-record dict (not yet validated; raises on unreadable values).

    >>> m = Mapping(kind="review", source="shop", columns={"native_id": "id", "occurred_at": "ts", "rating": "r"},
    ...             time=TimeSpec(format="epoch"))
    >>> to_record(m, {"id": 7, "ts": 0, "r": "4.6"})
    {'kind': 'review', 'source': 'shop', 'occurred_at': '1970-01-01T00:00:00+00:00', 'rating': 5, 'event_id': 'shop:7'}
    """
    m = mapping
    out: dict[str, Any] = {"kind": m.kind, "source": m.source, **m.constants}
    native_id = None
    for field, col in m.columns.items():
        try:
            native_id = _put(m, out, field, lookup(row, col), native_id)
        except (ValueError, TypeError, OverflowError) as exc:
            # the reason names the field and where it was read: "could not convert 'ten'" alone
            # does not say which of a row's values was wrong
            raise ValueError(f"{field} (from {col!r}): {exc}") from exc
    for field, d in m.derived.items():
        out[field] = d.value(row)
    out["event_id"] = make_event_id(m.source, native_id, row)
    return out


def _put(m: Mapping, out: dict[str, Any], field: str, value: Any, native_id: str | None) -> str | None:
    """Convert one mapped value into ``out``; returns the native id (set when ``field`` is it)."""
    if value is None or value == "":
        return native_id
    if field in m.scale:
        value = round(float(value) * m.scale[field], 6)  # 12999 * 0.01 must be 129.99, not 129.990000001
    if field in m.case:
        value = str(value).upper() if m.case[field] == "upper" else str(value).lower()
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
    return native_id


def to_item(row: Any, mapping: Mapping | None = None) -> dict[str, Any] | Malformed:
    """A row -> a validated raw-record dict, or :class:`Malformed` with the row and the reason.

    Without a mapping the row must already be in the raw contract. A dict that fails keeps its
    fields plus ``_error`` (JSON), so the worker dead-letters it with the reason.

    >>> to_item([1, 2])
    Malformed(payload=b'[1,2]', reason='not a JSON object')
    """
    if isinstance(row, Malformed):
        return row
    if not isinstance(row, dict):
        return Malformed(orjson.dumps(row, default=str), "not a JSON object")
    try:
        rec = to_record(mapping, row) if mapping is not None else row
        parse_raw(rec)
        return rec
    except ROW_ERRORS as exc:
        reason = str(exc)[:300]
        bad = {**{str(k): v for k, v in row.items()}, "_error": reason}
        return Malformed(orjson.dumps(bad, default=str), reason)
