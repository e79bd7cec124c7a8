"""Calendar windows in a team's timezone.

Usage is stored in daily buckets keyed by the local date of `occurred_at` in the team's timezone
(the timezone from `Team.Registered`). Windows are derived when asked, relative to "now" in that
timezone: today is the local date of now, the week is the ISO week (Monday to Sunday) that holds
today, the month the calendar month that holds today, and the total is every bucket. Each window
is a half-open range of local dates, so a record dated later in the same week still counts in that
week. Because buckets are sums, the same records give the same buckets in any order, and a late
record simply adds to the bucket of the day it happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

# How many days the chart series covers, ending today (inclusive).
DAILY_SERIES_DAYS = 90
WINDOW_NAMES = ("today", "week", "month", "total")



@lru_cache(maxsize=1024)
def zone(timezone: str) -> ZoneInfo:
    return ZoneInfo(timezone)


def local_date(occurred_at: datetime, timezone: str) -> date:
    return occurred_at.astimezone(zone(timezone)).date()


# The local-date cache holds at most this many (timezone, UTC hour) entries, then starts over.
LOCAL_DAY_CACHE_SIZE_MAX = 200_000
_UTC_SUFFIX = "+00:00"
_LAST_MICROSECOND = timedelta(hours=1, microseconds=-1)


class LocalDays:
    """`local_date` for the ISO strings events store, answered from a cache per UTC hour.

    Converting a time to a zone costs more than the rest of folding a usage record, and usage
    times repeat the same hours over and over. An hour is cached only when every instant in it has
    the same local date: the zone's offset is the same at its first and last microsecond (no
    transition inside; zones change offset at most once an hour) and both ends fall on the same
    local date. Hours that straddle a local midnight (e.g. 18:00-19:00 UTC in Asia/Kolkata) or a
    transition are computed for each record. Strings not in UTC are always computed.
    """

    def __init__(self) -> None:
        self._by_hour: dict[tuple[str, str], date | None] = {}

    def of(self, occurred_at: str, timezone: str) -> date:
        if not (occurred_at.endswith(_UTC_SUFFIX) and occurred_at[13:14] == ":"):
            return local_date(datetime.fromisoformat(occurred_at), timezone)
        key = (timezone, occurred_at[:13])
        cached = self._by_hour.get(key, False)
        if cached is False:
            cached = self._hour_day(occurred_at[:13], timezone)
            if len(self._by_hour) >= LOCAL_DAY_CACHE_SIZE_MAX:
                self._by_hour.clear()
            self._by_hour[key] = cached
        if cached is None:
            return local_date(datetime.fromisoformat(occurred_at), timezone)
        return cached  # type: ignore[return-value]

    @staticmethod
    def _hour_day(hour: str, timezone: str) -> date | None:
        """The one local date of every instant of this UTC hour, or None if there are two."""
        tz = zone(timezone)
        start = datetime.fromisoformat(hour + ":00:00" + _UTC_SUFFIX)
        # Arithmetic on the UTC time: on a zoned time Python would add wall-clock time.
        first, last = start.astimezone(tz), (start + _LAST_MICROSECOND).astimezone(tz)
        if first.utcoffset() != last.utcoffset() or first.date() != last.date():
            return None
        return first.date()


@dataclass(frozen=True)
class DateRange:
    """Local dates from `start` (inclusive) to `end` (exclusive); None means unbounded."""

    start: date | None
    end: date | None

    def contains(self, day: date) -> bool:
        return (self.start is None or day >= self.start) and (self.end is None or day < self.end)


def window_ranges(now: datetime, timezone: str) -> dict[str, DateRange]:
    today = local_date(now, timezone)
    week_start = today - timedelta(days=today.isoweekday() - 1)
    month_start = today.replace(day=1)
    next_month = (month_start + timedelta(days=32)).replace(day=1)
    return {
        "today": DateRange(today, today + timedelta(days=1)),
        "week": DateRange(week_start, week_start + timedelta(days=7)),
        "month": DateRange(month_start, next_month),
        "total": DateRange(None, None),
    }


def series_range(now: datetime, timezone: str) -> DateRange:
    today = local_date(now, timezone)
    return DateRange(today - timedelta(days=DAILY_SERIES_DAYS - 1), today + timedelta(days=1))


@dataclass
class UsageTotals:
    """Sums over usage records. Integers only; the success rate is computed at the edge."""

    requests: int = 0
    successes: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost_nanos: int = 0

    def add(self, other: UsageTotals) -> None:
        self.requests += other.requests
        self.successes += other.successes
        self.input_tokens += other.input_tokens
        self.cached_input_tokens += other.cached_input_tokens
        self.output_tokens += other.output_tokens
        self.cost_nanos += other.cost_nanos

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "successes": self.successes,
            # A ratio for people to read; None when there were no requests. Never money.
            "success_rate": (self.successes / self.requests) if self.requests else None,
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "output_tokens": self.output_tokens,
            "cost_nanos": self.cost_nanos,
        }


# A daily bucket's key: (account_id, model, local date); the team is implied by the query.
BucketKey = tuple[str, str, date]


@dataclass
class WindowReport:
    """Usage of one team per window: overall, per account and per model."""

    windows: dict[str, UsageTotals] = field(default_factory=dict)
    by_account: dict[str, dict[str, UsageTotals]] = field(default_factory=dict)
    by_model: dict[str, dict[str, UsageTotals]] = field(default_factory=dict)
    daily: dict[date, UsageTotals] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "windows": {w: t.as_dict() for w, t in self.windows.items()},
            "by_account": {w: {a: t.as_dict() for a, t in sorted(rows.items())}
                           for w, rows in self.by_account.items()},
            "by_model": {w: {m: t.as_dict() for m, t in sorted(rows.items())}
                         for w, rows in self.by_model.items()},
            "daily": [{"date": d.isoformat(), **t.as_dict()}
                      for d, t in sorted(self.daily.items())],
        }


def report_from_buckets(buckets: dict[BucketKey, UsageTotals], now: datetime,
                        timezone: str) -> WindowReport:
    """Fold daily buckets into the windows relative to `now` in the team's timezone."""
    ranges = window_ranges(now, timezone)
    series = series_range(now, timezone)
    report = WindowReport(windows={name: UsageTotals() for name in WINDOW_NAMES},
                          by_account={name: {} for name in WINDOW_NAMES},
                          by_model={name: {} for name in WINDOW_NAMES})
    for (account_id, model, day), totals in buckets.items():
        for name, day_range in ranges.items():
            if not day_range.contains(day):
                continue
            report.windows[name].add(totals)
            report.by_account[name].setdefault(account_id, UsageTotals()).add(totals)
            report.by_model[name].setdefault(model, UsageTotals()).add(totals)
        if series.contains(day):
            report.daily.setdefault(day, UsageTotals()).add(totals)
    return report
