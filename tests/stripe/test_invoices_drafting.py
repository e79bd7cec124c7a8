"""Monthly invoices drafted from priced usage, on PostgreSQL: the lines are exact (from the event
log), their sum is the invoice's subtotal, the usage lines are the month's usage window (read
model, team's timezone), prepaid credit is applied once across invoices, a late record for a
finalized month is a correction on the next invoice, months go in order, numbers are gapless."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from adapters.postgres.view_store import PostgresViewStore
from domain.errors import InvalidInputError, InvalidStateError
from domain.invoice import Invoice, InvoiceStatus
from domain.money import NANOS_PER_UNIT
from domain.usage import UsageRecord
from services.invoicing.drafting import draft_monthly_invoice
from tests.projections.history import OWNER, STRIPE, cost_of, ledger_at, make_team, project, usage

BILLION = 10**9  # input tokens: 1 nano each, so one such record costs about 1 USD


def _record(account_id: UUID, usage_id: str, at: datetime, model: str = "m1",
            input_tokens: int = BILLION) -> UsageRecord:
    return usage(account_id, usage_id, at, model=model, input_tokens=input_tokens)


def _usage_lines(invoice: Invoice, kind: str = "usage") -> list[dict[str, Any]]:
    return [line for line in invoice.lines if line.get("kind") == kind]


def _month_window(database_url: str, team_id: UUID, now: datetime) -> dict[str, Any]:
    with PostgresViewStore(database_url) as store:
        answer = store.balance(team_id, now)
    assert answer is not None
    window: dict[str, Any] = answer["usage"]["windows"]["month"]
    return window


def test_month_invoice_lines_sum_to_its_total_and_match_the_month_window(
        database_url: str) -> None:
    with ledger_at(database_url) as ledger:
        team = make_team(ledger, "acme", "America/New_York", accounts=2)
        a0, a1 = team.account_ids
        october = [
            _record(a0, "o1", datetime(2026, 10, 15, 12, tzinfo=UTC)),
            # 23:30 on Oct 31 in New York: October there, November in UTC.
            _record(a1, "o2", datetime(2026, 11, 1, 3, 30, tzinfo=UTC), model="m2"),
        ]
        november = [
            _record(a0, "n1", datetime(2026, 11, 2, 12, tzinfo=UTC)),
            _record(a0, "n2", datetime(2026, 11, 3, 12, tzinfo=UTC), input_tokens=333_333_333),
            _record(a0, "n3", datetime(2026, 11, 4, 12, tzinfo=UTC), model="m2"),
            _record(a1, "n4", datetime(2026, 11, 9, 12, tzinfo=UTC)),
            # 23:30 on Nov 30 in New York.
            _record(a1, "n5", datetime(2026, 12, 1, 4, 30, tzinfo=UTC), input_tokens=7),
        ]
        december = [_record(a1, "d1", datetime(2026, 12, 1, 5, 30, tzinfo=UTC))]  # 00:30 Dec 1
        ledger.record_usage_batch(october + november + december)
        ledger.credit_top_up(team.team_id, "pi_1", 300, "USD", STRIPE)  # 3 USD prepaid

        oct_id = draft_monthly_invoice(ledger, team.team_id, "2026-10", OWNER)
        oct_invoice = ledger.get_invoice(oct_id)
        oct_cost = sum(cost_of(r) for r in october)
        assert sum(line["amount_nanos"] for line in oct_invoice.lines) == \
            oct_invoice.subtotal_nanos
        assert sum(line["amount_nanos"] for line in _usage_lines(oct_invoice)) == oct_cost
        [prepaid] = _usage_lines(oct_invoice, "prepaid_credit")
        assert prepaid["amount_nanos"] == -oct_cost  # all of it covered by the top-up
        assert oct_invoice.subtotal_nanos == 0
        ledger.finalize_invoice(oct_id, OWNER)
        assert ledger.get_invoice(oct_id).number == "ACME-000001"

        late = _record(a0, "late-oct", datetime(2026, 10, 20, 12, tzinfo=UTC), model="m2",
                       input_tokens=5)
        ledger.record_usage_batch([late])
        # A paid invoice credited to the balance settles billed usage: it is not prepaid credit.
        ledger.credit_top_up(team.team_id, "in_paid_before", 100, "USD", STRIPE)
        nov_id = draft_monthly_invoice(ledger, team.team_id, "2026-11", OWNER)
        nov = ledger.get_invoice(nov_id)
        assert sum(line["amount_nanos"] for line in nov.lines) == nov.subtotal_nanos
        nov_usage = _usage_lines(nov)
        assert sum(line["amount_nanos"] for line in nov_usage) == \
            sum(cost_of(r) for r in november)
        assert {(line["account_id"], line["model"], line["requests"]) for line in nov_usage} == \
            {(str(a0), "m1", 2), (str(a0), "m2", 1), (str(a1), "m1", 2)}
        [correction] = _usage_lines(nov, "correction")
        assert correction["amount_nanos"] == cost_of(late)
        assert (correction["account_id"], correction["model"]) == (str(a0), "m2")
        assert correction["usage_month"] == "2026-10"
        assert "ACME-000001" in correction["reason"] and "2026-10" in correction["reason"]
        [nov_prepaid] = _usage_lines(nov, "prepaid_credit")
        assert nov_prepaid["amount_nanos"] == -(3 * NANOS_PER_UNIT - oct_cost)
        assert nov.subtotal_nanos == sum(cost_of(r) for r in november) + cost_of(late) - \
            (3 * NANOS_PER_UNIT - oct_cost) > 0
        ledger.finalize_invoice(nov_id, OWNER)
        nov = ledger.get_invoice(nov_id)
        assert nov.number == "ACME-000002"
        assert nov.total_nanos == nov.subtotal_nanos + nov.rounding_difference_nanos
        assert nov.total_nanos % (NANOS_PER_UNIT // 100) == 0
        assert abs(nov.rounding_difference_nanos) <= NANOS_PER_UNIT // 200

    project(database_url)
    november_window = _month_window(database_url, team.team_id,
                                    datetime(2026, 11, 20, tzinfo=UTC))
    assert int(november_window["cost_nanos"]) == \
        sum(line["amount_nanos"] for line in nov_usage)
    assert november_window["requests"] == sum(line["requests"] for line in nov_usage)
    october_window = _month_window(database_url, team.team_id,
                                   datetime(2026, 10, 20, tzinfo=UTC))
    # October's window holds the late record too: billed once, as November's correction.
    assert int(october_window["cost_nanos"]) == oct_cost + correction["amount_nanos"]


def test_months_are_drafted_in_order_after_they_end_and_numbers_stay_gapless(
        database_url: str) -> None:
    with ledger_at(database_url) as ledger:
        team = make_team(ledger, "order", "UTC", accounts=1)
        [account] = team.account_ids
        ledger.record_usage_batch([_record(account, f"u{m}", datetime(2026, m, 10, tzinfo=UTC))
                                   for m in (8, 9, 10)])
        ledger.clock = lambda: datetime(2026, 10, 31, 23, 59, tzinfo=UTC)
        with pytest.raises(InvalidInputError, match="2026-10 has not ended"):
            draft_monthly_invoice(ledger, team.team_id, "2026-10", OWNER)
        ledger.clock = lambda: datetime(2026, 11, 1, tzinfo=UTC)
        with pytest.raises(InvalidInputError, match="YYYY-MM"):
            draft_monthly_invoice(ledger, team.team_id, "2026-13", OWNER)
        august = ledger.get_invoice(draft_monthly_invoice(ledger, team.team_id, "2026-08",
                                                          OWNER))
        assert [line["kind"] for line in august.lines] == ["usage"]
        with pytest.raises(InvalidStateError, match="draft 2026-09 first"):
            draft_monthly_invoice(ledger, team.team_id, "2026-10", OWNER)
        september_id = draft_monthly_invoice(ledger, team.team_id, "2026-09", OWNER)
        with pytest.raises(InvalidStateError, match="already has an invoice for 2026-08"):
            draft_monthly_invoice(ledger, team.team_id, "2026-07", OWNER)
        ledger.void_invoice(september_id, "drafted too early", OWNER)
        october = ledger.get_invoice(draft_monthly_invoice(ledger, team.team_id, "2026-10",
                                                           OWNER))
        # The voided September's usage comes back on October, as a correction.
        assert sorted((line["kind"], line.get("usage_month")) for line in october.lines) == \
            [("correction", "2026-09"), ("usage", None)]
        ledger.finalize_invoice(october.id, OWNER)
        ledger.finalize_invoice(august.id, OWNER)
        numbers = [ledger.get_invoice(i).number for i in (october.id, august.id)]
        assert numbers == ["ORDER-000001", "ORDER-000002"]  # the void draft took none
        assert ledger.get_invoice(september_id).status == InvoiceStatus.VOID


def test_drafting_needs_manage_invoices(database_url: str) -> None:
    with ledger_at(database_url) as ledger:
        team = make_team(ledger, "roles", "UTC", accounts=1)
        ledger.add_member(team.team_id, "auditor-1", "auditor", OWNER)
        from domain.errors import PermissionDeniedError
        from services.actor import Actor
        with pytest.raises(PermissionDeniedError, match="auditor"):
            draft_monthly_invoice(ledger, team.team_id, "2026-10", Actor("auditor-1"))
