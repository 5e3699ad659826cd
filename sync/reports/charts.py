"""Inline SVG charts for the HTML report: a dated line chart and a dated bar chart with axes,
ticks and labels. Pure functions of their data; they scale with the page (a viewBox, no fixed
pixel size) and need no script or font."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

W, H = 360, 180  # viewBox units; rendered at the width of its box
BAR_H = 160
PAD_L, PAD_R, PAD_T, PAD_B = 46, 26, 12, 26
DAY = timedelta(days=1)
STEPS = [timedelta(minutes=m) for m in (1, 5, 15, 30)] + \
    [timedelta(hours=h) for h in (1, 3, 6, 12)] + [DAY * d for d in (1, 2, 7, 14)]


def fmt_num(v: float) -> str:
    """An axis label: 950, 1.2k, 25k, 1.5M."""
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 1e3:
        return f"{v / 1e3:.2g}k"
    return f"{v:g}"


def nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """Round tick values (1, 2, 5 x 10^k apart) covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 10))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(v, 10))
    return ticks


def _label(t: datetime, step: timedelta, span: timedelta, same_day: bool) -> str:
    if step >= DAY and (t.hour, t.minute) == (0, 0):
        return f"{t:%b} {t.day}"
    if span < DAY and same_day:
        return f"{t:%H:%M}"
    return f"{t:%b} {t.day} {t:%H:%M}"


def time_ticks(t0: datetime, t1: datetime, n: int = 4,
               at: list[datetime] | None = None) -> list[tuple[datetime, str]]:
    """Dated ticks between t0 and t1: at the times ``at`` when there are at most ``n`` of
    them and they are far enough apart, else at a round step. "Nov 3" for days, "Nov 3 06:00"
    within days, "12:30" within one day."""
    span = max(t1 - t0, timedelta(minutes=1))
    same_day = t0.date() == t1.date()
    times = sorted(set(at or []))
    if times and len(times) <= n and all(b - a >= span / (2 * n)
                                         for a, b in zip(times, times[1:], strict=False)):
        step = min((b - a for a, b in zip(times, times[1:], strict=False)), default=DAY)
        return [(t, _label(t, step, span, same_day)) for t in times]
    step = next((s for s in STEPS if span / s <= n), None)
    if step is None:  # months: the first of each month (every k-th)
        k = max(1, math.ceil(span.days / 30 / n))
        out, y, m = [], t0.year, t0.month
        while True:
            m += 1
            if m > 12:
                y, m = y + 1, 1
            t = datetime(y, m, 1)
            if t > t1:
                return out
            if (m - 1) % k == 0:
                out.append((t, t.strftime("%b %Y") if m == 1 or not out else t.strftime("%b")))
    base = datetime(t0.year, t0.month, t0.day)
    t = base + math.ceil((t0 - base) / step) * step
    out = []
    while t <= t1:
        out.append((t, _label(t, step, span, same_day)))
        t += step
    return out


@dataclass
class Series:
    label: str
    points: list[tuple[datetime, float]]
    css: str  # a class of the report's stylesheet: stroke colour and dash


def _xrange(times: list[datetime]) -> tuple[datetime, datetime]:
    t0, t1 = min(times), max(times)
    if t1 - t0 < timedelta(minutes=1):  # one run: a day either side
        t0, t1 = t0 - DAY, t1 + DAY
    return t0, t1


def _frame(t0: datetime, t1: datetime, yt: list[float], at: list[datetime], inset: float = 6,
           h: int = H) -> tuple[list[str], Callable, Callable]:
    """Grid, y labels and dated x ticks; the x and y scales. ``inset`` keeps the first and
    last runs off the axis."""
    x0, x1, y0, y1 = PAD_L, W - PAD_R, h - PAD_B, PAD_T
    span = (t1 - t0).total_seconds()

    def sx(t: datetime) -> float:
        return x0 + inset + (t - t0).total_seconds() / span * (x1 - x0 - 2 * inset)

    def sy(v: float) -> float:
        return y0 - (v - yt[0]) / (yt[-1] - yt[0]) * (y0 - y1)

    parts = []
    for v in yt:
        y = sy(v)
        parts.append(f'<line class="grid" x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="yl" x="{x0 - 5}" y="{y + 4:.1f}">{fmt_num(v)}</text>')
    for t, label in time_ticks(t0, t1, at=at):
        x = sx(t)
        parts.append(f'<line class="tick" x1="{x:.1f}" x2="{x:.1f}" y1="{y0}" y2="{y0 + 4}"/>'
                     f'<text class="xl" x="{x:.1f}" y="{y0 + 16}">{escape(label)}</text>')
    parts.append(f'<line class="axis" x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}"/>')
    return parts, sx, sy


def line_chart(series: list[Series], title: str) -> str:
    """A dated line chart: y from 0 (or below, for negative values) to a round top, a dot per
    run, the last value of each series labelled."""
    pts = [p for s in series for p in s.points]
    if not pts:
        return '<p class="none">no runs recorded yet</p>'
    t0, t1 = _xrange([t for t, _ in pts])
    values = [v for _, v in pts]
    yt = nice_ticks(min(0, *values), max(values) or 1)
    parts, sx, sy = _frame(t0, t1, yt, [t for t, _ in pts])
    for s in series:
        if not s.points:
            continue
        xy = [(sx(t), sy(v)) for t, v in s.points]
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        parts.append(f'<polyline class="{s.css}" points="{line}"/>')
        r = 2.6 if len(s.points) <= 40 else 1.2  # dots, small when there are many runs
        tips = "".join(f'<circle class="{s.css}" cx="{x:.1f}" cy="{y:.1f}" r="{r}">'
                       f"<title>{escape(s.label)} {t:%Y-%m-%d %H:%M}: {v:,.0f}</title></circle>"
                       for (x, y), (t, v) in zip(xy, s.points, strict=True))
        parts.append(tips)
    return (f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" '
            f'aria-label="{escape(title)}"><title>{escape(title)}</title>{"".join(parts)}</svg>')


def bar_chart(runs: list[tuple[datetime, int, int]], title: str) -> str:
    """Adds (up) and removes (down) per run on a dated axis; counts written on the bars
    when there are few runs."""
    if not runs:
        return '<p class="none">no runs recorded yet</p>'
    h = BAR_H
    t0, t1 = _xrange([t for t, _, _ in runs])
    top = max(max(a for _, a, _ in runs), 1)
    bottom = max(r for _, _, r in runs)
    yt = nice_ticks(-bottom, top, 3)
    # bars as wide as the closest two runs allow, at most 14 units each
    n = len({t for t, _, _ in runs})
    bw = max(1.5, min(14, (W - PAD_L - PAD_R) / max(n, 1) * 0.3))
    parts, sx, sy = _frame(t0, t1, yt, [t for t, _, _ in runs], inset=bw + 4, h=h)
    zero = sy(0)
    labelled = n <= 12
    for t, adds, removes in runs:
        x = sx(t)
        tip = f"<title>{t:%Y-%m-%d %H:%M}: +{adds:,} -{removes:,}</title>"
        if adds:
            parts.append(f'<rect class="add" x="{x - bw:.1f}" y="{sy(adds):.1f}" '
                         f'width="{bw:.1f}" height="{zero - sy(adds):.1f}">{tip}</rect>')
            if labelled:
                parts.append(f'<text class="bl" x="{x - bw / 2:.1f}" y="{sy(adds) - 3:.1f}">'
                             f"+{fmt_num(adds)}</text>")
        if removes:
            parts.append(f'<rect class="remove" x="{x:.1f}" y="{zero:.1f}" width="{bw:.1f}" '
                         f'height="{sy(-removes) - zero:.1f}">{tip}</rect>')
            if labelled:
                parts.append(f'<text class="bl" x="{x + bw / 2:.1f}" '
                             f'y="{sy(-removes) + 11:.1f}">−{fmt_num(removes)}</text>')
    parts.append(f'<line class="axis" x1="{PAD_L}" x2="{W - PAD_R}" y1="{zero:.1f}" '
                 f'y2="{zero:.1f}"/>')
    return (f'<svg class="chart bars" viewBox="0 0 {W} {h}" role="img" '
            f'aria-label="{escape(title)}"><title>{escape(title)}</title>{"".join(parts)}</svg>')
