"""Incident -> message. Pure functions, no I/O.

Every message explains itself, so whoever reads it can act without opening a dashboard:

- **what and where**: the status (``OPEN`` / ``UPDATE`` / ``ESCALATED`` / ``RESOLVED``), the entity
  and the severity;
- **which thread**: the incident id and the message number (``seq``), in the title and the first
  line, so one crisis reads as one thread of a few messages;
- **why**: for each signal, its value against its baseline and the z-score
  (``negative share 62% vs baseline 14% (z=9.6, n=80)``), with its bucket and detector;
- **since when**: ``opened_at``, the *event time* of the first bucket that fired (ISO 8601, UTC);
- **what people say**: top aspects and terms, and the top mentions (their already-redacted text,
  scrubbed once more of e-mail addresses and phone numbers, on one line, cut at a word boundary)
  with their links;
- **evidence**: the bucket window, the detectors and the model versions, from ``incident.evidence``.

Apprise notify types: ``resolved`` -> ``success``; otherwise ``critical`` -> ``failure``,
``warning`` -> ``warning``, anything else -> ``info``.

SMS (``render(incident, sms=True)``): the title is empty (SMS gateways glue the title onto the body)
and the body fits one GSM-7 segment of 160 septets: only GSM-7 characters (others are
transliterated, so the gateway never falls back to 70-character UCS-2 segments), extension
characters such as ``|`` or ``[`` counted twice. The most important facts come first: status,
severity and entity, the strongest signal against its baseline and since when; then further
signals, the top aspects and terms while they fit whole; the thread reference always ends it.
Text is cut at a word boundary whenever there is one.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from contract.records import Incident, Signal

__all__ = [
    "SMS_LIMIT",
    "Message",
    "gsm_length",
    "notify_type",
    "render",
    "signal_line",
    "thread_ref",
    "to_gsm",
]

SMS_LIMIT = 160
"""Septets in one GSM-7 SMS segment."""

MENTION_CHARS = 200
"""Longest quoted mention in a full message."""

TITLE_CHARS = 160
"""Longest headline in a full message title (Apprise caps titles at 250 for most channels)."""

_RATIO_SIGNALS = frozenset({"negative_share", "impact_negativity", "aspect_negativity", "refund_rate"})


@dataclass(frozen=True)
class Message:
    """A rendered notification: what :meth:`apprise.Apprise.notify` takes."""

    title: str
    body: str
    notify_type: str
    """Apprise notify type: ``info``, ``success``, ``warning`` or ``failure``."""


def notify_type(incident: Incident) -> str:
    """Apprise notify type: resolved -> success, critical -> failure, warning -> warning, else info.

    A resolved incident is good news whatever its severity was.
    """
    if incident.status == "resolved":
        return "success"
    return {"critical": "failure", "warning": "warning"}.get(incident.severity, "info")


def signal_line(s: Signal, *, short: bool = False) -> str:
    """What a signal measured, against its baseline (``short`` leaves out the support ``n``).

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 11, 2, 9, 20, tzinfo=UTC)
    >>> s = Signal(signal_id="s", entity="northwind", signal="negative_share", bucket_start=t,
    ...            bucket_seconds=60, value=0.62, baseline=0.14, scale=0.05, z=9.1, support=80,
    ...            severity="critical", detector="d")
    >>> signal_line(s)
    'negative share 62% vs baseline 14% (z=9.1, n=80)'
    >>> signal_line(s, short=True)
    'negative share 62% vs baseline 14% (z=9.1)'
    """
    what = s.signal.replace("_", " ") if s.aspect is None else f"negativity about {s.aspect}"
    n = "" if short else f", n={s.support}"
    if s.signal in _RATIO_SIGNALS:
        return f"{what} {s.value:.0%} vs baseline {s.baseline:.0%} (z={s.z:.1f}{n})"
    if s.signal == "rating":
        return f"rating {s.value:.2f} vs baseline {s.baseline:.2f} (z={s.z:.1f}{n})"
    if s.signal == "drift":
        return f"drift in {s.aspect or 'sentiment'}: mean {s.value:.3g}, was {s.baseline:.3g}"
    if s.signal == "anomaly":
        return f"unusual mix of signals (score {s.value:.2f} > {s.baseline:.2f}), most of all {s.aspect} z={s.z:.1f}"
    return f"{what} {s.value:.0f} vs baseline {s.baseline:.1f} (z={s.z:.1f})"


def thread_ref(incident: Incident, *, short: bool = False) -> str:
    """The thread marker: ``<incident id> #<seq>``; ``short`` keeps the id's last part (for SMS).

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 11, 2, 9, 20, tzinfo=UTC)
    >>> inc = Incident(incident_id="inc-northwind-20261102T0920-e7b252d5", entity="northwind",
    ...                status="update", seq=3, severity="warning", opened_at=t, updated_at=t, title="t", summary="s")
    >>> thread_ref(inc), thread_ref(inc, short=True)
    ('inc-northwind-20261102T0920-e7b252d5 #3', 'e7b252d5#3')
    """
    if not short:
        return f"{incident.incident_id} #{incident.seq}"
    iid = incident.incident_id
    tail = iid.rsplit("-", 1)[-1] if len(iid) > 16 else iid
    return f"{tail[-12:]}#{incident.seq}"


def render(incident: Incident, *, sms: bool = False) -> Message:
    """Render one incident message (see the module docstring for what it contains).

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 11, 2, 9, 20, tzinfo=UTC)
    >>> sig = Signal(signal_id="s", entity="northwind", signal="negative_share", bucket_start=t,
    ...              bucket_seconds=60, value=0.62, baseline=0.14, scale=0.05, z=9.6, support=80,
    ...              severity="critical", detector="ew-seasonal-binomial-v1")
    >>> inc = Incident(incident_id="inc-northwind-20261102T0920-e7b252d5", entity="northwind", status="open",
    ...                seq=1, severity="critical", opened_at=t, updated_at=t,
    ...                title="Northwind - negative share", summary="s", signals=[sig], top_aspects=[("app", 40)])
    >>> m = render(inc)
    >>> m.title
    '[CRITICAL] OPEN: Northwind - negative share (thread inc-northwind-20261102T0920-e7b252d5 #1)'
    >>> print(m.body.splitlines()[0])
    OPEN - northwind - severity critical - thread inc-northwind-20261102T0920-e7b252d5 #1
    >>> m.notify_type
    'failure'
    >>> s = render(inc, sms=True)
    >>> for part in s.body.split("; "):
    ...     print(part)
    OPEN critical northwind: negative share 62% vs baseline 14% (z=9.6) since 2026-11-02 09:20Z
    aspects: app
    ref e7b252d5#1
    >>> s.title, gsm_length(s.body) <= SMS_LIMIT
    ('', True)
    """
    ntype = notify_type(incident)
    if sms:
        return Message("", _sms_body(incident), ntype)
    return Message(_title(incident), _full_body(incident), ntype)


# -- full message ---------------------------------------------------------------------------


def _title(incident: Incident) -> str:
    status = incident.status.upper()
    headline = _cut(_one_line(incident.title) or incident.entity, TITLE_CHARS)
    return f"[{incident.severity.upper()}] {status}: {headline} (thread {thread_ref(incident)})"


def _full_body(incident: Incident) -> str:
    lines = [
        f"{incident.status.upper()} - {incident.entity} - severity {incident.severity} - thread {thread_ref(incident)}",
        f"{'Was active' if incident.status == 'resolved' else 'Active'} since {_iso(incident.opened_at)} "
        "(event time of the first bucket that fired); "
        f"last update {_iso(incident.updated_at)}",
    ]
    if incident.resolved_at is not None:
        lasted = _duration(incident.resolved_at - incident.opened_at)
        lines.append(f"Resolved at {_iso(incident.resolved_at)} after {lasted}")
    if incident.signals:
        lines.append("Signals:")
        for s in incident.signals:
            lines.append(
                f"  - {signal_line(s)}; bucket {_iso(s.bucket_start)} ({s.bucket_seconds} s); "
                f"severity {s.severity}; detector {s.detector}"
            )
    if incident.summary and (not incident.signals or incident.status == "resolved"):
        lines.append(_one_line(incident.summary))
    if incident.top_aspects:
        lines.append("Top aspects: " + ", ".join(f"{a} ({n})" for a, n in incident.top_aspects))
    if incident.top_terms:
        lines.append("Top terms: " + ", ".join(f"{t} ({n})" for t, n in incident.top_terms))
    if incident.top_mentions:
        lines.append("Top mentions:")
        for i, m in enumerate(incident.top_mentions, 1):
            link = f" {m.url}" if m.url else ""
            text = _cut(_scrub(_one_line(m.text)), MENTION_CHARS)
            lines.append(f'  {i}. "{text}" (sentiment {m.sentiment:+.2f}, reach x{m.impact:.1f}){link}')
        links = list(dict.fromkeys(m.url for m in incident.top_mentions if m.url))
        if links:
            lines.append("Links: " + " ".join(links))
    evidence = _evidence_line(incident)
    if evidence:
        lines.append(evidence)
    return "\n".join(lines)


def _evidence_line(incident: Incident) -> str:
    ev: dict[str, Any] = incident.evidence
    parts: list[str] = []
    window = ev.get("window")
    if isinstance(window, list | tuple) and window:
        parts.append("window " + " .. ".join(str(w) for w in window))
    elif window:
        parts.append(f"window {window}")
    if ev.get("bucket_seconds"):
        parts.append(f"{ev['bucket_seconds']} s buckets")
    detectors = ev.get("detectors") or sorted({s.detector for s in incident.signals})
    if detectors:
        parts.append("detectors " + ", ".join(str(d) for d in detectors))
    if ev.get("sentiment_model"):
        parts.append(f"sentiment model {ev['sentiment_model']}")
    models = ev.get("model_versions")
    if isinstance(models, dict):
        parts += [f"{k} {v}" for k, v in sorted(models.items())]
    if ev.get("nlp_profile"):
        parts.append(f"nlp profile {ev['nlp_profile']}")
    if ev.get("early"):
        parts.append("fired early, inside a bucket still filling")
    return ("Evidence: " + "; ".join(parts)) if parts else ""


# -- SMS ------------------------------------------------------------------------------------


def _sms_body(incident: Incident) -> str:
    status = incident.status.upper()
    head = f"{status} {incident.severity} {incident.entity}"
    since = f"since {incident.opened_at.astimezone(UTC):%Y-%m-%d %H:%M}Z"
    if incident.status == "resolved":
        end = incident.resolved_at or incident.updated_at
        first = f"{head}: back to normal after {_duration(end - incident.opened_at)}"
    elif incident.signals:
        first = f"{head}: {signal_line(incident.signals[0], short=True)} {since}"
    else:
        first = f"{head}: {_one_line(incident.summary)} {since}"
    ref = to_gsm(f"ref {thread_ref(incident, short=True)}")  # always there: it ties the thread together
    # (priority, text): lower number = more important; included while they fit whole, shown in list order
    extras: list[tuple[int, str]] = [(1 + i, signal_line(s, short=True)) for i, s in enumerate(incident.signals[1:3])]
    if incident.top_aspects:
        extras.append((1, "aspects: " + ", ".join(a for a, _ in incident.top_aspects[:3])))
    if incident.top_terms:
        extras.append((4, "terms: " + ", ".join(t for t, _ in incident.top_terms[:3])))
    body = _cut(to_gsm(first), SMS_LIMIT - gsm_length("; " + ref), ellipsis="...", measure=gsm_length)
    chosen: list[int] = []
    for idx in sorted(range(len(extras)), key=lambda i: extras[i][0]):
        trial = sorted([*chosen, idx])
        if gsm_length("; ".join([body, *(to_gsm(extras[i][1]) for i in trial), ref])) <= SMS_LIMIT:
            chosen = trial
    return "; ".join([body, *(to_gsm(extras[i][1]) for i in chosen), ref])


_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("^{}\\[~]|€\f")
_GSM_REPLACE = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"',
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2026": "...", "\u00a0": " ", "\t": " ",
    "\u00d7": "x", "\u2022": "-", "`": "'",
}  # fmt: skip


def gsm_length(text: str) -> int:
    """Septets ``text`` takes in GSM-7 (extension characters count twice).

    >>> gsm_length("abc"), gsm_length("a|b"), gsm_length("€5")
    (3, 4, 3)
    """
    return sum(2 if c in _GSM_EXTENDED else 1 for c in text)


def to_gsm(text: str) -> str:
    """Transliterate ``text`` into the GSM-7 alphabet (accents dropped, unknown characters -> ``?``).

    >>> to_gsm("naïve “café” — ok… 🙂")
    'naive "café" - ok... ?'
    """
    out: list[str] = []
    for c in text:
        if c in _GSM_BASIC or c in _GSM_EXTENDED:
            out.append(c)
        elif c in _GSM_REPLACE:
            out.append(_GSM_REPLACE[c])
        else:
            base = "".join(ch for ch in unicodedata.normalize("NFKD", c) if not unicodedata.combining(ch))
            out.append(base if base and all(ch in _GSM_BASIC for ch in base) else "?")
    return "".join(out)


# -- helpers --------------------------------------------------------------------------------

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"\+?\d[\d ().-]{7,}\d")


def _scrub(text: str) -> str:
    """Mask e-mail addresses and phone-like numbers (9+ digits) the enrichment may have missed.

    >>> _scrub("mail bob@example.com or call +44 20 7946 0958 on 2026-11-02")
    'mail [EMAIL] or call [PHONE] on 2026-11-02'
    """
    text = _EMAIL.sub("[EMAIL]", text)
    return _PHONE.sub(lambda m: "[PHONE]" if sum(c.isdigit() for c in m.group()) >= 9 else m.group(), text)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cut(text: str, limit: int, *, ellipsis: str = "…", measure: Callable[[str], int] = len) -> str:
    """Cut ``text`` to ``limit`` (as counted by ``measure``), at a word boundary when there is one.

    >>> _cut("the delivery was a disaster again", 20)
    'the delivery was a…'
    >>> _cut("supercalifragilisticexpialidocious", 10, ellipsis="...")
    'superca...'
    """
    if measure(text) <= limit:
        return text
    room = limit - measure(ellipsis)
    head = text
    while head and measure(head) > room:
        head = head[:-1]
    boundary = head.rfind(" ")
    if boundary >= len(head) // 2 and text[len(head) : len(head) + 1] != " ":
        head = head[:boundary]
    return head.rstrip(" ,;:.-") + ellipsis


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _duration(delta: timedelta) -> str:
    """``1h05m``-style duration.

    >>> _duration(timedelta(minutes=65)), _duration(timedelta(seconds=40)), _duration(timedelta(days=2, hours=3))
    ('1h05m', '1m', '2d03h')
    """
    minutes = max(1, round(delta.total_seconds() / 60))
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}h{mins:02d}m" if hours else f"{mins}m"
