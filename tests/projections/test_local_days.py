"""The local-date cache answers exactly as converting each time does, in every kind of zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.windows import LocalDays, local_date

# Whole-hour, half-hour and 45-minute offsets, DST both hemispheres, a zone that changed its
# offset by seconds (Monrovia until 1972) and one that skipped a whole day (Apia, 2011-12-30).
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Pacific/Auckland", "Asia/Kolkata",
         "Asia/Kathmandu", "Pacific/Chatham", "America/St_Johns", "Africa/Monrovia",
         "Pacific/Apia", "Australia/Lord_Howe")

instants = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2040, 1, 1),
                        timezones=st.just(UTC))


@settings(max_examples=3000, deadline=None)
@given(instants, st.sampled_from(ZONES))
def test_cached_local_date_equals_the_conversion(moment: datetime, zone: str) -> None:
    days = LocalDays()
    # Warm the hour's entry from another instant in the same hour first: the cache must hold
    # for every instant of the hour, not only for the one that filled it.
    days.of(moment.replace(minute=0, second=0, microsecond=0).isoformat(), zone)
    assert days.of(moment.isoformat(), zone) == local_date(moment, zone)


def test_hours_around_transitions_and_local_midnights() -> None:
    days = LocalDays()
    starts = [datetime(2026, 4, 4, 12, tzinfo=UTC),   # Auckland leaves DST (Apr 5, 03:00 local)
              datetime(2026, 9, 26, 12, tzinfo=UTC),  # Auckland enters DST (Sep 27, 02:00)
              datetime(2026, 3, 8, 5, tzinfo=UTC),    # New York enters DST
              datetime(1972, 1, 6, 22, tzinfo=UTC),   # Monrovia: -0:44:30 -> 0:00
              datetime(2011, 12, 29, 8, tzinfo=UTC)]  # Apia skips Dec 30
    for start in starts:
        for zone in ZONES:
            for step in range(0, 6 * 3600, 97):  # every 97 s across six hours
                moment = start + timedelta(seconds=step)
                assert days.of(moment.isoformat(), zone) == local_date(moment, zone), (moment,
                                                                                      zone)


def test_times_not_in_utc_are_converted_each_time() -> None:
    days = LocalDays()
    moment = datetime.fromisoformat("2026-11-24T23:30:00-05:00")
    assert days.of(moment.isoformat(), "Asia/Kolkata") == local_date(moment, "Asia/Kolkata")
