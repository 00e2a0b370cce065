"""Incident lifecycle: signals open a thread, later signals update it, quiet resolves it.

Pure state machine (no I/O): the stream worker persists :class:`IncidentState` and publishes
the incident :func:`build_incident` makes of the :class:`Transition` it returns. Ids are derived
from the entity and the event time of the first firing bucket, so a replay of the same data yields
the same incident ids: the alert dispatcher dedupes on ``(incident_id, seq)``.

Rules:
- no open incident + verdicts -> ``open`` (seq 1);
- open incident + verdicts with a higher severity -> ``escalated``;
- open incident + verdicts at the same or lower severity -> ``update`` (the dispatcher groups
  these under its cooldown, so one crisis is one thread, not a flood);
- open incident + ``quiet_buckets`` consecutive buckets without verdicts -> ``resolved``
  (hysteresis: a single quiet bucket does not close it, a single loud one re-fires the thread);
- ``info`` verdicts (``trending``: a volume rise with an unchanged sentiment mix) never open,
  update or escalate a thread: a bucket with only those is quiet. A deployment where a route opts in
  to trending (``alerts.routes[].trending``) calls :func:`step` with ``info_threads=True``: then an
  info verdict opens an ``info`` thread (delivered only to the routes that opted in), and a later
  negative signal escalates that same thread to a page.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from alerts.render import signal_line
from contract.records import Incident, Signal, TopMention

__all__ = ["SEVERITY_RANK", "IncidentState", "Transition", "build_incident", "step"]

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
Status = Literal["open", "update", "escalated", "resolved"]


@dataclass
class IncidentState:
    incident_id: str | None = None
    seq: int = 0
    severity: str = "info"
    opened_at: str | None = None
    last_fired_at: str | None = None
    quiet: int = 0
    fired_buckets: int = 0
    signals_seen: list[str] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.incident_id is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> IncidentState:
        return cls(**data) if data else cls()


@dataclass(frozen=True)
class Transition:
    incident_id: str
    status: Status
    seq: int
    severity: str
    opened_at: str
    signals: list[str]


def incident_id_for(entity: str, opened_at: datetime) -> str:
    """Stable id from the entity and the opening bucket's event time.

    >>> from datetime import datetime, UTC
    >>> incident_id_for("northwind", datetime(2026, 1, 1, tzinfo=UTC))
    'inc-northwind-20260101T0000-e7b252d5'
    """
    slug = "".join(c if c.isalnum() else "-" for c in entity)[:40]
    digest = hashlib.sha256(f"{entity}|{opened_at.isoformat()}".encode()).hexdigest()[:8]
    return f"inc-{slug}-{opened_at:%Y%m%dT%H%M}-{digest}"


def step(
    state: IncidentState,
    entity: str,
    bucket_start: datetime,
    fired: list[tuple[str, str]],
    *,
    quiet_buckets: int,
    info_threads: bool = False,
) -> Transition | None:
    """Advance ``state`` by one closed bucket. ``fired`` is ``[(signal, severity), ...]``;
    ``info`` ones count only with ``info_threads``."""
    floor = -1 if info_threads else SEVERITY_RANK["info"]
    fired = [(name, sev) for name, sev in fired if SEVERITY_RANK.get(sev, 0) > floor]
    when = bucket_start.isoformat()
    if fired:
        severity = max((s for _, s in fired), key=SEVERITY_RANK.__getitem__)
        names = sorted({name for name, _ in fired})
        state.quiet = 0
        state.last_fired_at = when
        state.fired_buckets += 1
        if not state.is_open:
            state.incident_id = incident_id_for(entity, bucket_start)
            state.seq, state.severity, state.opened_at = 1, severity, when
            state.signals_seen = names
            return Transition(state.incident_id, "open", 1, severity, when, names)
        assert state.incident_id is not None and state.opened_at is not None
        state.seq += 1
        status: Status = "update"
        if SEVERITY_RANK[severity] > SEVERITY_RANK[state.severity]:
            state.severity, status = severity, "escalated"
        state.signals_seen = sorted(set(state.signals_seen) | set(names))
        return Transition(state.incident_id, status, state.seq, state.severity, state.opened_at, names)
    if not state.is_open:
        return None
    state.quiet += 1
    if state.quiet < quiet_buckets:
        return None
    assert state.incident_id is not None and state.opened_at is not None
    out = Transition(state.incident_id, "resolved", state.seq + 1, state.severity, state.opened_at, [])
    state.__init__()  # type: ignore[misc]
    return out


def build_incident(
    tr: Transition,
    *,
    entity: str,
    name: str,
    team: str | None,
    bucket_start: datetime,
    bucket_seconds: int,
    signals: Sequence[Signal],
    stats: Mapping[str, float],
    top_mentions: Sequence[Mapping[str, Any]],
    top_terms: Sequence[tuple[str, int]],
    early: bool,
    quiet_buckets: int,
    anomaly: Mapping[str, Any] | None = None,
    evidence: Mapping[str, Any] | None = None,
) -> Incident:
    """The incident record of one transition, from plain data (no I/O).

    ``title`` names the entity and what fired, without the status: the status is its own field,
    and the renderer puts it in front of the title for each channel.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> tr = Transition("inc-1", "open", 1, "critical", t.isoformat(), ["negative_share"])
    >>> sig = Signal(signal_id="a", entity="acme", signal="negative_share", bucket_start=t, bucket_seconds=60,
    ...              value=0.62, baseline=0.14, scale=0.05, z=9.6, support=80, severity="critical", detector="d")
    >>> inc = build_incident(tr, entity="acme", name="Acme", team=None, bucket_start=t, bucket_seconds=60,
    ...                      signals=[sig], stats={"n": 80, "neg": 50}, top_mentions=[], top_terms=[],
    ...                      early=False, quiet_buckets=15)
    >>> inc.title, inc.summary, inc.evidence["negative_share"]
    ('Acme - negative share', 'negative share 62% vs baseline 14% (z=9.6, n=80)', 0.625)
    """
    if tr.status == "resolved":
        title = f"{name} is back to normal"
        summary = f"No crisis signal for {quiet_buckets} buckets."
    else:
        what = ", ".join(
            dict.fromkeys(s.signal.replace("_", " ") + (f" ({s.aspect})" if s.aspect else "") for s in signals)
        )
        title = f"{name} - {what}"
        summary = "; ".join(signal_line(s) for s in signals)
    aspects = sorted(
        ((k.split(":")[1], int(v)) for k, v in stats.items() if k.startswith("asp:") and k.endswith(":neg")),
        key=lambda x: (-x[1], x[0]),
    )[:5]
    n = stats.get("n", 0.0)
    updated = bucket_start + timedelta(seconds=bucket_seconds)
    return Incident(
        incident_id=tr.incident_id,
        entity=entity,
        status=tr.status,
        seq=tr.seq,
        severity=tr.severity,
        opened_at=datetime.fromisoformat(tr.opened_at),
        updated_at=updated,
        resolved_at=updated if tr.status == "resolved" else None,
        title=title,
        summary=summary,
        signals=list(signals),
        top_mentions=[
            TopMention(event_id=m["id"], text=m["text"], sentiment=m["s"], impact=m["impact"], url=m.get("url"))
            for m in top_mentions
        ],
        top_aspects=aspects,
        top_terms=list(top_terms),
        evidence={
            "window": [bucket_start.isoformat(), updated.isoformat()],
            "bucket_seconds": bucket_seconds,
            "early": early,
            "bucket": {k: v for k, v in stats.items() if not k.startswith("asp:")},
            "negative_share": (stats.get("neg", 0.0) / n) if n else None,
            "detectors": sorted({s.detector for s in signals}),
            "anomaly": dict(anomaly) if anomaly else None,
            "team": team,
            **(evidence or {}),
        },
    )
