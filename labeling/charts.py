"""The staff pages' charts (quality dashboard, model leaderboard), drawn on the server as small
SVG documents.

Labels are constants, dates, numbers and model names (from imported files); all text is
XML-escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape

ACCENT = "#2f5bd3"


def daily_rate_svg(days: Sequence[dict[str, Any]], width: int = 640, height: int = 180) -> str:
    """Rankings per day as bars, oldest on the left."""
    left, bottom, top = 40, 30, 12
    top_count = max((day["count"] for day in days), default=0) or 1
    plot_width = width - left - 10
    bar = plot_width / max(len(days), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" font-family="sans-serif" font-size="11" role="img">',
        "<title>Rankings per day</title>",
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{top_count}</text>',
        f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">0</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" '
        'stroke="#999"/>',
    ]
    for i, day in enumerate(days):
        h = (height - bottom - top) * day["count"] / top_count
        x = left + i * bar
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{height - bottom - h:.1f}" width="{max(bar - 2, 1):.1f}" '
            f'height="{h:.1f}" fill="{ACCENT}"><title>{escape(day["day"])}: '
            f"{day['count']}</title></rect>"
        )
    for i in sorted({0, len(days) - 1}) if days else []:
        parts.append(
            f'<text x="{left + (i + 0.5) * bar:.1f}" y="{height - bottom + 14}" '
            f'text-anchor="middle">{escape(days[i]["day"])}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def intervals_svg(rows: Sequence[tuple[str, float | None, float | None, float | None]]) -> str:
    """One line per statistic: its value as a dot and its 95% interval as a whisker."""
    width, label_width, right, step = 640, 190, 20, 26
    values = [v for _, *vs in rows for v in vs if v is not None]
    low = min([0.0, *values])
    high = 1.0
    height = 30 + step * len(rows)

    def x(value: float) -> float:
        return label_width + (value - low) / (high - low) * (width - label_width - right)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" font-family="sans-serif" font-size="11" role="img">',
        "<title>Agreement with 95% intervals</title>",
    ]
    for tick in (low, 0.0, 0.5, 1.0) if low < 0 else (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{x(tick):.1f}" y1="8" x2="{x(tick):.1f}" y2="{height - 18}" '
            'stroke="#ddd"/>'
            f'<text x="{x(tick):.1f}" y="{height - 5}" text-anchor="middle">{tick:.2g}</text>'
        )
    for i, (label, value, lo, hi) in enumerate(rows):
        y = 20 + step * i
        parts.append(f'<text x="4" y="{y + 4}">{escape(label)}</text>')
        if value is None:
            parts.append(
                f'<text x="{label_width}" y="{y + 4}" fill="#667085">not enough data</text>'
            )
            continue
        if lo is not None and hi is not None:
            parts.append(
                f'<line x1="{x(lo):.1f}" y1="{y}" x2="{x(hi):.1f}" y2="{y}" stroke="{ACCENT}" '
                'stroke-width="2"/>'
            )
        parts.append(
            f'<circle cx="{x(value):.1f}" cy="{y}" r="4" fill="{ACCENT}"><title>'
            f"{escape(label)}: {value:.3f}</title></circle>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering low..high, about `count` of them."""
    span = max(high - low, 1e-9)
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)]


def leaderboard_svg(rows: Sequence[dict[str, Any]], width: int = 720) -> str:
    """One line per model, best on top: its score as a dot and its 95% interval as a whisker.
    Model names come from imported files: escaped, and cut to fit the label column."""
    label_width, right, step = 210, 24, 20
    height = 36 + step * len(rows)
    values = [row[key] for row in rows for key in ("low", "score", "high")]
    low, high = (min(values), max(values)) if values else (900.0, 1100.0)
    pad = max((high - low) * 0.05, 5.0)
    low, high = low - pad, high + pad

    def x(value: float) -> float:
        return label_width + (value - low) / (high - low) * (width - label_width - right)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" font-family="sans-serif" font-size="11" role="img">',
        "<title>Model scores with 95% bootstrap intervals</title>",
    ]
    for tick in nice_ticks(low, high):
        parts.append(
            f'<line x1="{x(tick):.1f}" y1="8" x2="{x(tick):.1f}" y2="{height - 18}" '
            'stroke="#ddd"/>'
            f'<text x="{x(tick):.1f}" y="{height - 5}" text-anchor="middle">{tick:g}</text>'
        )
    for i, row in enumerate(rows):
        y = 20 + step * i
        name = str(row["model"])
        shown = name if len(name) <= 32 else name[:31] + "…"
        label = f"{row['rank']}. {shown}"
        parts.append(f'<text x="4" y="{y + 4}">{escape(label)}</text>')
        parts.append(
            f'<line x1="{x(row["low"]):.1f}" y1="{y}" x2="{x(row["high"]):.1f}" y2="{y}" '
            f'stroke="{ACCENT}" stroke-width="2"/>'
            f'<circle cx="{x(row["score"]):.1f}" cy="{y}" r="4" fill="{ACCENT}"><title>'
            f"{escape(name)}: {row['score']:.0f} ({row['low']:.0f} to {row['high']:.0f})"
            "</title></circle>"
        )
    parts.append("</svg>")
    return "\n".join(parts)
