"""Charts as server-rendered SVG: no script, no inline style (presentation attributes and the console's
stylesheet classes only), so they pass the console's Content-Security-Policy and print as they show.

    bars(items, ...)      horizontal bars with 95% error bars: band shares by village, counts by cell
    lorenz(points)        the Lorenz curve with its band, against the line of equality
    line(points, ...)     a figure over time with its band: the urban-rural ratio by month

Every label is escaped here; the result is `Markup` for the templates. Values are released (noisy)
figures and their intervals, never data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

__all__ = ["Bar", "Point", "bars", "line", "lorenz"]


@dataclass(frozen=True)
class Bar:
    label: str
    value: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class Point:
    x: float
    y: float | None
    low: float | None
    high: float | None
    label: str = ""


def _svg(parts: Sequence[str]) -> Markup:
    # Every text part above went through `escape`; numbers are formatted by us.
    return Markup("".join(parts))  # noqa: S704


def _f(value: float) -> str:
    return f"{value:.1f}"


def _ok(*values: float | None) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def _fmt(value: float, percent: bool) -> str:
    return f"{value * 100:.1f}%" if percent else f"{value:,.4g}"


def bars(
    items: Sequence[Bar],
    *,
    title: str,
    percent: bool = True,
    target: float | None = None,
    target_label: str = "",
) -> Markup:
    """One bar per item, its interval as an error bar; `target` draws a dashed reference line."""
    label_width, plot, row = 230, 520, 22
    height = 40 + row * max(1, len(items))
    finite = [v for b in items for v in (b.value, b.high) if v is not None and math.isfinite(v)]
    top = max([*finite, target or 0, 1e-9])
    top = 1.0 if percent and top <= 1 else top * 1.05
    lowest = min([0.0, *(v for b in items for v in (b.value, b.low) if v is not None and math.isfinite(v))])

    def x(v: float) -> float:
        return label_width + (v - lowest) / (top - lowest) * plot

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {label_width + plot + 80} {height}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<text x="4" y="14" font-weight="bold">{escape(title)}</text>',
        f'<line class="axis" x1="{_f(x(0))}" y1="24" x2="{_f(x(0))}" y2="{height - 8}"/>',
    ]
    for i, b in enumerate(items):
        y = 28 + i * row
        parts.append(f'<text x="{label_width - 6}" y="{y + 13}" text-anchor="end">{escape(b.label)}</text>')
        if b.value is None or not math.isfinite(b.value):
            parts.append(f'<text x="{_f(x(0) + 4)}" y="{y + 13}">—</text>')
            continue
        left, right = sorted((x(0), x(b.value)))
        parts.append(
            f'<rect class="bar" x="{_f(left)}" y="{y + 3}" '
            f'width="{_f(max(right - left, 1))}" height="{row - 8}">'
            f"<title>{escape(b.label)}: {_fmt(b.value, percent)}</title></rect>"
        )
        if _ok(b.low, b.high):
            assert b.low is not None and b.high is not None
            mid = y + row / 2 - 1
            parts.append(
                f'<path class="err" d="M{_f(x(b.low))} {_f(mid)}H{_f(x(b.high))}'
                f'M{_f(x(b.low))} {_f(mid - 5)}V{_f(mid + 5)}M{_f(x(b.high))} {_f(mid - 5)}V{_f(mid + 5)}"/>'
            )
        parts.append(
            f'<text x="{_f(x(max(b.value, b.high or b.value)) + 6)}" y="{y + 13}">'
            f"{_fmt(b.value, percent)}</text>"
        )
    if target is not None:
        parts.append(
            f'<line class="target" x1="{_f(x(target))}" y1="24" x2="{_f(x(target))}" y2="{height - 8}"/>'
        )
        parts.append(f'<text x="{_f(x(target) + 3)}" y="34">{escape(target_label)}</text>')
    parts.append("</svg>")
    return _svg(parts)


def lorenz(points: Sequence[Point], *, title: str, x_label: str, y_label: str) -> Markup:
    """Cumulative share of income (y) against cumulative share of units (x), both 0..1, with the band."""
    size, pad = 360, 44

    def px(v: float) -> float:
        return pad + v * size

    def py(v: float) -> float:
        return pad + (1 - v) * size

    curve = [(0.0, 0.0, 0.0, 0.0)] + [
        (p.x, p.y, p.low if p.low is not None else p.y, p.high if p.high is not None else p.y)
        for p in points
        if _ok(p.x, p.y)
    ]
    curve.append((1.0, 1.0, 1.0, 1.0))
    line_d = "M" + " L".join(f"{_f(px(x))} {_f(py(y or 0))}" for x, y, _, _ in curve)
    upper = [f"{_f(px(x))} {_f(py(min(1.0, h or 0)))}" for x, _, _, h in curve]
    lower = [f"{_f(px(x))} {_f(py(max(0.0, lo or 0)))}" for x, _, lo, _ in reversed(curve)]
    band_d = "M" + " L".join(upper + lower) + " Z"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size + 2 * pad} {size + 2 * pad}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text x="4" y="16" font-weight="bold">{escape(title)}</text>',
        f'<rect x="{pad}" y="{pad}" width="{size}" height="{size}" fill="none" class="axis"/>',
        f'<path class="diag" d="M{px(0)} {py(0)} L{px(1)} {py(1)}"/>',
        f'<path class="band" d="{band_d}"/>',
        f'<path class="line" d="{line_d}"/>',
        f'<text x="{pad + size / 2}" y="{size + pad + 30}" text-anchor="middle">{escape(x_label)}</text>',
        f'<text x="12" y="{pad + size / 2}" transform="rotate(-90 12 {pad + size / 2})" text-anchor="middle">'
        f"{escape(y_label)}</text>",
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<text x="{_f(px(tick))}" y="{size + pad + 14}" text-anchor="middle">{tick:.0%}</text>')
        parts.append(f'<text x="{pad - 4}" y="{_f(py(tick) + 4)}" text-anchor="end">{tick:.0%}</text>')
    parts.append("</svg>")
    return _svg(parts)


def line(
    points: Sequence[Point], *, title: str, target: float | None = None, target_label: str = ""
) -> Markup:
    """Values over ordered points (months), the band between low and high, a dashed target."""
    width, height, pad = 640, 260, 48
    values = [v for p in points for v in (p.y, p.low, p.high) if v is not None and math.isfinite(v)]
    if target is not None:
        values.append(target)
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    lo, hi = lo - (hi - lo) * 0.08, hi + (hi - lo) * 0.08
    n = max(1, len(points) - 1)

    def px(i: int) -> float:
        return pad + i / n * (width - 2 * pad)

    def py(v: float) -> float:
        return height - pad - (v - lo) / (hi - lo) * (height - 2 * pad)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text x="4" y="16" font-weight="bold">{escape(title)}</text>',
        f'<line class="axis" x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}"/>',
    ]
    banded = [(i, p) for i, p in enumerate(points) if _ok(p.low, p.high)]
    if banded:
        upper = [f"{_f(px(i))} {_f(py(p.high or 0))}" for i, p in banded]
        lower = [f"{_f(px(i))} {_f(py(p.low or 0))}" for i, p in reversed(banded)]
        parts.append(f'<path class="band" d="M{" L".join(upper + lower)} Z"/>')
    drawn = [(i, p) for i, p in enumerate(points) if _ok(p.y)]
    if drawn:
        parts.append(
            f'<path class="line" d="M{" L".join(f"{_f(px(i))} {_f(py(p.y or 0))}" for i, p in drawn)}"/>'
        )
        for i, p in drawn:
            parts.append(
                f'<circle cx="{_f(px(i))}" cy="{_f(py(p.y or 0))}" r="3" class="bar">'
                f"<title>{escape(p.label)}: "
                f"{(p.y or 0):.3f}</title></circle>"
            )
    for i, p in enumerate(points):
        parts.append(
            f'<text x="{_f(px(i))}" y="{height - pad + 16}" text-anchor="middle">{escape(p.label)}</text>'
        )
    for v in (lo, (lo + hi) / 2, hi):
        parts.append(f'<text x="{pad - 6}" y="{_f(py(v) + 4)}" text-anchor="end">{v:.2f}</text>')
    if target is not None:
        parts.append(
            f'<line class="target" x1="{pad}" y1="{_f(py(target))}" '
            f'x2="{width - pad}" y2="{_f(py(target))}"/>'
        )
        parts.append(
            f'<text x="{width - pad}" y="{_f(py(target) - 4)}" text-anchor="end">'
            f"{escape(target_label)}</text>"
        )
    parts.append("</svg>")
    return _svg(parts)
