"""Small inline SVG charts for the HTML report: no plotting library, no network.

Each function returns one ``<svg>`` element as text, sized by its ``viewBox`` so the page
scales it, with a ``<title>`` per mark so hovering shows the exact value.  Every number a
chart shows (axis ticks, values at bar ends, hover titles) goes through :func:`fmt`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

#: Colours for series, chosen to stay apart for common colour-vision deficiencies.
PALETTE = (
    "#4477aa",
    "#ee6677",
    "#228833",
    "#ccbb44",
    "#66ccee",
    "#aa3377",
    "#bbbbbb",
    "#000000",
)
#: A fixed colour per hook group so every chart agrees.
GROUP_COLOURS = {
    "irq": "#ee6677",
    "mmu": "#4477aa",
    "cpu": "#228833",
    "apic": "#ccbb44",
    "time": "#66ccee",
    "init": "#aa3377",
    "interrupts & exceptions": "#332288",
    "MMIO": "#44aa99",
    "other events": "#bbbbbb",
}

FONT = 'font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif"'


def colour(name: str, i: int) -> str:
    """The colour of a series: its group's, else the palette's i-th."""
    return GROUP_COLOURS.get(name, PALETTE[i % len(PALETTE)])


def fmt(v: float) -> str:
    """A number in three significant digits, with a k/M/G suffix from a thousand up and
    never an exponent: 0.25, 12, 999, 1.15k, 18.2k, 3.4M."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    r = float(f"{v:.3g}")  # rounded first: 999.96 is 1k, not 1000
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(r) >= div:
            return _digits(r / div) + suffix
    return _digits(r)


def plain(v: float) -> str:
    """A number in three significant digits, positionally (no suffix, no exponent)."""
    return "0" if v == 0 or not math.isfinite(v) else _digits(float(f"{v:.3g}"))


def _digits(x: float) -> str:
    """``x`` (already three significant digits) positionally, no trailing zeros."""
    if x == int(x):
        return str(int(x))
    places = max(0, 2 - math.floor(math.log10(abs(x))))
    return f"{x:.{places}f}".rstrip("0").rstrip(".")


def nice_ticks(top: float, n: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``top``."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    count = math.ceil(top / step - 1e-9)
    return [i * step for i in range(count + 1)]


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(label)}" {FONT} font-size="12">' + "".join(body) + "</svg>"
    )


def _text_width(names: Sequence[str]) -> int:
    """Roughly how wide the longest legend entry is at the charts' 12-unit font."""
    return 7 * max((len(n) for n in names), default=0) + 18


def _legend(names: Sequence[str], x: float, y: float) -> list[str]:
    out = []
    for i, n in enumerate(names):
        yy = y + i * 18
        out.append(
            f'<rect x="{x}" y="{yy}" width="12" height="12" rx="2" fill="{colour(n, i)}"/>'
            f'<text x="{x + 18}" y="{yy + 10}">{escape(n)}</text>'
        )
    return out


def stacked_bars(
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    unit: str = "",
    label: str = "stacked bars",
    width: int = 760,
) -> str:
    """Horizontal bars, one per category, stacked by series (e.g. backend by hook group)."""
    names = list(series)
    bar, gap, top = 22, 10, 16
    left = 16 + 7 * max((len(c) for c in categories), default=8)
    right = max(150, 60 + _text_width(names))
    height = top + len(categories) * (bar + gap) + 40
    height = max(height, top + 18 * len(names) + 20)
    totals = [sum(series[n][i] for n in names) for i in range(len(categories))]
    ticks = nice_ticks(max(totals, default=0))
    scale = (width - left - right) / ticks[-1]
    body = []
    axis_y = top + len(categories) * (bar + gap)
    for t in ticks:
        x = left + t * scale
        body.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{axis_y}" stroke="#e5e5e5"/>'
            f'<text x="{x:.1f}" y="{axis_y + 16}" text-anchor="middle" fill="#555">'
            f"{fmt(t)}</text>"
        )
    if unit:
        body.append(
            f'<text x="{left + (width - left - right) / 2}" y="{axis_y + 32}" '
            f'text-anchor="middle" fill="#555">{escape(unit)}</text>'
        )
    for i, cat in enumerate(categories):
        y = top + i * (bar + gap)
        body.append(
            f'<text x="{left - 8}" y="{y + bar / 2 + 4}" text-anchor="end">{escape(cat)}</text>'
        )
        x = float(left)
        for j, n in enumerate(names):
            v = series[n][i]
            if v <= 0:
                continue
            w = v * scale
            body.append(
                f'<rect x="{x:.1f}" y="{y}" width="{max(w, 0.5):.1f}" height="{bar}" '
                f'fill="{colour(n, j)}"><title>{escape(cat)} · {escape(n)}: {fmt(v)} '
                f"{escape(unit)}</title></rect>"
            )
            x += w
        body.append(
            f'<text x="{x + 6:.1f}" y="{y + bar / 2 + 4}" fill="#333">{fmt(totals[i])}</text>'
        )
    body += _legend(names, width - right + 30, top)
    return _svg(width, height + 20, body, label)


def columns(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    xlabel: str = "",
    ylabel: str = "",
    label: str = "histogram",
    width: int = 760,
    height: int = 290,
    fill: str = PALETTE[0],
) -> str:
    """Vertical bars with a label under each (a histogram of buckets)."""
    left, right, top, bottom = 56, 16, 16, 84
    ticks = nice_ticks(max(values, default=0))
    h = height - top - bottom
    n = max(len(values), 1)
    slot = (width - left - right) / n
    body = []
    for t in ticks:
        y = top + h - t / ticks[-1] * h
        body.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#e5e5e5"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{fmt(t)}</text>'
        )
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        bh = v / ticks[-1] * h
        x = left + i * slot + slot * 0.1
        body.append(
            f'<rect x="{x:.1f}" y="{top + h - bh:.1f}" width="{slot * 0.8:.1f}" '
            f'height="{bh:.1f}" fill="{fill}" rx="2"><title>{escape(lab)}: {fmt(v)}</title></rect>'
        )
        if n <= 24 or i % math.ceil(n / 24) == 0:
            body.append(
                f'<text x="{x + slot * 0.4:.1f}" y="{top + h + 14}" text-anchor="end" '
                f'transform="rotate(-35 {x + slot * 0.4:.1f} {top + h + 14})" fill="#555">'
                f"{escape(lab)}</text>"
            )
    if xlabel:
        body.append(
            f'<text x="{left + (width - left - right) / 2}" y="{height - 4}" '
            f'text-anchor="middle" fill="#555">{escape(xlabel)}</text>'
        )
    if ylabel:
        body.append(
            f'<text x="12" y="{top + h / 2}" text-anchor="middle" fill="#555" '
            f'transform="rotate(-90 12 {top + h / 2})">{escape(ylabel)}</text>'
        )
    return _svg(width, height, body, label)


def lines(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    xlabel: str = "",
    ylabel: str = "",
    label: str = "lines",
    width: int = 760,
    height: int = 280,
    clip: float | None = None,
) -> str:
    """One polyline per series over a shared x axis (e.g. hook rate over virtual time).

    With ``clip``, the y axis ends at the first tick at or above it: higher points are drawn
    on the top edge, marked with a triangle, and the chart says where it is clipped and what
    the peak is.
    """
    names = list(series)
    left, right, top, bottom = 56, max(110, 30 + _text_width(names)), 16 + (14 if clip else 0), 44
    peak = max((max(v, default=0) for v in series.values()), default=0)
    ymax = min(peak, clip) if clip else peak
    yt = nice_ticks(ymax)
    xt = nice_ticks(max(x, default=0))
    w, h = width - left - right, height - top - bottom

    def px(v: float) -> float:
        return left + v / xt[-1] * w

    def py(v: float) -> float:
        return top + h - min(v, yt[-1]) / yt[-1] * h

    body = []
    for t in yt:
        body.append(
            f'<line x1="{left}" y1="{py(t):.1f}" x2="{left + w}" y2="{py(t):.1f}" '
            f'stroke="#e5e5e5"/><text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end" '
            f'fill="#555">{fmt(t)}</text>'
        )
    for t in xt:
        body.append(
            f'<text x="{px(t):.1f}" y="{top + h + 16}" text-anchor="middle" fill="#555">'
            f"{fmt(t)}</text>"
        )
    clipped = False
    for j, n in enumerate(names):
        pts = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(x, series[n], strict=True))
        body.append(
            f'<polyline points="{pts}" fill="none" stroke="{colour(n, j)}" stroke-width="1.8" '
            f'stroke-linejoin="round"><title>{escape(n)}</title></polyline>'
        )
        for a, b in zip(x, series[n], strict=True):
            if b > yt[-1]:
                clipped = True
                body.append(
                    f'<path d="M{px(a) - 4:.1f},{top - 2} l4,-7 l4,7 z" fill="{colour(n, j)}">'
                    f"<title>{escape(n)}: {fmt(b)} at {fmt(a)} (above the axis)</title></path>"
                )
    if clipped:
        body.append(
            f'<text x="{left + w}" y="12" text-anchor="end" fill="#555">'
            f"axis clipped at {fmt(yt[-1])} (\u25b2: higher, peak {fmt(peak)})</text>"
        )
    body.append(f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" stroke="#999"/>')
    if xlabel:
        body.append(
            f'<text x="{left + w / 2}" y="{height - 4}" text-anchor="middle" fill="#555">'
            f"{escape(xlabel)}</text>"
        )
    if ylabel:
        body.append(
            f'<text x="12" y="{top + h / 2}" text-anchor="middle" fill="#555" '
            f'transform="rotate(-90 12 {top + h / 2})">{escape(ylabel)}</text>'
        )
    body += _legend(names, left + w + 16, top)
    return _svg(width, height, body, label)
