"""The Invoice aggregate: draft, finalize with one rounding, pay, void, credit notes."""

from __future__ import annotations

from uuid import uuid4

import pytest

from domain.errors import InvalidInputError, InvalidStateError
from domain.invoice import Invoice, InvoiceStatus


def draft(amounts: list[int]) -> Invoice:
    lines = [{"description": f"usage {n}", "amount_nanos": a, "quantity": 1}
             for n, a in enumerate(amounts)]
    return Invoice.draft(team_id=uuid4(), currency="USD", period_start="2026-10-01",
                         period_end="2026-11-01", lines=lines, actor="bea")


def test_finalizing_rounds_once_half_even_and_keeps_the_difference() -> None:
    invoice = draft([1_234_567_891, 10_000_000_000])
    assert invoice.subtotal_nanos == 11_234_567_891
    invoice.finalize("ACME-000001", "bea")
    assert invoice.status == InvoiceStatus.FINALIZED
    assert invoice.total_minor == 1123
    assert invoice.rounding_difference_nanos == -4_567_891


def test_invoice_lifecycle_refuses_steps_out_of_order() -> None:
    invoice = draft([10])
    with pytest.raises(InvalidStateError, match="is draft; this needs it finalized"):
        invoice.mark_paid("pi_1", "bea")
    invoice.finalize("N-1", "bea")
    invoice.mark_paid("pi_1", "bea")
    with pytest.raises(InvalidStateError, match="is paid"):
        invoice.void("mistake", "bea")


def test_credit_notes_cannot_exceed_the_invoice_total() -> None:
    invoice = draft([5_000_000_000])
    invoice.finalize("N-1", "bea")
    invoice.issue_credit_note("cn-1", 3_000_000_000, "outage", "bea")
    with pytest.raises(InvalidStateError, match="more than the invoice total"):
        invoice.issue_credit_note("cn-2", 2_000_000_001, "outage", "bea")
    with pytest.raises(InvalidStateError, match="already issued"):
        invoice.issue_credit_note("cn-1", 1, "again", "bea")


def test_bad_periods_and_lines_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="period_end must be after"):
        Invoice.draft(team_id=uuid4(), currency="USD", period_start="2026-11-01",
                      period_end="2026-11-01", lines=[], actor="bea")
    with pytest.raises(InvalidInputError, match="line 1: description"):
        Invoice.draft(team_id=uuid4(), currency="USD", period_start="2026-10-01",
                      period_end="2026-11-01", lines=[{"amount_nanos": 1}], actor="bea")
