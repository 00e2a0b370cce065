"""Incident -> message. Every message explains itself: which signal, value vs baseline, since when,
the top mentions, aspects and terms, links, and the evidence to re-derive it.

An SMS body fits one 160-character segment, most important facts first.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.records import Incident, Signal

__all__ = ["SMS_LIMIT", "Message", "notify_type", "render", "signal_line"]

SMS_LIMIT = 160


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    notify_type: str


def notify_type(incident: Incident) -> str:
    """Apprise notify type: resolved -> success, critical -> failure, warning -> warning."""
    if incident.status == "resolved":
        return "success"
    return {"critical": "failure", "warning": "warning"}.get(incident.severity, "info")


def signal_line(s: Signal) -> str:
    """What a signal measured, against its baseline."""
    what = s.signal.replace("_", " ") if s.aspect is None else f"negativity about {s.aspect}"
    if s.signal in ("negative_share", "impact_negativity", "aspect_negativity", "refund_rate"):
        return f"{what} {s.value:.0%} vs baseline {s.baseline:.0%} (z={s.z:.1f}, n={s.support})"
    if s.signal == "rating":
        return f"rating {s.value:.2f} vs baseline {s.baseline:.2f} (z={s.z:.1f}, n={s.support})"
    return f"{what} {s.value:.0f} vs baseline {s.baseline:.1f} (z={s.z:.1f})"


def _cut(text: str, limit: int) -> str:
    """Cut at a word boundary with an ellipsis.

    >>> _cut("the delivery was a disaster again", 20)
    'the delivery was a…'
    """
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    if " " in head[limit // 2 :]:
        head = head[: head.rfind(" ")]
    return head.rstrip(" ,;:.") + "…"


def _sms(incident: Incident) -> str:
    status = incident.status.upper()
    first = signal_line(incident.signals[0]) if incident.signals else incident.summary
    parts = [f"{status} {incident.severity} {incident.entity}", first]
    if incident.top_aspects:
        parts.append("aspects: " + ",".join(a for a, _ in incident.top_aspects[:2]))
    parts.append(f"since {incident.opened_at:%m-%d %H:%M}Z #{incident.seq}")
    body = " | ".join(parts)
    return _cut(body, SMS_LIMIT)


def render(incident: Incident, *, sms: bool = False) -> Message:
    """Render one incident message.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 11, 2, 9, 20, tzinfo=UTC)
    >>> sig = Signal(signal_id="s", entity="northwind", signal="negative_share", bucket_start=t,
    ...              bucket_seconds=60, value=0.62, baseline=0.14, scale=0.05, z=9.6, support=80,
    ...              severity="critical", detector="ew-seasonal-binomial-v1")
    >>> inc = Incident(incident_id="inc-1", entity="northwind", status="open", seq=1, severity="critical",
    ...                opened_at=t, updated_at=t, title="OPEN: Northwind - negative share", summary="s",
    ...                signals=[sig], top_aspects=[("app", 40)])
    >>> m = render(inc, sms=True)
    >>> m.body
    'OPEN critical northwind | negative share 62% vs baseline 14% (z=9.6, n=80) | aspects: app | since 11-02 09:20Z #1'
    >>> m.notify_type
    'failure'
    """
    ntype = notify_type(incident)
    title = f"[{incident.severity.upper()}] {incident.title} (thread {incident.incident_id} #{incident.seq})"
    if sms:
        return Message(_cut(incident.title, 60), _sms(incident), ntype)
    lines = [
        f"{incident.status.upper()} - {incident.entity} - severity {incident.severity}",
        f"since {incident.opened_at.isoformat()} (event time), updated {incident.updated_at.isoformat()}",
    ]
    if incident.resolved_at:
        lines.append(f"resolved at {incident.resolved_at.isoformat()}")
    if incident.signals:
        lines.append("signals:")
        lines += [f"  - {signal_line(s)} [{s.detector}, bucket {s.bucket_start:%H:%M}Z]" for s in incident.signals]
    else:
        lines.append(incident.summary)
    if incident.top_aspects:
        lines.append("top aspects: " + ", ".join(f"{a} ({n})" for a, n in incident.top_aspects))
    if incident.top_terms:
        lines.append("top terms: " + ", ".join(f"{t} ({n})" for t, n in incident.top_terms))
    if incident.top_mentions:
        lines.append("top mentions:")
        for m in incident.top_mentions:
            link = f" {m.url}" if m.url else ""
            lines.append(f'  - "{_cut(m.text, 200)}" (sentiment {m.sentiment:+.2f}, reach x{m.impact:.1f}){link}')
    ev = incident.evidence
    if ev:
        window = ev.get("window")
        lines.append(
            "evidence: window "
            + (" .. ".join(window) if isinstance(window, list) else str(window))
            + f"; detectors {', '.join(ev.get('detectors', []))}; sentiment model {ev.get('sentiment_model')}"
            + ("; early firing" if ev.get("early") else "")
        )
    return Message(title, "\n".join(lines), ntype)
