"""Collecting finalized invoices through Stripe, voiding them, and correcting them by credit note.

Collecting one invoice (`collect`), in an order that makes a crash harmless:
1. the ledger invoice is finalized (number and total are in its `Finalized` event);
2. the Stripe invoice is found (the id the ledger recorded, or, after a crash before recording
   it, the customer's Stripe invoice whose metadata names this invoice) or created with an
   idempotency key derived from the `Finalized` event (invoice id and number): a retry within
   Stripe's 24 hours gets the same invoice from the key, later the listing finds it;
3. its id is recorded on the ledger invoice (`StripeInvoiceLinked`);
4. its one invoice item (the rounded total) is added unless Stripe's invoice already has it, and
   it is finalized (keys derived the same way), so Stripe charges the customer's default
   payment method.
It is marked paid when Stripe says so (`invoice.paid`, or a read in `refresh`). An invoice whose
total is zero (all covered by prepaid credit) needs no Stripe invoice: it is marked paid by the
prepaid credit at once.

Voiding asks Stripe first (void an open invoice, delete a draft one; a paid one cannot be voided
and is corrected by a credit note), then records the void. A credit note is first requested on
the ledger invoice (`CreditNoteRequested`, whose request key gives the Stripe idempotency key),
then created in Stripe (refunded when the invoice was paid), then recorded with Stripe's id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from uuid import UUID

from domain.errors import InvalidAmountError, InvalidStateError
from domain.invoice import Invoice, InvoiceStatus
from domain.money import nanos_per_minor_unit
from domain.roles import Action
from domain.team import Team
from services.actor import Actor
from services.invoicing.invoice_commands import (
    apply_stripe_invoice,
    issue_requested_credit_note,
    link_stripe_invoice,
    request_credit_note,
)
from services.invoicing.port import StripeInvoiceInfo, StripeInvoicePort
from services.invoicing.reconcile_invoices import monthly_invoices
from services.ledger import Ledger

PREPAID_REFERENCE = "prepaid_credit"


class StripeNotConfiguredError(InvalidStateError):
    code = "stripe_not_configured"

STRIPE_ACTOR = Actor.system("stripe")
CREDIT_NOTE_REQUEST_KEY = "ledger_credit_note_request"  # metadata naming the ledger's request


def invoice_key(invoice: Invoice, step: str) -> str:
    """An idempotency key derived from the invoice's `Finalized` event (id and number)."""
    return f"ledger-invoice-{invoice.id}-{invoice.number}-{step}"


def short_digest(text: str) -> str:
    """A request key of any length as 32 hex characters (Stripe's keys have a length limit)."""
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def invoice_metadata(invoice: Invoice) -> dict[str, str]:
    return {"ledger_invoice_id": str(invoice.id), "ledger_team_id": str(invoice.team_id),
            "ledger_invoice_number": str(invoice.number)}


class InvoiceCollection:
    def __init__(self, ledger: Ledger, port: StripeInvoicePort | None = None,
                 ensure_customer: Callable[[Team, Actor], str] | None = None) -> None:
        """Without a port (Stripe not configured) only what needs no Stripe works: settling a
        zero total by prepaid credit, and credit notes on invoices Stripe does not collect."""
        self.ledger = ledger
        self._port = port
        self._ensure_customer = ensure_customer

    @property
    def port(self) -> StripeInvoicePort:
        if self._port is None:
            raise StripeNotConfiguredError(
                "this needs Stripe, which is not configured: an operator sets "
                "LEDGER_STRIPE_API_KEY and LEDGER_STRIPE_WEBHOOK_SECRETS (docs/stripe.md)")
        return self._port

    def ensure_customer(self, team: Team, actor: Actor) -> str:
        if self._ensure_customer is None:
            raise StripeNotConfiguredError("a Stripe customer needs Stripe, which is not "
                                           "configured (docs/stripe.md)")
        return self._ensure_customer(team, actor)

    def finalize_and_collect(self, invoice_id: UUID, actor: Actor,
                             idempotency_key: str | None = None) -> Invoice:
        if self.ledger.get_invoice(invoice_id).status == InvoiceStatus.DRAFT:
            self.ledger.finalize_invoice(invoice_id, actor, idempotency_key)
        return self.collect(invoice_id, actor)

    def find_stripe_invoice(self, invoice: Invoice, customer_id: str) -> str | None:
        if invoice.stripe_invoice_id is not None:
            return invoice.stripe_invoice_id
        mine = [i for i in self.port.list_invoices(customer_id)
                if i.ledger_invoice_id == str(invoice.id) and i.status != "void"]
        return mine[0].invoice_id if mine else None

    def collect(self, invoice_id: UUID, actor: Actor) -> Invoice:
        """Send a finalized invoice to Stripe (or resume after a crash); safe to repeat."""
        invoice = self.ledger.get_invoice(invoice_id)
        if invoice.status != InvoiceStatus.FINALIZED:
            return invoice
        assert invoice.total_minor is not None
        if invoice.total_minor <= 0:
            self.ledger.mark_invoice_paid(invoice_id, PREPAID_REFERENCE, actor)
            return self.ledger.get_invoice(invoice_id)
        team = self.ledger.get_team(invoice.team_id)
        customer_id = self.ensure_customer(team, actor)
        stripe_id = self.find_stripe_invoice(invoice, customer_id)
        if stripe_id is None:
            stripe_id = self.port.create_invoice(
                customer_id=customer_id, currency=invoice.currency,
                description=f"Invoice {invoice.number}, {invoice.period_start} to "
                            f"{invoice.period_end} (exclusive)",
                metadata=invoice_metadata(invoice),
                idempotency_key=invoice_key(invoice, "create")).invoice_id
        link_stripe_invoice(self.ledger, invoice_id, stripe_id, STRIPE_ACTOR)
        stripe_invoice = self.port.retrieve(stripe_id)
        if stripe_invoice.status == "draft":
            if stripe_invoice.total_minor == 0:
                self.port.add_item(
                    customer_id=customer_id, stripe_invoice_id=stripe_id,
                    amount_minor=invoice.total_minor, currency=invoice.currency,
                    description=f"Usage {invoice.period_start} to {invoice.period_end} "
                                f"(ledger invoice {invoice.number})",
                    metadata=invoice_metadata(invoice),
                    idempotency_key=invoice_key(invoice, "item"))
            elif stripe_invoice.total_minor != invoice.total_minor:
                raise InvalidStateError(
                    f"Stripe invoice {stripe_id} totals {stripe_invoice.total_minor} minor "
                    f"units, the ledger invoice {invoice.total_minor}; reconcile before "
                    "collecting")
            stripe_invoice = self.port.finalize(stripe_id, invoice_key(invoice, "finalize"))
        if stripe_invoice.status == "paid":
            self.apply(stripe_invoice, "invoice.paid")
        return self.ledger.get_invoice(invoice_id)

    def refresh(self, invoice_id: UUID) -> Invoice:
        """Read the invoice's Stripe invoice and record what it says (a lost webhook)."""
        invoice = self.ledger.get_invoice(invoice_id)
        if invoice.stripe_invoice_id is not None:
            stripe_invoice = self.port.retrieve(invoice.stripe_invoice_id)
            event = {"paid": "invoice.paid", "void": "invoice.voided"}.get(
                stripe_invoice.status, "invoice.updated")
            self.apply(stripe_invoice, event)
        return self.ledger.get_invoice(invoice_id)

    def refresh_open_invoices(self, team_id: UUID) -> int:
        """Refresh each finalized monthly invoice of the team that Stripe collects (a webhook
        that never came); returns how many were read."""
        team = self.ledger.get_team(team_id)
        open_ones = [i for i in monthly_invoices(self.ledger, team)
                     if i.status == InvoiceStatus.FINALIZED and i.stripe_invoice_id is not None]
        for invoice in open_ones:
            self.refresh(invoice.id)
        return len(open_ones)

    def apply(self, info: StripeInvoiceInfo, event_type: str,
              event_id: str | None = None) -> str:
        return apply_stripe_invoice(self.ledger, event_type, info, STRIPE_ACTOR, event_id)

    def void(self, invoice_id: UUID, reason: str, actor: Actor) -> Invoice:
        invoice = self.ledger.get_invoice(invoice_id)
        team = self.ledger.get_team(invoice.team_id)
        self.ledger.authorize(team, actor, Action.MANAGE_INVOICES)
        invoice.void(reason, actor.user_id)  # checks status and reason; this copy is dropped
        if team.stripe_customer_id is not None and (invoice.total_minor or 0) > 0:
            stripe_id = self.find_stripe_invoice(invoice, team.stripe_customer_id)
            if stripe_id is not None:
                self._void_in_stripe(invoice, stripe_id)
        self.ledger.void_invoice(invoice_id, reason, actor)
        return self.ledger.get_invoice(invoice_id)

    def _void_in_stripe(self, invoice: Invoice, stripe_id: str) -> None:
        status = self.port.retrieve(stripe_id).status
        if status == "paid":
            raise InvalidStateError(
                f"Stripe invoice {stripe_id} is paid; it cannot be voided: record the payment "
                "(refresh) and correct the invoice by a credit note")
        if status == "draft":
            self.port.delete_draft(stripe_id)
        elif status in ("open", "uncollectible"):
            self.port.void(stripe_id, invoice_key(invoice, "void"))

    def credit_note(self, invoice_id: UUID, request_key: str, amount_nanos: int, reason: str,
                    actor: Actor) -> Invoice:
        invoice = self.ledger.get_invoice(invoice_id)
        step = nanos_per_minor_unit(invoice.currency)
        if type(amount_nanos) is not int or amount_nanos % step:
            raise InvalidAmountError(
                f"a credit note is a whole number of {invoice.currency} minor units: "
                f"amount_nanos must be a multiple of {step}")
        request_credit_note(self.ledger, invoice_id, request_key, amount_nanos, reason, actor)
        invoice = self.ledger.get_invoice(invoice_id)
        if invoice.credit_note_requests[request_key]["credit_note_id"] is not None:
            return invoice
        stripe_id = invoice.stripe_invoice_id
        if stripe_id is None:  # settled by prepaid credit: the ledger's own credit note
            credit_note_id = f"ledger-cn-{invoice.id}-{request_key}"
        else:  # after a crash past Stripe's 24 hours, its metadata finds the one made
            credit_note_id = self.port.credit_notes_of(stripe_id).get(
                request_key) or self.port.create_credit_note(
                stripe_invoice_id=stripe_id, amount_minor=amount_nanos // step,
                refund=invoice.status == InvoiceStatus.PAID, memo=reason,
                metadata={**invoice_metadata(invoice), CREDIT_NOTE_REQUEST_KEY: request_key},
                idempotency_key=invoice_key(invoice, f"credit-note-{short_digest(request_key)}"))
        issue_requested_credit_note(self.ledger, invoice_id, request_key, credit_note_id, actor)
        return self.ledger.get_invoice(invoice_id)
