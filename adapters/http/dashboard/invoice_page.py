"""What the invoice page shows: one invoice of a team with its lines, from the event store (the
aggregate, exact and current, like `GET /v1/teams/{team_id}/invoices/{invoice_id}`), formatted
for people. Stripe's hosted invoice page is linked when Stripe collects the invoice and says
where it is (read from Stripe when the page is shown; Stripe being away only hides the link)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from adapters.http.dashboard.money_display import exact_money, format_count, format_money
from domain.invoice import Invoice, InvoiceStatus
from services.invoicing.monthly import CORRECTION_KIND, PREPAID_KIND, USAGE_KIND
from services.payments.port import PaymentProviderError

log = logging.getLogger(__name__)

# What the page says after an action; the URL names the outcome, never carries its text.
OUTCOMES = {
    "finalized": "Finalized. Its number and rounded total are fixed; an amount due is "
                 "collected through Stripe, a zero total is settled by the prepaid credit.",
    "voided": "Voided. Its usage comes back as corrections on the next month's invoice.",
    "credited": "Credit note issued (at Stripe too when Stripe collects this invoice; refunded "
                "there when the invoice was paid). The invoice itself is not changed.",
}
KIND_LABELS = {USAGE_KIND: "Usage", CORRECTION_KIND: "Correction", PREPAID_KIND: "Prepaid credit"}


def _money(amount_nanos: int, currency: str) -> dict[str, str]:
    return {"text": format_money(amount_nanos, currency),
            "exact": exact_money(amount_nanos, currency)}


def line_row(line: dict[str, Any], currency: str) -> dict[str, Any]:
    kind = line.get("kind")
    tokens = [(label, int(line[key])) for label, key in (
        ("in", "input_tokens"), ("cached", "cached_input_tokens"), ("out", "output_tokens"))
        if line.get(key) is not None]
    return {"kind": KIND_LABELS.get(kind, "Line") if kind else "Line",
            "is_correction": kind == CORRECTION_KIND, "is_prepaid": kind == PREPAID_KIND,
            "account": line.get("account_name") or line.get("account_id") or "",
            "model": line.get("model") or "",
            "requests": format_count(int(line["requests"])) if line.get("requests") is not None
            else "",
            "tokens": " · ".join(f"{format_count(n)} {label}" for label, n in tokens),
            "description": str(line.get("description", "")),
            "usage_month": line.get("usage_month") or "",
            "reason": line.get("reason") or "",
            "amount": _money(int(line["amount_nanos"]), currency)}


def invoice_context(invoice: Invoice, may_manage: bool,
                    hosted_url: Callable[[str], str | None]) -> dict[str, Any]:
    """The page's view of `invoice`; `hosted_url(stripe_id)` reads Stripe's hosted page."""
    c = invoice.currency
    basis = invoice.usage_basis or {}
    rows = [line_row(line, c) for line in invoice.lines]
    status = InvoiceStatus(invoice.status)
    link = None
    if invoice.stripe_invoice_id is not None and status != InvoiceStatus.VOID:
        try:
            link = hosted_url(invoice.stripe_invoice_id)
        except PaymentProviderError as error:
            log.info("no hosted invoice link for %s: %s", invoice.stripe_invoice_id, error)
    finalized = invoice.total_minor is not None
    return {
        "invoice": {
            "id": str(invoice.id), "number": invoice.number or "", "status": status.value,
            "period_start": invoice.period_start, "period_end": invoice.period_end,
            "month": invoice.period_start[:7], "currency": c,
            "usage_lines": [r for r in rows if not r["is_correction"] and not r["is_prepaid"]],
            "corrections": [r for r in rows if r["is_correction"]],
            "prepaid": _money(-int(basis.get("prepaid_applied_nanos", 0)), c),
            "subtotal": _money(invoice.subtotal_nanos, c),
            "total": _money(invoice.total_nanos, c) if finalized else None,
            "rounding": _money(invoice.rounding_difference_nanos, c) if finalized else None,
            "credited": _money(invoice.credited_nanos, c) if invoice.credited_nanos else None,
            "payment_reference": invoice.payment_reference or "",
            "stripe_invoice_id": invoice.stripe_invoice_id or "",
            "hosted_url": link,
        },
        "can_finalize": may_manage and status == InvoiceStatus.DRAFT,
        "can_void": may_manage and status in (InvoiceStatus.DRAFT, InvoiceStatus.FINALIZED),
        "can_credit": may_manage and status in (InvoiceStatus.FINALIZED, InvoiceStatus.PAID),
        "may_manage": may_manage,
    }
