"""A team's invoices in the ledger against its Stripe invoices (see
`services.payments.reconciliation`): rows of (object id, ledger nanos, Stripe nanos, ledger
status, Stripe status) for each invoice whose sides differ."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from domain.invoice import Invoice, InvoiceStatus
from domain.money import minor_units_to_nanos
from domain.team import Team
from services.invoicing.drafting import monthly_invoice_id
from services.invoicing.port import StripeInvoiceInfo, StripeInvoicePort
from services.ledger import Ledger

# The Stripe status that matches each ledger status (void: a voided Stripe invoice, or none).
EXPECTED_STRIPE_STATUS = {InvoiceStatus.FINALIZED: "open", InvoiceStatus.PAID: "paid",
                          InvoiceStatus.VOID: "void"}
# Months after the team's registration month that reconcile looks for monthly invoices in.
MONTHS_CHECKED_MAX = 240

Row = tuple[str, int | None, int | None, str | None, str | None]


def monthly_invoices(ledger: Ledger, team: Team) -> list[Invoice]:
    registered: datetime = team.created_on
    now = ledger.clock().astimezone(UTC)
    first = registered.year * 12 + registered.month - 2  # the month before, for time zones
    last = min(now.year * 12 + now.month, first + MONTHS_CHECKED_MAX)
    found = []
    for index in range(first, last + 1):
        invoice_id = monthly_invoice_id(team.id, f"{index // 12:04d}-{index % 12 + 1:02d}")
        if ledger.exists(invoice_id):
            found.append(ledger.get_invoice(invoice_id))
    return found


def invoice_differences(ledger: Ledger, port: StripeInvoicePort, team: Team
                        ) -> tuple[int, list[Row], set[str]]:
    """How many invoices were compared, the rows that differ, and the PaymentIntents that paid
    the team's Stripe invoices (their charges are left out of the top-up comparison)."""
    stripe_invoices: dict[str, StripeInvoiceInfo] = {}
    if team.stripe_customer_id is not None:
        for info in port.list_invoices(team.stripe_customer_id):
            key = info.ledger_invoice_id
            if key is None or (key in stripe_invoices and info.status == "void"):
                continue  # not ours, or a voided retry beside the live one
            stripe_invoices[key] = info
    ledger_invoices = {str(i.id): i for i in monthly_invoices(ledger, team)}
    for key in stripe_invoices.keys() - ledger_invoices.keys():
        try:
            invoice_id = UUID(key)
        except ValueError:
            continue
        if ledger.exists(invoice_id):
            ledger_invoices[key] = ledger.get_invoice(invoice_id)
    rows: list[Row] = []
    for key in sorted(ledger_invoices.keys() | stripe_invoices.keys()):
        invoice, found = ledger_invoices.get(key), stripe_invoices.get(key)
        ledger_side = _ledger_side(invoice)
        stripe_side = None if found is None else (
            minor_units_to_nanos(found.total_minor, found.currency), found.status)
        if _agree(ledger_side, stripe_side):
            continue
        object_id = found.invoice_id if found is not None else str(
            invoice.number if invoice is not None and invoice.number else key)
        rows.append((object_id, ledger_side[0] if ledger_side else None,
                     stripe_side[0] if stripe_side else None,
                     ledger_side[1] if ledger_side else None,
                     stripe_side[1] if stripe_side else None))
    paid_by = {intent for info in stripe_invoices.values() if info.status == "paid"
               for intent in port.payment_intents_of(info.invoice_id)}
    return len(ledger_invoices.keys() | stripe_invoices.keys()), rows, paid_by


def _ledger_side(invoice: Invoice | None) -> tuple[int, str] | None:
    if invoice is None or invoice.status == InvoiceStatus.DRAFT:
        return None
    return invoice.total_nanos, str(InvoiceStatus(invoice.status).value)


def _agree(ledger_side: tuple[int, str] | None, stripe_side: tuple[int, str] | None) -> bool:
    if stripe_side is None:  # nothing in Stripe: right for a void, draft or prepaid invoice
        return ledger_side is None or ledger_side[1] == "void" or ledger_side[0] == 0
    if ledger_side is None:
        return False
    expected = EXPECTED_STRIPE_STATUS[InvoiceStatus(ledger_side[1])]
    return (ledger_side[0] == stripe_side[0] and expected == stripe_side[1]) or \
        (ledger_side[1] == "void" and stripe_side[1] == "void")
