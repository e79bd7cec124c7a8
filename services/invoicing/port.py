"""The port to Stripe's invoices: what collecting, voiding, crediting and reconciling a ledger
invoice needs, in plain values (minor units; currencies upper case). The Stripe SDK stays in
`adapters/stripe/invoices.py`. Failures are `services.payments.port.PaymentProviderError`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StripeInvoiceInfo:
    invoice_id: str
    status: str  # Stripe's: draft, open, paid, uncollectible, void
    total_minor: int
    amount_paid_minor: int
    currency: str
    metadata: Mapping[str, str]
    # The customer's page of a finalized invoice (https only; None before finalize or unknown).
    hosted_invoice_url: str | None = None

    @property
    def ledger_invoice_id(self) -> str | None:
        return self.metadata.get("ledger_invoice_id")


class StripeInvoicePort(Protocol):
    def create_invoice(self, *, customer_id: str, currency: str, description: str,
                       metadata: Mapping[str, str], idempotency_key: str) -> StripeInvoiceInfo:
        """A draft Stripe invoice that takes no pending invoice items (only the one added)."""
        ...

    def add_item(self, *, customer_id: str, stripe_invoice_id: str, amount_minor: int,
                 currency: str, description: str, metadata: Mapping[str, str],
                 idempotency_key: str) -> None: ...

    def finalize(self, stripe_invoice_id: str, idempotency_key: str) -> StripeInvoiceInfo: ...

    def void(self, stripe_invoice_id: str, idempotency_key: str) -> StripeInvoiceInfo: ...

    def delete_draft(self, stripe_invoice_id: str) -> None: ...

    def retrieve(self, stripe_invoice_id: str) -> StripeInvoiceInfo: ...

    def list_invoices(self, customer_id: str) -> list[StripeInvoiceInfo]: ...

    def payment_intents_of(self, stripe_invoice_id: str) -> list[str]:
        """The PaymentIntents that paid the invoice (their charges are not top-ups)."""
        ...

    def credit_notes_of(self, stripe_invoice_id: str) -> dict[str, str]:
        """The invoice's credit notes made by the ledger: request key (from their metadata)
        -> credit note id."""
        ...

    def create_credit_note(self, *, stripe_invoice_id: str, amount_minor: int, refund: bool,
                           memo: str, metadata: Mapping[str, str],
                           idempotency_key: str) -> str:
        """A credit note on a finalized invoice (refunding the amount if `refund`, for a paid
        one); returns its id."""
        ...
