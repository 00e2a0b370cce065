"""Server-rendered SVG charts: no script, no asset, readable without JavaScript.

:func:`line_chart` draws one series (``None`` gaps allowed) over time, with an optional band
(``lo``/``hi`` per point: the baseline's expected range) and vertical markers (the onset).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import UTC, datetime

__all__ = ["line_chart"]


def _fmt(v: float) -> str:
    if v != 0 and abs(v) < 0.01:
        return f"{v:.2g}"
    return f"{v:.2f}".rstrip("0").rstrip(".") if abs(v) < 100 else f"{v:.0f}"


def line_chart(
    ts: Sequence[float],
    values: Sequence[float | None],
    *,
    band: Sequence[tuple[float, float] | None] | None = None,
    markers: Sequence[tuple[float, str]] = (),
    title: str = "",
    width: int = 720,
    height: int = 220,
    css_class: str = "chart",
) -> str:
    """An SVG of ``values`` at ``ts`` (epoch seconds).

    >>> svg = line_chart([0, 60, 120], [1.0, None, 3.0], band=[(0.5, 1.5)] * 3, markers=[(60, "onset")])
    >>> svg.count("<path"), 'class="band"' in svg, "onset" in svg
    (2, True, True)
    """
    left, right, top, bottom = 48, 12, 22, 28
    w, h = width - left - right, height - top - bottom
    pts = [(t, v) for t, v in zip(ts, values, strict=True) if v is not None and math.isfinite(v)]
    ys = [v for _, v in pts]
    for b in band or ():
        if b is not None:
            ys.extend(b)
    esc = html.escape
    head = (
        f'<svg class="{esc(css_class)}" role="img" aria-label="{esc(title)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
        f'<text x="{left}" y="14" class="title">{esc(title)}</text>'
    )
    if not ts or not ys:
        return head + f'<text x="{left}" y="{top + h / 2}" class="empty">no data in this range</text></svg>'
    t0, t1 = ts[0], ts[-1] if ts[-1] > ts[0] else ts[0] + 1
    y0, y1 = min(0.0, min(ys)), max(ys)
    if y1 <= y0:
        y1 = y0 + 1
    y1 += (y1 - y0) * 0.05

    def x(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * w

    def y(v: float) -> float:
        return top + h - (v - y0) / (y1 - y0) * h

    parts = [head, f'<rect x="{left}" y="{top}" width="{w}" height="{h}" class="frame"/>']
    for i in range(5):  # horizontal grid with labels
        v = y0 + (y1 - y0) * i / 4
        parts.append(f'<line x1="{left}" x2="{left + w}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" class="axis" text-anchor="end">{_fmt(v)}</text>')
    for i in range(5):  # time labels (UTC)
        t = t0 + (t1 - t0) * i / 4
        label = datetime.fromtimestamp(t, UTC).strftime("%H:%M")
        parts.append(f'<text x="{x(t):.1f}" y="{top + h + 16}" class="axis" text-anchor="middle">{label}</text>')
    if band:
        upper = [(t, b[1]) for t, b in zip(ts, band, strict=True) if b is not None]
        lower = [(t, b[0]) for t, b in zip(ts, band, strict=True) if b is not None]
        if upper:
            poly = [f"{x(t):.1f},{y(v):.1f}" for t, v in upper] + [f"{x(t):.1f},{y(v):.1f}" for t, v in reversed(lower)]
            parts.append(f'<polygon class="band" points="{" ".join(poly)}"><title>baseline range</title></polygon>')
    d, pen = [], "M"
    for t, val in zip(ts, values, strict=True):
        if val is None or not math.isfinite(val):
            pen = "M"
            continue
        d.append(f"{pen}{x(t):.1f},{y(val):.1f}")
        pen = "L"
    parts.append(f'<path class="line" d="{" ".join(d)}"/>')
    for t, label in markers:
        if t0 <= t <= t1:
            parts.append(f'<path class="marker" d="M{x(t):.1f},{top} L{x(t):.1f},{top + h}"/>')
            parts.append(f'<text x="{x(t) + 3:.1f}" y="{top + 12}" class="marker-label">{esc(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
