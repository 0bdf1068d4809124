"""Small SVG charts drawn on the server from numbers: no plotting library, no front-end build.

Every label is either a constant or a number, and all text is XML-escaped anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 420, 300
LEFT, RIGHT, TOP, BOTTOM = 50, 15, 30, 45
COLORS = ("#2f5bd3", "#d9480f", "#2b8a3e")


def _x(value: float, low: float, high: float) -> float:
    return LEFT + (value - low) / ((high - low) or 1) * (WIDTH - LEFT - RIGHT)


def _y(value: float, low: float, high: float) -> float:
    return HEIGHT - BOTTOM - (value - low) / ((high - low) or 1) * (HEIGHT - TOP - BOTTOM)


def _frame(
    title: str,
    x_label: str,
    y_label: str,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    body: list[str],
    legend: Sequence[str] = (),
) -> str:
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" font-size="13">{escape(title)}</text>',
        f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" '
        f'height="{HEIGHT - TOP - BOTTOM}" fill="none" stroke="#999"/>',
    ]
    for i in range(5):
        xv = x_range[0] + i * (x_range[1] - x_range[0]) / 4
        yv = y_range[0] + i * (y_range[1] - y_range[0]) / 4
        parts.append(
            f'<text x="{_x(xv, *x_range):.1f}" y="{HEIGHT - BOTTOM + 14}" '
            f'text-anchor="middle">{xv:.3g}</text>'
        )
        parts.append(
            f'<text x="{LEFT - 4}" y="{_y(yv, *y_range) + 4:.1f}" text-anchor="end">{yv:.3g}</text>'
        )
    parts.append(
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 8}" '
        f'text-anchor="middle">{escape(x_label)}</text>'
    )
    parts.append(
        f'<text x="12" y="{(TOP + HEIGHT - BOTTOM) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 12 {(TOP + HEIGHT - BOTTOM) / 2})">{escape(y_label)}</text>'
    )
    parts.extend(body)
    for i, name in enumerate(legend):
        parts.append(
            f'<rect x="{LEFT + 8}" y="{TOP + 8 + 14 * i}" width="10" height="10" '
            f'fill="{COLORS[i % len(COLORS)]}"/>'
        )
        parts.append(f'<text x="{LEFT + 22}" y="{TOP + 17 + 14 * i}">{escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _polyline(points: Sequence[tuple[float, float]], color: str, dashed: bool = False) -> str:
    coordinates = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    dash = ' stroke-dasharray="4 3"' if dashed else ""
    return f'<polyline points="{coordinates}" fill="none" stroke="{color}" stroke-width="2"{dash}/>'


def reliability_svg(curve: Sequence[dict[str, float]]) -> str:
    """Observed share chosen against predicted P(chosen), beside the diagonal of calibration."""
    body = [
        _polyline([(_x(0, 0, 1), _y(0, 0, 1)), (_x(1, 0, 1), _y(1, 0, 1))], "#999", dashed=True)
    ]
    points = [(_x(b["predicted"], 0, 1), _y(b["observed"], 0, 1)) for b in curve if b["count"]]
    body.append(_polyline(points, COLORS[0]))
    body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{COLORS[0]}"/>' for x, y in points]
    return _frame(
        "Reliability (held-out)",
        "predicted P(chosen)",
        "observed share chosen",
        (0, 1),
        (0, 1),
        body,
    )


def histogram_svg(series: dict[str, Sequence[float]], bins: int = 30) -> str:
    """Overlaid histograms, e.g. rewards of the chosen and of the rejected completions."""
    values = [v for vs in series.values() for v in vs]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high == low:
        low, high = low - 1, high + 1
    width = (high - low) / bins
    counts = {
        name: [
            sum(
                1
                for v in vs
                if low + i * width <= v < low + (i + 1) * width or (i == bins - 1 and v == high)
            )
            for i in range(bins)
        ]
        for name, vs in series.items()
    }
    top = max((c for cs in counts.values() for c in cs), default=1) or 1
    body = []
    for index, cs in enumerate(counts.values()):
        color = COLORS[index % len(COLORS)]
        for i, count in enumerate(cs):
            if count:
                x0, x1 = _x(low + i * width, low, high), _x(low + (i + 1) * width, low, high)
                y = _y(count, 0, top)
                body.append(
                    f'<rect x="{x0:.1f}" y="{y:.1f}" width="{x1 - x0:.1f}" '
                    f'height="{_y(0, 0, top) - y:.1f}" fill="{color}" fill-opacity="0.45"/>'
                )
    return _frame(
        "Rewards on held-out pairs",
        "reward",
        "pairs",
        (low, high),
        (0, top),
        body,
        legend=list(series),
    )


def learning_curve_svg(points: Sequence[dict[str, float]], ceiling: float | None = None) -> str:
    """Held-out accuracy against the number of training comparisons."""
    if not points:
        return _frame(
            "Learning curve", "training comparisons", "held-out accuracy", (0, 1), (0.4, 1), []
        )
    x_high = max(p["comparisons"] for p in points) or 1
    line = [(_x(p["comparisons"], 0, x_high), _y(p["accuracy"], 0.4, 1)) for p in points]
    body = [_polyline(line, COLORS[0])]
    body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{COLORS[0]}"/>' for x, y in line]
    legend = ["model"]
    if ceiling is not None:
        y = _y(ceiling, 0.4, 1)
        body.append(_polyline([(_x(0, 0, x_high), y), (_x(x_high, 0, x_high), y)], COLORS[1], True))
        legend.append("labeler agreement")
    return _frame(
        "Learning curve",
        "training comparisons",
        "held-out accuracy",
        (0, x_high),
        (0.4, 1),
        body,
        legend=legend,
    )
