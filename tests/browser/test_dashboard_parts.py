"""The dashboard's parts that need no browser: money shown from nanos, the chart, CSRF, forms,
audit filters, and live updates without NATS (PostgreSQL LISTEN plus a bounded re-read)."""

from __future__ import annotations

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta

import pytest

from adapters.http.audit_queries import AuditFilters, FilterError
from adapters.http.dashboard.admin_actions import FormError, parse_amount
from adapters.http.dashboard.daily_chart import Day, days_for_chart, nice_step, render_chart
from adapters.http.dashboard.live_updates import LiveHub, Notice, parse_view_message
from adapters.http.dashboard.money_display import (
    format_cost,
    format_money,
    format_rate,
    format_tokens,
)
from adapters.http.dashboard.page_security import csrf_token, csrf_valid
from adapters.http.dashboard.static_files import static_response
from adapters.runtime.composition import open_ledger
from adapters.runtime.projection_process import open_runner
from domain.pricing import PriceTerms
from domain.usage import UsageRecord
from services.actor import Actor

TEAM = "6f1c1b7e-8a84-4c2a-9a55-0d7b1f0f2a11"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_money_is_rounded_half_even_to_the_minor_unit_with_integer_arithmetic() -> None:
    assert format_money(1_234_565_000_000, "USD") == "$1,234.56"  # half to even: down
    assert format_money(1_234_575_000_000, "USD") == "$1,234.58"  # half to even: up
    assert format_money(-12_500_000_000, "EUR") == "-€12.50"
    assert format_money(1_499_999_999, "JPY") == "¥1"
    assert format_money(1_500_000_000, "KWD") == "1.500 KWD"
    # Beyond 2^53 nanos (about 9 million USD) nothing is lost, as it would be in a float.
    assert format_money(2**53 + 1_000_000_000 * 10**6 + 5_000_000, "USD") == "$10,007,199.26"


def test_small_costs_show_fractions_of_a_cent_and_never_round_to_zero() -> None:
    assert format_cost(3_100_000, "USD") == "$0.0031"
    assert format_cost(40_000_000, "USD") == "$0.04"
    assert format_cost(0, "USD") == "$0.00"
    assert format_cost(12_345_678_901, "USD") == "$12.35"


def test_counts_and_rates_are_readable() -> None:
    assert format_tokens(950) == "950"
    assert format_tokens(12_499) == "12.4k"
    assert format_tokens(3_100_000) == "3.1M"
    assert format_rate(2, 3) == "66.7%"
    assert format_rate(0, 0) == "—"


def test_typed_amounts_become_exact_nanos_and_bad_ones_say_what_to_type() -> None:
    assert parse_amount("amount", "25") == 25_000_000_000
    assert parse_amount("amount", "1,000.000000001") == 1_000_000_000_001
    assert parse_amount("amount", "-12.5", allow_negative=True) == -12_500_000_000
    with pytest.raises(FormError, match="must not be negative"):
        parse_amount("credit limit", "-1")
    with pytest.raises(FormError, match=r"type an amount like 25 or 12\.50"):
        parse_amount("amount", "12.5e3")


def test_csrf_token_belongs_to_one_session() -> None:
    token = csrf_token("session-a")
    assert csrf_valid("session-a", token)
    assert not csrf_valid("session-b", token)
    assert not csrf_valid("session-a", "")


def test_chart_scales_to_round_steps_and_fills_days_without_usage() -> None:
    assert nice_step(7, 4) == 2
    assert nice_step(123_000_000, 4) == 50_000_000
    today = date(2026, 12, 1)
    days = days_for_chart([{"date": "2026-11-30", "requests": 3, "successes": 3,
                            "cost_nanos": 40_000_000}], today, "week")
    assert len(days) == 14 and days[-1].day == today and days[-2].cost_nanos == 40_000_000
    svg = str(render_chart(days, "USD"))
    assert svg.count("<svg") == 2  # wide and narrow drawings
    assert 'data-date="2026-11-30"' in svg and "Mon 30 Nov: $0.04, 3 requests" in svg
    assert "style=" not in svg and "<script" not in svg  # the page's CSP allows neither


def test_chart_bar_height_is_proportional_to_cost() -> None:
    days = [Day(date(2026, 12, 1) - timedelta(days=1), 1, 1, 100),
            Day(date(2026, 12, 1), 1, 1, 400)]
    svg = str(render_chart(days, "USD"))
    # Peak 400 nanos, step 100 (4 ticks): the peak fills the plot (180 px), the other 1/4.
    assert 'height="180" data-date="2026-12-01"' in svg
    assert 'height="45" data-date="2026-11-30"' in svg


def test_audit_filters_are_bounded_and_explain_what_is_wrong() -> None:
    filters = AuditFilters.parse("AdjustmentRecorded", "olivia", "", "2026-11-01", None)
    assert filters.since == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(FilterError, match="event type must look like"):
        AuditFilters.parse("x'; drop", None, None, None, None)
    with pytest.raises(FilterError, match="from must be a date"):
        AuditFilters.parse(None, None, None, "yesterday", None)
    with pytest.raises(FilterError, match="at most 200"):
        AuditFilters.parse(None, "a" * 201, None, None, None)


def test_only_view_messages_of_a_team_become_notices() -> None:
    assert parse_view_message(f"ledger.views.usage.{TEAM}", b'{"position": 42}') is not None
    assert parse_view_message(f"ledger.views.balance.{TEAM}", b"not json") is None
    assert parse_view_message("ledger.views.usage.not-a-uuid", b"{}") is None
    assert parse_view_message(f"ledger.views.secret.{TEAM}", b"{}") is None
    assert parse_view_message(f"ledger.views.usage.{TEAM}", b" " * 70_000) is None


def test_static_files_are_only_our_own_files() -> None:
    assert static_response("dashboard.css").status_code == 200
    for name in ("../templates/base.html", "..", "routes.py", "live.js.bak"):
        assert static_response(name).status_code == 404


def test_without_a_reachable_nats_a_team_hears_of_projected_usage_through_postgres_notify(
        database_url: str) -> None:
    # On a thread of its own: in this session Playwright's sync API holds the main thread's loop.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, hear_usage_without_nats(database_url)).result(60)


async def hear_usage_without_nats(database_url: str) -> None:
    ledger = open_ledger(database_url)
    owner = Actor("olivia")
    try:
        package_id = ledger.create_package(
            package_key="p", name="P", currency="USD", actor=Actor.operator("ops"),
            terms=PriceTerms(request_nanos=1, input_token_nanos=1, cached_input_token_nanos=1,
                             output_token_nanos=1))
        team_id = ledger.register_team(team_key="t", name="T", currency="USD", timezone="UTC",
                                       actor=owner)
        account_id = ledger.open_account(team_id, account_key="a", name="A", actor=owner)
        ledger.assign_package(account_id, package_id, owner,
                              effective_from=datetime.now(UTC) - timedelta(days=1))
        with open_runner(database_url) as runner:
            runner.catch_up()
            # NATS configured but unreachable (nothing listens on this port): PostgreSQL it is.
            hub = LiveHub(nats_url=f"nats://127.0.0.1:{free_port()}", database_url=database_url,
                          nats_start_timeout_seconds=1.0)
            await hub.start()
            try:
                async with hub.stream(team_id) as queue:
                    await asyncio.wait_for(hub.listening.wait(), 10)
                    ledger.record_usage(UsageRecord(
                        usage_id="u1", account_id=account_id, occurred_at=datetime.now(UTC),
                        model="m", success=True, input_tokens=1, output_tokens=1,
                        cached_input_tokens=0))
                    await asyncio.to_thread(runner.catch_up)
                    notice = await asyncio.wait_for(queue.get(), 10)
            finally:
                await hub.stop()
        assert hub.source == "postgres-notify"
        assert isinstance(notice, Notice) and notice.position > 0
    finally:
        ledger.close()
