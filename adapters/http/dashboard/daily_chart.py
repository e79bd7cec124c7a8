"""The daily chart as SVG drawn on the server: bars of cost per local day, requests in the tooltip.

No chart library and no script: the page works offline and under a strict Content-Security-Policy.
Geometry uses SVG attributes only (no inline `style`, which the policy forbids); colours come from
the stylesheet through classes. Scales are integer arithmetic over nanos: the y axis steps are
1, 2 or 5 times a power of ten nanos, so the labels are round amounts of the currency.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from markupsafe import Markup, escape

from adapters.http.dashboard.money_display import format_cost, format_count, format_money

# How many days the chart shows for each window (the read models keep 90 days of series).
CHART_DAYS = {"today": 14, "week": 14, "month": 31, "total": 90}
HEIGHT = 220
LEFT, RIGHT, TOP, BOTTOM = 64, 8, 12, 28
Y_TICKS = 4


@dataclass(frozen=True)
class ChartSize:
    """A drawing size: the page shows the wide one on screens, the narrow one on phones (CSS
    picks), so the labels keep a readable size at both."""

    name: str
    width: int
    x_labels: int  # label the x axis about this many times, whatever the number of days


WIDE = ChartSize("wide", 720, 7)
NARROW = ChartSize("narrow", 360, 4)


@dataclass(frozen=True)
class Day:
    day: date
    requests: int
    successes: int
    cost_nanos: int


def days_for_chart(daily: list[dict[str, Any]], today: date, window: str) -> list[Day]:
    """The last `CHART_DAYS[window]` days ending today, with empty days filled with zeros."""
    count = CHART_DAYS.get(window, CHART_DAYS["total"])
    by_day = {row["date"]: row for row in daily}
    days = []
    for offset in range(count - 1, -1, -1):
        day = today - timedelta(days=offset)
        row = by_day.get(day.isoformat(), {})
        days.append(Day(day, int(row.get("requests", 0)), int(row.get("successes", 0)),
                        int(row.get("cost_nanos", 0))))
    return days


def nice_step(maximum: int, ticks: int) -> int:
    """The smallest step of 1, 2 or 5 x 10^k with `ticks` steps reaching `maximum` (> 0)."""
    power = 1
    while True:
        for factor in (1, 2, 5):
            if factor * power * ticks >= maximum:
                return factor * power
        power *= 10


def render_chart(days: list[Day], currency: str) -> Markup:
    """The chart in both sizes; the stylesheet shows one of them."""
    return Markup("").join(render_sized(days, currency, size) for size in (WIDE, NARROW))


def render_sized(days: list[Day], currency: str, size: ChartSize) -> Markup:
    width = size.width
    plot_w, plot_h = width - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    peak = max((d.cost_nanos for d in days), default=0)
    step = nice_step(peak, Y_TICKS) if peak > 0 else 10**7
    top_value = step * Y_TICKS
    parts = [f'<svg class="chart chart-{size.name}" viewBox="0 0 {width} {HEIGHT}" role="img" '
             f'aria-label="Cost per day, last {len(days)} days" '
             'xmlns="http://www.w3.org/2000/svg">']
    for tick in range(Y_TICKS + 1):
        y = TOP + plot_h - plot_h * tick // Y_TICKS
        label = escape(format_money(step * tick, currency))
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{width - RIGHT}" y1="{y}" y2="{y}"/>')
        parts.append(f'<text class="axis" x="{LEFT - 6}" y="{y + 4}" '
                     f'text-anchor="end">{label}</text>')
    count = max(len(days), 1)
    label_every = max(1, len(days) // size.x_labels)
    for index, d in enumerate(days):
        height = plot_h * d.cost_nanos // top_value if top_value else 0
        if d.cost_nanos > 0:
            height = max(height, 1)
        left, right = LEFT + plot_w * index // count, LEFT + plot_w * (index + 1) // count
        x, width = left + (right - left) * 15 // 100, max((right - left) * 70 // 100, 1)
        y = TOP + plot_h - height
        today = index == len(days) - 1
        tip = escape(f"{d.day:%a %d %b}: {format_cost(d.cost_nanos, currency)}, "
                     f"{format_count(d.requests)} requests")
        parts.append(f'<rect class="bar{" today" if today else ""}" x="{x}" y="{y}" '
                     f'width="{width}" height="{height}" data-date="{d.day}">'
                     f'<title>{tip}</title></rect>')
        if (len(days) - 1 - index) % label_every == 0:
            # The last label ends at its bar, so it is not cut off at the right edge.
            anchor, label_x = ("end", x + width) if today else ("middle", x + width // 2)
            parts.append(f'<text class="axis" x="{label_x}" y="{HEIGHT - 8}" '
                         f'text-anchor="{anchor}">{d.day:%d %b}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
