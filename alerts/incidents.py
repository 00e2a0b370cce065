"""Incident lifecycle: signals open a thread, later signals update it, quiet resolves it.

Pure state machine (no I/O): the stream worker persists :class:`IncidentState` and publishes
the :class:`Transition` it returns. Ids are derived from the entity and the event time of the
first firing bucket, so a replay of the same data yields the same incident ids: the alert
dispatcher dedupes on ``(incident_id, seq)``.

Rules:
- no open incident + verdicts -> ``open`` (seq 1);
- open incident + verdicts with a higher severity -> ``escalated``;
- open incident + verdicts at the same or lower severity -> ``update`` (the dispatcher groups
  these under its cooldown, so one crisis is one thread, not a flood);
- open incident + ``quiet_buckets`` consecutive buckets without verdicts -> ``resolved``
  (hysteresis: a single quiet bucket does not close it, a single loud one re-fires the thread);
- ``info`` verdicts (``trending``: a volume rise with an unchanged sentiment mix, drift,
  anomaly evidence) never open, update or escalate a thread: a bucket with only those is quiet.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = ["SEVERITY_RANK", "IncidentState", "Transition", "step"]

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
) -> Transition | None:
    """Advance ``state`` by one closed bucket. ``fired`` is ``[(signal, severity), ...]``."""
    fired = [(name, sev) for name, sev in fired if SEVERITY_RANK.get(sev, 0) > SEVERITY_RANK["info"]]
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
