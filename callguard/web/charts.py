"""Inline SVG charts, server-rendered: no script, no file fetched, readable at a glance on a phone.

Each function returns one ``<svg>`` element sized by its ``viewBox`` (it scales to the width it is
given) with a ``<title>`` per mark for a tooltip. Every label is HTML-escaped here: DIDs and reasons are
data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

GREEN = "#2e7d32"
ORANGE = "#ef6c00"
RED = "#c62828"
GREY = "#9e9e9e"
TRACK = "#e8eaed"
INK = "#202124"
MUTED = "#5f6368"


@dataclass(frozen=True)
class Segment:
    label: str
    value: int
    color: str


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def hbars(items: Sequence[tuple[str, int]], color: str = ORANGE, caption: str = "",
          keys: Sequence[str] = ()) -> str:
    """Horizontal bars, one per (label, value) in the order given: the label and the value as text (they
    wrap and stay readable at any width), the bar an SVG stretched to its cell. ``keys`` name the rows
    (``data-key``) for a reader other than the eye."""
    if not items:
        return ""
    top = max(v for _, v in items) or 1
    out = [f'<div class="hbars" role="img" aria-label="{escape(caption)}">']
    for i, (label, value) in enumerate(items):
        key = f' data-key="{escape(keys[i])}"' if i < len(keys) else ""
        w = max(1.0, 100 * value / top) if value else 0.0
        out.append(
            f'<div class="hbar"{key} title="{escape(label)}: {value}"><span class="l">{escape(label)}</span>'
            f'<svg viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true">'
            f'<rect width="100" height="10" rx="1.5" fill="{TRACK}"/>'
            f'<rect width="{_num(w)}" height="10" rx="1.5" fill="{color}"/></svg><b class="v">{value}</b></div>'
        )
    out.append("</div>")
    return "".join(out)


def columns(days: Sequence[tuple[str, Sequence[Segment]]], caption: str = "") -> str:
    """Stacked columns, one per (day label, segments bottom-up): the bars one SVG stretched to the width,
    the scale and the day labels text beside and under it (a label under every few columns)."""
    if not days:
        return ""
    peak = max((sum(s.value for s in segs) for _, segs in days), default=0) or 1
    n = len(days)
    every = max(1, math.ceil(n / 7))
    bars = []
    for i, (label, segs) in enumerate(days):
        y = 100.0
        tip = ", ".join(f"{s.label} {s.value}" for s in segs)
        bars.append(f"<g><title>{escape(label)}: {escape(tip)}</title>")
        bars.append(f'<rect x="{i * 10}" y="0" width="10" height="100" fill="transparent"/>')
        for s in segs:
            if not s.value:
                continue
            h = 100 * s.value / peak
            y -= h
            bars.append(f'<rect x="{i * 10 + 1.5}" y="{_num(y)}" width="7" height="{_num(h)}" fill="{s.color}"/>')
        bars.append("</g>")
    # Counted back from the newest column, so today always has its label.
    labels = "".join(f"<span>{escape(label) if (n - 1 - i) % every == 0 else ''}</span>"
                     for i, (label, _) in enumerate(days))
    return (
        f'<div class="cols" role="img" aria-label="{escape(caption)}"><div class="y"><span>{peak}</span><span>0</span>'
        f'</div><svg viewBox="0 0 {n * 10} 100" preserveAspectRatio="none">{"".join(bars)}</svg>'
        f'<div class="x" style="grid-template-columns:repeat({n},1fr)">{labels}</div></div>'
    )


def ring(share: float | None, color: str = GREEN, size: int = 88, caption: str = "") -> str:
    """A ring filled to ``share`` (0…1) with the percentage inside; an empty grey ring for no data."""
    r, stroke = size / 2 - 8, 12
    c = 2 * math.pi * r
    text = "–" if share is None else f"{share * 100:.0f}%"
    dash = 0.0 if share is None else c * max(0.0, min(1.0, share))
    mid = size / 2
    return (
        f'<svg class="ring" viewBox="0 0 {size} {size}" width="{size}" height="{size}" role="img" '
        f'aria-label="{escape(caption)}"><title>{escape(caption)}: {text}</title>'
        f'<circle cx="{mid}" cy="{mid}" r="{_num(r)}" fill="none" stroke="{TRACK}" stroke-width="{stroke}"/>'
        f'<circle cx="{mid}" cy="{mid}" r="{_num(r)}" fill="none" stroke="{color}" stroke-width="{stroke}" '
        f'stroke-dasharray="{_num(dash)} {_num(c)}" transform="rotate(-90 {mid} {mid})" stroke-linecap="butt"/>'
        f'<text x="{mid}" y="{mid + 6}" font-size="18" font-weight="700" text-anchor="middle" '
        f'fill="{INK}">{text}</text></svg>'
    )


def meter(share: float | None, width: int = 120, height: int = 12) -> str:
    """A small bar for a share inside a table cell (answer rate per number)."""
    w = 0.0 if share is None else width * max(0.0, min(1.0, share))
    color = GREY if share is None else GREEN if share >= 0.8 else ORANGE if share >= 0.5 else RED
    return (f'<svg class="meter" viewBox="0 0 {width} {height}" width="{width}" height="{height}" aria-hidden="true">'
            f'<rect width="{width}" height="{height}" rx="3" fill="{TRACK}"/>'
            f'<rect width="{_num(w)}" height="{height}" rx="3" fill="{color}"/></svg>')
