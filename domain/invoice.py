"""The Invoice aggregate: a team's bill for a period.

Lifecycle: drafted (lines from priced usage, exact nanos) -> finalized (a number from the team's
sequence, the total rounded once to the currency's minor unit, half-even, with the rounding
difference kept) -> paid (a Stripe reference), or voided (with a reason) before payment. A
correction after finalization is a credit note, never an edit.

Bookkeeping of the Stripe path (services/invoicing): a draft from priced usage records what it
read (`UsageBasisRecorded`), a finalized invoice records the Stripe invoice that collects it
(`StripeInvoiceLinked`), and a credit note is requested (`CreditNoteRequested`, its key the source
of Stripe's idempotency key) before it is issued with Stripe's id.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidInputError, InvalidStateError
from domain.ids import invoice_id_for
from domain.money import check_amount_nanos, round_to_minor_units

INVOICE_LINES_MAX = 10_000
LINE_DESCRIPTION_LENGTH_MAX = 500
STRIPE_ID_LENGTH_MAX = 255
# A credit note's request key (the HTTP layer prefixes the caller's 200-character key).
REQUEST_KEY_LENGTH_MAX = 500


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    FINALIZED = "finalized"
    PAID = "paid"
    VOID = "void"


def check_period(period_start: str, period_end: str) -> None:
    try:
        start, end = date.fromisoformat(period_start), date.fromisoformat(period_end)
    except ValueError:
        raise InvalidInputError("period_start and period_end must be dates (YYYY-MM-DD)") from None
    if end <= start:
        raise InvalidInputError("period_end must be after period_start (the end is exclusive)")


def check_lines(lines: list[dict[str, Any]]) -> None:
    if len(lines) > INVOICE_LINES_MAX:
        raise InvalidInputError(f"an invoice has at most {INVOICE_LINES_MAX} lines")
    for number, line in enumerate(lines, start=1):
        description = line.get("description")
        if not isinstance(description, str) or not 1 <= len(description) <= \
                LINE_DESCRIPTION_LENGTH_MAX:
            raise InvalidInputError(
                f"line {number}: description must be 1 to {LINE_DESCRIPTION_LENGTH_MAX} characters"
            )
        check_amount_nanos(f"line {number} amount_nanos", line.get("amount_nanos"),
                           allow_zero=True, allow_negative=True)
        quantity = line.get("quantity", 1)
        if type(quantity) is not int or quantity < 0:
            raise InvalidInputError(f"line {number}: quantity must be a whole number >= 0")


class Invoice(Aggregate):
    @staticmethod
    def create_id(team_id: UUID, period_start: str, period_end: str) -> UUID:
        return invoice_id_for(team_id, period_start, period_end)

    @event("Drafted")
    def __init__(self, team_id: UUID, currency: str, period_start: str, period_end: str,
                 lines: list[dict[str, Any]], subtotal_nanos: int, actor: str) -> None:
        self.team_id = team_id
        self.currency = currency
        self.period_start = period_start
        self.period_end = period_end
        self.lines = lines
        self.subtotal_nanos = subtotal_nanos
        self.status = InvoiceStatus.DRAFT
        self.number: str | None = None
        self.total_minor: int | None = None
        self.rounding_difference_nanos = 0
        self.payment_reference: str | None = None
        self.credited_nanos = 0
        self.credit_note_ids: list[str] = []
        self.usage_basis: dict[str, Any] | None = None  # set when drafted from priced usage
        self.stripe_invoice_id: str | None = None
        self.credit_note_requests: dict[str, dict[str, Any]] = {}  # request key -> request

    @classmethod
    def draft(cls, *, team_id: UUID, currency: str, period_start: str, period_end: str,
              lines: list[dict[str, Any]], actor: str) -> Invoice:
        check_period(period_start, period_end)
        check_lines(lines)
        subtotal = sum(int(line["amount_nanos"]) for line in lines)
        return cls(team_id=team_id, currency=currency, period_start=period_start,
                   period_end=period_end, lines=lines, subtotal_nanos=subtotal, actor=actor)

    @property
    def total_nanos(self) -> int:
        """The total after finalization: the exact subtotal plus the rounding difference."""
        return self.subtotal_nanos + self.rounding_difference_nanos

    def record_usage_basis(self, basis: dict[str, Any], actor: str) -> None:
        """What a draft from priced usage read: per account the log versions it covered, the
        prepaid credit it applied (and the running total of prepaid credit applied), the
        invoice it followed. The next month's draft starts from here."""
        self.check_status(InvoiceStatus.DRAFT)
        if self.usage_basis is not None:
            raise InvalidStateError(f"invoice {self.id} already has its usage basis")
        self._usage_basis_recorded(basis=basis, actor=actor)

    @event("UsageBasisRecorded")
    def _usage_basis_recorded(self, basis: dict[str, Any], actor: str) -> None:
        self.usage_basis = basis

    def link_stripe_invoice(self, stripe_invoice_id: str, actor: str) -> bool:
        """Record the Stripe invoice that collects this one; False if it is linked already."""
        if not stripe_invoice_id.startswith("in_") or \
                len(stripe_invoice_id) > STRIPE_ID_LENGTH_MAX:
            raise InvalidInputError(f"{stripe_invoice_id!r} is not a Stripe invoice id (in_...)")
        if self.stripe_invoice_id == stripe_invoice_id:
            return False
        if self.stripe_invoice_id is not None:
            raise InvalidStateError(
                f"invoice {self.id} is collected by Stripe invoice {self.stripe_invoice_id}, "
                f"not {stripe_invoice_id}")
        self.check_status(InvoiceStatus.FINALIZED, InvoiceStatus.PAID, InvoiceStatus.VOID)
        self._stripe_invoice_linked(stripe_invoice_id=stripe_invoice_id, actor=actor)
        return True

    @event("StripeInvoiceLinked")
    def _stripe_invoice_linked(self, stripe_invoice_id: str, actor: str) -> None:
        self.stripe_invoice_id = stripe_invoice_id

    def request_credit_note(self, request_key: str, amount_nanos: int, reason: str,
                            actor: str) -> bool:
        """Record that a credit note was asked for (before Stripe is called, so that its
        idempotency key comes from this event); False if this request is recorded already."""
        earlier = self.credit_note_requests.get(request_key)
        if earlier is not None:
            if (earlier["amount_nanos"], earlier["reason"]) != (amount_nanos, reason):
                raise InvalidStateError(
                    f"credit note request {request_key!r} was made for "
                    f"{earlier['amount_nanos']} nanos; use a new key for a new credit note")
            return False
        if not 1 <= len(request_key) <= REQUEST_KEY_LENGTH_MAX:
            raise InvalidInputError(f"request_key must be 1 to {REQUEST_KEY_LENGTH_MAX} characters")
        self._check_credit(amount_nanos, reason, pending=self._pending_credit_nanos())
        self._credit_note_requested(request_key=request_key, amount_nanos=amount_nanos,
                                    reason=reason, actor=actor)
        return True

    @event("CreditNoteRequested")
    def _credit_note_requested(self, request_key: str, amount_nanos: int, reason: str,
                               actor: str) -> None:
        self.credit_note_requests[request_key] = {
            "amount_nanos": amount_nanos, "reason": reason, "credit_note_id": None}

    def _pending_credit_nanos(self) -> int:
        return sum(int(r["amount_nanos"]) for r in self.credit_note_requests.values()
                   if r["credit_note_id"] is None)

    def _check_credit(self, amount_nanos: int, reason: str, pending: int) -> None:
        self.check_status(InvoiceStatus.FINALIZED, InvoiceStatus.PAID)
        check_amount_nanos("amount_nanos", amount_nanos)
        if self.credited_nanos + pending + amount_nanos > self.total_nanos:
            raise InvalidStateError(
                f"credit notes would total {self.credited_nanos + pending + amount_nanos} "
                f"nanos, more than the invoice total of {self.total_nanos} nanos")
        if not reason.strip():
            raise InvalidInputError("a credit note needs a reason")

    def check_status(self, *allowed: InvoiceStatus) -> None:
        if self.status not in allowed:
            names = " or ".join(s.value for s in allowed)
            raise InvalidStateError(
                f"invoice {self.id} is {InvoiceStatus(self.status).value}; "
                f"this needs it {names}"
            )

    def finalize(self, number: str, actor: str) -> None:
        self.check_status(InvoiceStatus.DRAFT)
        rounded = round_to_minor_units(self.subtotal_nanos, self.currency)
        self._finalized(number=number, total_nanos=rounded.rounded_nanos,
                        total_minor=rounded.amount_minor,
                        rounding_difference_nanos=rounded.rounding_difference_nanos,
                        actor=actor)

    @event("Finalized")
    def _finalized(self, number: str, total_nanos: int, total_minor: int,
                   rounding_difference_nanos: int, actor: str) -> None:
        self.number = number
        self.total_minor = total_minor
        self.rounding_difference_nanos = rounding_difference_nanos
        self.status = InvoiceStatus.FINALIZED

    def mark_paid(self, payment_reference: str, actor: str) -> None:
        self.check_status(InvoiceStatus.FINALIZED)
        if not payment_reference.strip():
            raise InvalidInputError("payment_reference must name the Stripe payment or invoice")
        self._paid(payment_reference=payment_reference, actor=actor)

    @event("Paid")
    def _paid(self, payment_reference: str, actor: str) -> None:
        self.payment_reference = payment_reference
        self.status = InvoiceStatus.PAID

    def void(self, reason: str, actor: str) -> None:
        self.check_status(InvoiceStatus.DRAFT, InvoiceStatus.FINALIZED)
        if not reason.strip():
            raise InvalidInputError("a void needs a reason")
        self._voided(reason=reason, actor=actor)

    @event("Voided")
    def _voided(self, reason: str, actor: str) -> None:
        self.status = InvoiceStatus.VOID

    def issue_credit_note(self, credit_note_id: str, amount_nanos: int, reason: str,
                          actor: str, request_key: str | None = None) -> None:
        if credit_note_id in self.credit_note_ids:
            raise InvalidStateError(f"credit note {credit_note_id} is already issued")
        request = None if request_key is None else self.credit_note_requests.get(request_key)
        pending = self._pending_credit_nanos()
        if request is not None:
            pending -= int(request["amount_nanos"])
        self._check_credit(amount_nanos, reason, pending=pending)
        self._credit_note_issued(credit_note_id=credit_note_id, amount_nanos=amount_nanos,
                                 reason=reason, actor=actor, request_key=request_key)

    @event("CreditNoteIssued")
    def _credit_note_issued(self, credit_note_id: str, amount_nanos: int, reason: str,
                            actor: str, request_key: str | None = None) -> None:
        self.credit_note_ids.append(credit_note_id)
        if request_key is not None and request_key in self.credit_note_requests:
            self.credit_note_requests[request_key]["credit_note_id"] = credit_note_id
        self.credited_nanos += amount_nanos
