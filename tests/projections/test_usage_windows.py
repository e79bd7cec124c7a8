"""Usage windows: calendar windows in the team's timezone, by occurred_at, in any order."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from adapters.postgres.view_store import PostgresViewStore
from tests.conftest import PostgresServer
from tests.projections.history import cost_of, ledger_at, make_team, project, usage


def _windows(database_url: str, team_id: object, now: datetime) -> dict[str, dict[str, object]]:
    with PostgresViewStore(database_url) as store:
        answer = store.balance(team_id, now)  # type: ignore[arg-type]
    assert answer is not None
    return answer["usage"]["windows"]  # type: ignore[no-any-return]


def test_windows_are_the_same_for_the_same_records_in_any_order(pg_server: PostgresServer
                                                                ) -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    rng = random.Random(4)
    hours = [rng.randrange(0, 24 * 30) for _ in range(120)]
    answers = []
    buckets = []
    for attempt in range(2):
        url = pg_server.create_database()
        with ledger_at(url) as ledger:
            team = make_team(ledger, "orders", "America/New_York", accounts=2)
            records = [usage(team.account_ids[i % 2], f"u{i}",
                             start + timedelta(hours=hours[i]),
                             model=f"m{i % 3}", success=i % 5 != 0, input_tokens=i)
                       for i in range(120)]
            ordered = sorted(records, key=lambda r: r.usage_id)
            random.Random(attempt).shuffle(ordered)
            for offset in range(0, len(ordered), 17):
                ledger.record_usage_batch(ordered[offset:offset + 17])
        project(url)
        answers.append(_windows(url, team.team_id, datetime(2026, 11, 20, 12, tzinfo=UTC)))
        with PostgresViewStore(url) as store, store.snapshot():
            buckets.append(list(store.table_rows("usage_daily")))
        pg_server.drop_database(url)
    assert answers[0] == answers[1]
    assert buckets[0] == buckets[1] and len(buckets[0]) > 30
    assert answers[0]["total"]["requests"] == 120
    assert answers[0]["total"]["successes"] == 96


def test_windows_in_auckland_across_a_day_week_month_boundary_and_a_dst_change(
        database_url: str) -> None:
    # New Zealand daylight saving starts on Sunday 2026-09-27 at 02:00 NZST (14:00 UTC the day
    # before): clocks jump to 03:00 NZDT, UTC+13.
    moments = {
        "sunday_before_dst": datetime(2026, 9, 26, 13, 59, tzinfo=UTC),  # Sun 27 01:59 +12
        "sunday_after_dst": datetime(2026, 9, 26, 14, 1, tzinfo=UTC),  # Sun 27 03:01 +13
        "sunday_late": datetime(2026, 9, 27, 10, 59, tzinfo=UTC),  # Sun 27 23:59 +13
        "monday_midnight": datetime(2026, 9, 27, 11, 0, tzinfo=UTC),  # Mon 28 00:00: new week
        "september_last": datetime(2026, 9, 30, 10, 59, 59, tzinfo=UTC),  # Wed 30 23:59:59
        "october_first": datetime(2026, 9, 30, 11, 0, tzinfo=UTC),  # Thu 1 Oct 00:00
    }
    with ledger_at(database_url) as ledger:
        team = make_team(ledger, "kiwi", "Pacific/Auckland", accounts=1)
        ledger.record_usage_batch([usage(team.account_ids[0], name, at, input_tokens=n)
                                   for n, (name, at) in enumerate(moments.items())])
    project(database_url)

    now = datetime(2026, 10, 1, 1, 0, tzinfo=UTC)  # Thursday 1 October, 14:00 in Auckland
    windows = _windows(database_url, team.team_id, now)
    assert windows["today"]["requests"] == 1  # october_first
    assert windows["week"]["requests"] == 3  # monday_midnight, september_last, october_first
    assert windows["month"]["requests"] == 1
    assert windows["total"]["requests"] == 6
    assert windows["week"]["input_tokens"] == 3 + 4 + 5

    sunday = datetime(2026, 9, 27, 10, 0, tzinfo=UTC)  # Sunday 27 September, 23:00 in Auckland
    windows = _windows(database_url, team.team_id, sunday)
    assert windows["today"]["requests"] == 3  # the whole DST day, both offsets
    assert windows["week"]["requests"] == 3
    assert windows["month"]["requests"] == 5  # everything but october_first


def test_a_late_record_lands_in_the_window_it_belongs_to(database_url: str) -> None:
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)  # a Wednesday
    with ledger_at(database_url) as ledger:
        team = make_team(ledger, "late", "UTC", accounts=1)
        on_time = usage(team.account_ids[0], "today", now - timedelta(hours=1))
        ledger.record_usage_batch([on_time])
        project(database_url)
        late = usage(team.account_ids[0], "last-month", datetime(2026, 10, 30, 9, tzinfo=UTC),
                     input_tokens=1000)
        ledger.record_usage_batch([late])
    project(database_url)

    windows = _windows(database_url, team.team_id, now)
    assert windows["today"]["requests"] == 1
    assert windows["week"]["requests"] == 1
    assert windows["month"]["requests"] == 1
    assert windows["total"]["requests"] == 2
    assert windows["total"]["cost_nanos"] == cost_of(on_time) + cost_of(late)
    with PostgresViewStore(database_url) as store:
        answer = store.balance(team.team_id, now)
    assert answer is not None
    daily = {d["date"]: d["requests"] for d in answer["usage"]["daily"]}
    assert daily == {"2026-10-30": 1, "2026-11-25": 1}
