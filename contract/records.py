"""The event contract: raw events, the enriched event, signals, incidents and dead letters.

Records are pydantic models serialised as JSON (orjson). ``repmon schema`` writes a JSON Schema
per record so downstream services can validate. ``SCHEMA_VERSION`` is bumped on a breaking change.

This module imports nothing of ours but :mod:`infra`: connectors and alerts import it without
pulling in the Faust app.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, field_validator

__all__ = [
    "RECORDS",
    "SCHEMA_VERSION",
    "TOPICS",
    "AspectHit",
    "DeadLetter",
    "EnrichedEvent",
    "EntityMatch",
    "Feedback",
    "Incident",
    "IncidentAction",
    "Mention",
    "NerSpan",
    "Purchase",
    "RawEvent",
    "Review",
    "Sentiment",
    "Signal",
    "dumps",
    "is_action",
    "make_event_id",
    "parse_raw",
    "utcnow",
]

#: Topic names (without the ``<prefix>.``) the pipeline reads and writes.
TOPICS = ("raw", "enriched", "signals", "incidents", "deadletter", "labels", "deadnotifications")

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_event_id(source: str, native_id: str | None = None, content: Any = None) -> str:
    """Stable event id: ``source:native_id``, else ``source:sha256(content)[:32]``.

    >>> make_event_id("twitter", "570306133677760513")
    'twitter:570306133677760513'
    >>> make_event_id("csv", None, {"b": 1, "a": 2}) == make_event_id("csv", None, {"a": 2, "b": 1})
    True
    """
    if native_id not in (None, ""):
        return f"{source}:{native_id}"
    blob = orjson.dumps(content, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    return f"{source}:{hashlib.sha256(blob).hexdigest()[:32]}"


class _Record(BaseModel):
    # NaN and infinities are refused: JSON cannot carry them back (they serialise as null) and
    # they poison every sum they reach
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)

    def dumps(self) -> bytes:
        return dumps(self)


def dumps(record: BaseModel) -> bytes:
    """Serialise a record to JSON bytes (the wire format on every topic)."""
    return orjson.dumps(record.model_dump(mode="json", exclude_none=False))


class _RawBase(_Record):
    version: int = Field(default=SCHEMA_VERSION, ge=1, description="Schema version of the record.")
    event_id: str = Field(min_length=3, max_length=512, description="source:native_id or source:content-hash")
    source: str = Field(min_length=1, max_length=128, description="Connector or platform, e.g. 'twitter'.")
    occurred_at: AwareDatetime = Field(description="Event time (UTC, timezone-aware).")
    ingested_at: AwareDatetime = Field(default_factory=utcnow, description="When the connector read it.")
    brand: str | None = Field(default=None, description="Brand hint from the source, if it has one.")
    product: str | None = Field(default=None, description="Product hint from the source, if it has one.")
    url: str | None = None

    @field_validator("occurred_at", "ingested_at")
    @classmethod
    def _to_utc(cls, v: datetime) -> datetime:
        return v.astimezone(UTC)


class Mention(_RawBase):
    """A social post, news item, forum or blog post."""

    kind: Literal["mention"] = "mention"
    text: str = Field(min_length=1, max_length=100_000)
    author: str | None = Field(default=None, description="Author handle or name (pseudonymised at enrichment).")
    channel: str | None = Field(default=None, description="twitter, reddit, news, forum, blog, ...")
    reach: int = Field(default=0, ge=0, description="Followers / audience size, for impact weighting.")
    lang: str | None = Field(default=None, description="Language hint from the source (ISO 639-1).")
    reply_to: str | None = None


class Review(_RawBase):
    """A review with a 1-5 star rating."""

    kind: Literal["review"] = "review"
    text: str = Field(default="", max_length=100_000)
    rating: int = Field(ge=1, le=5)
    platform: str | None = None
    location: str | None = None
    author: str | None = None
    verified: bool | None = Field(default=None, description="Verified purchase, where the platform says.")
    lang: str | None = None


PurchaseStatus = Literal["placed", "paid", "cancelled", "refunded", "returned", "chargeback"]


class Purchase(_RawBase):
    """An order lifecycle event."""

    kind: Literal["purchase"] = "purchase"
    order_id: str = Field(min_length=1)
    status: PurchaseStatus
    amount: float = Field(ge=0)
    currency: str = Field(default="USD", min_length=3, max_length=3)
    customer_key: str | None = Field(default=None, description="Pseudonymous customer key.")


class Feedback(_RawBase):
    """A survey answer: NPS 0-10, CSAT 1-5 or CES 1-7."""

    kind: Literal["feedback"] = "feedback"
    metric: Literal["nps", "csat", "ces"]
    score: int
    comment: str | None = None
    customer_key: str | None = None

    @field_validator("score")
    @classmethod
    def _score_in_range(cls, v: int, info: Any) -> int:
        lo, hi = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}[info.data.get("metric", "nps")]
        if not lo <= v <= hi:
            raise ValueError(f"{info.data.get('metric')} score must be in [{lo}, {hi}]")
        return v


RawEvent = Annotated[Mention | Review | Purchase | Feedback, Field(discriminator="kind")]
_RAW_ADAPTER: TypeAdapter[Mention | Review | Purchase | Feedback] = TypeAdapter(RawEvent)


def parse_raw(payload: bytes | str | dict[str, Any]) -> Mention | Review | Purchase | Feedback:
    """Parse and validate one raw event; raises ``ValueError`` (pydantic) with the reason."""
    if isinstance(payload, dict):
        return _RAW_ADAPTER.validate_python(payload)
    return _RAW_ADAPTER.validate_json(payload)


class Sentiment(_Record):
    score: float = Field(ge=-1.0, le=1.0)
    label: Literal["negative", "neutral", "positive"]
    confidence: float = Field(ge=0.0, le=1.0)
    model_version: str


class EntityMatch(_Record):
    key: str = Field(description="Entity key: 'brand' or 'brand/product'.")
    kind: Literal["brand", "product", "competitor"]
    text: str
    start: int = Field(ge=0, description="Character offset in the original text.")
    end: int = Field(ge=0)
    sentiment: Sentiment | None = Field(
        default=None,
        description="This entity's own sentiment when the text names several entities (its clause, or its side "
        "of a comparison such as 'X is better than Y'); None: the event's sentiment applies.",
    )


class NerSpan(_Record):
    label: str
    text: str
    start: int
    end: int


class AspectHit(_Record):
    aspect: str
    term: str
    start: int
    end: int
    sentiment: float = Field(ge=-1.0, le=1.0, description="Sentiment of the clause mentioning the aspect.")


class EnrichedEvent(_Record):
    """A raw event plus what enrichment found. Keyed on its topic by ``entity``."""

    version: int = SCHEMA_VERSION
    event_id: str
    kind: Literal["mention", "review", "purchase", "feedback"]
    source: str
    occurred_at: AwareDatetime
    ingested_at: AwareDatetime
    enriched_at: AwareDatetime = Field(default_factory=utcnow)
    entity: str | None = Field(description="Primary entity key (topic key); None if nothing matched.")
    entities: list[EntityMatch] = Field(default_factory=list)
    ner: list[NerSpan] = Field(default_factory=list)
    aspects: list[AspectHit] = Field(default_factory=list)
    sentiment: Sentiment | None = None
    lang: str | None = Field(default=None, description="Detected language (ISO 639-1), or the source's own hint.")
    lang_confidence: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Confidence in the detected language: the share of the text CLD2 reads as it when CLD2 is "
        "sure, else py3langid's probability (1.0 for a source hint).",
    )
    impact: float = Field(default=1.0, ge=0, description="Reach weight: 1 + log10(1 + reach).")
    text_redacted: str | None = Field(default=None, description="Text with PII replaced by [EMAIL], [PHONE], ...")
    author_key: str | None = Field(default=None, description="Pseudonymous author key (keyed hash).")
    url: str | None = None
    rating: int | None = None
    purchase_status: PurchaseStatus | None = None
    amount: float | None = None
    currency: str | None = None
    metric: Literal["nps", "csat", "ces"] | None = None
    score: int | None = None


SignalName = Literal[
    "volume",
    "trending",
    "negative_volume",
    "complaints",
    "complaint_share",
    "negative_share",
    "impact_negativity",
    "rating",
    "refund_rate",
    "aspect_negativity",
    "drift",
    "anomaly",
]


class Signal(_Record):
    """A detector's verdict on one entity, signal and bucket."""

    version: int = SCHEMA_VERSION
    signal_id: str
    entity: str
    signal: SignalName
    aspect: str | None = None
    bucket_start: AwareDatetime
    bucket_seconds: int
    value: float
    baseline: float
    scale: float = Field(description="Baseline spread (robust std) the z-score is measured in.")
    z: float
    support: int = Field(description="Events behind the value.")
    severity: Literal["info", "warning", "critical"]
    detector: str
    emitted_at: AwareDatetime = Field(default_factory=utcnow)


class TopMention(_Record):
    event_id: str
    text: str
    sentiment: float
    impact: float
    url: str | None = None


class Incident(_Record):
    """A crisis thread: opened by a signal, updated by later ones, resolved after quiet."""

    version: int = SCHEMA_VERSION
    incident_id: str
    entity: str
    status: Literal["open", "update", "escalated", "resolved"]
    seq: int = Field(ge=1, description="Message number inside the thread (1 = open).")
    severity: Literal["info", "warning", "critical"]
    opened_at: AwareDatetime = Field(description="Event time of the first bucket that fired.")
    updated_at: AwareDatetime
    resolved_at: AwareDatetime | None = None
    title: str
    summary: str
    signals: list[Signal] = Field(default_factory=list)
    top_mentions: list[TopMention] = Field(default_factory=list)
    top_aspects: list[tuple[str, int]] = Field(default_factory=list)
    top_terms: list[tuple[str, int]] = Field(default_factory=list)
    evidence: dict[str, Any] = Field(default_factory=dict)


class DeadLetter(_Record):
    """A message that could not be processed, with the reason. Nothing is dropped silently."""

    version: int = SCHEMA_VERSION
    reason: str
    error: str
    stage: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    payload: str = Field(
        description="The message as UTF-8 (undecodable bytes replaced), personal data and credentials redacted, "
        "cut to the first 64 KiB (see payload_truncated)."
    )
    payload_bytes: int | None = Field(default=None, description="Size of the original message in bytes.")
    payload_sha256: str | None = Field(default=None, description="SHA-256 of the original message bytes.")
    payload_truncated: bool = False
    received_at: AwareDatetime = Field(default_factory=utcnow)


class DeadNotification(_Record):
    """An incident message a route never accepted before the delivery horizon: somebody was not paged."""

    version: int = SCHEMA_VERSION
    route: str
    incident_id: str
    seq: int
    attempts: int
    error: str | None = None
    incident: Incident | None = None
    given_up_at: AwareDatetime = Field(default_factory=utcnow)


ActionName = Literal["acknowledge", "assign", "comment", "resolve", "false_positive", "silence", "unsilence", "relabel"]


class IncidentAction(_Record):
    """A responder's action (acknowledge, assign, silence, ...), published on the incidents topic
    beside the incident messages so every subscriber sees who decided what; ``kind`` tells the two
    apart (an :class:`Incident` has no ``kind``)."""

    version: int = SCHEMA_VERSION
    kind: Literal["action"] = "action"
    action_id: str
    action: ActionName
    incident_id: str | None = Field(default=None, description="None for a silence or a relabelled mention.")
    entity: str | None = None
    who: str = Field(description="The token's name that took the action.")
    why: str = ""
    at: AwareDatetime
    details: dict[str, Any] = Field(default_factory=dict)


def is_action(payload: bytes) -> bool:
    """Whether a message of the incidents topic is an :class:`IncidentAction` (not an incident)."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("kind") == "action"


RECORDS: dict[str, Any] = {
    "mention": Mention,
    "review": Review,
    "purchase": Purchase,
    "feedback": Feedback,
    "raw_event": RawEvent,
    "enriched_event": EnrichedEvent,
    "signal": Signal,
    "incident": Incident,
    "dead_letter": DeadLetter,
    "dead_notification": DeadNotification,
    "incident_action": IncidentAction,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema (draft 2020-12) of every record, by name."""
    out: dict[str, dict[str, Any]] = {}
    for name, rec in RECORDS.items():
        schema = TypeAdapter(rec).json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://repmon.dev/schemas/v{SCHEMA_VERSION}/{name}.json"
        schema.setdefault("title", name)
        out[name] = schema
    return out
