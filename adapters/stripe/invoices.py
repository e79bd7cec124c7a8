"""The Stripe adapter of the invoice port (`services.invoicing.port`): one-off invoices, their one
invoice item, finalize, void, credit notes and listings, through the SDK's `StripeClient`.

Every request that creates or changes something carries the idempotency key the caller derived
from a domain event; timeouts and 5xx are retried by the SDK under the same key
(`max_network_retries`); what still fails is a `PaymentProviderError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import stripe

from adapters.stripe.gateway import LIST_PAGE_SIZE, LIST_PAGES_MAX, METADATA_VALUE_LENGTH_MAX
from services.invoicing.collection import CREDIT_NOTE_REQUEST_KEY
from services.invoicing.port import StripeInvoiceInfo
from services.payments.port import PaymentProviderError

# How Stripe collects a ledger invoice: charge the customer's default payment method.
COLLECTION_METHOD = "charge_automatically"
DESCRIPTION_LENGTH_MAX = 500
HOSTED_URL_LENGTH_MAX = 5000


def invoice_info(data: Mapping[str, Any]) -> StripeInvoiceInfo:
    """A Stripe invoice (SDK object or webhook JSON) as a port value."""
    metadata = data.get("metadata") or {}

    def whole(name: str) -> int:
        value = data.get(name)
        return value if type(value) is int else 0

    return StripeInvoiceInfo(
        invoice_id=str(data.get("id") or ""), status=str(data.get("status") or "unknown"),
        total_minor=whole("total"), amount_paid_minor=whole("amount_paid"),
        currency=str(data.get("currency") or "").upper(),
        metadata={str(k): str(v)[:METADATA_VALUE_LENGTH_MAX] for k, v in dict(metadata).items()},
        hosted_invoice_url=hosted_url(data.get("hosted_invoice_url")))


def hosted_url(value: object) -> str | None:
    """Stripe's hosted invoice page, if it is an https URL of a sane length (it is linked)."""
    if isinstance(value, str) and value.startswith("https://") and \
            len(value) <= HOSTED_URL_LENGTH_MAX:
        return value
    return None


class StripeInvoices:
    def __init__(self, client: stripe.StripeClient) -> None:
        self.client = client

    def _call(self, what: str, call: Any) -> Any:
        try:
            return call()
        except stripe.StripeError as error:
            raise PaymentProviderError(f"Stripe did not {what}: {error}") from None

    def create_invoice(self, *, customer_id: str, currency: str, description: str,
                       metadata: Mapping[str, str], idempotency_key: str) -> StripeInvoiceInfo:
        return invoice_info(self._call(
            "create the invoice", lambda: self.client.v1.invoices.create(
            params={"customer": customer_id, "currency": currency.lower(),
                    "collection_method": COLLECTION_METHOD, "auto_advance": False,
                    "pending_invoice_items_behavior": "exclude",
                    "description": description[:DESCRIPTION_LENGTH_MAX],
                    "metadata": dict(metadata)},  # type: ignore[arg-type]
            options={"idempotency_key": idempotency_key})))

    def add_item(self, *, customer_id: str, stripe_invoice_id: str, amount_minor: int,
                 currency: str, description: str, metadata: Mapping[str, str],
                 idempotency_key: str) -> None:
        self._call("add the invoice item", lambda: self.client.v1.invoice_items.create(
            params={"customer": customer_id, "invoice": stripe_invoice_id,
                    "amount": amount_minor, "currency": currency.lower(),
                    "description": description[:DESCRIPTION_LENGTH_MAX],
                    "metadata": dict(metadata)},
            options={"idempotency_key": idempotency_key}))

    def finalize(self, stripe_invoice_id: str, idempotency_key: str) -> StripeInvoiceInfo:
        return invoice_info(self._call(
            "finalize the invoice", lambda: self.client.v1.invoices.finalize_invoice(
                stripe_invoice_id, params={"auto_advance": True},
                options={"idempotency_key": idempotency_key})))

    def void(self, stripe_invoice_id: str, idempotency_key: str) -> StripeInvoiceInfo:
        return invoice_info(self._call(
            "void the invoice", lambda: self.client.v1.invoices.void_invoice(
                stripe_invoice_id, options={"idempotency_key": idempotency_key})))

    def delete_draft(self, stripe_invoice_id: str) -> None:
        self._call("delete the draft invoice",
                   lambda: self.client.v1.invoices.delete(stripe_invoice_id))

    def retrieve(self, stripe_invoice_id: str) -> StripeInvoiceInfo:
        return invoice_info(self._call(f"answer for {stripe_invoice_id}",
                                       lambda: self.client.v1.invoices.retrieve(stripe_invoice_id)))

    def list_invoices(self, customer_id: str) -> list[StripeInvoiceInfo]:
        found: list[StripeInvoiceInfo] = []
        params: dict[str, Any] = {"customer": customer_id, "limit": LIST_PAGE_SIZE}
        for _ in range(LIST_PAGES_MAX):
            page = self._call(f"list the invoices of {customer_id}",
                              lambda: self.client.v1.invoices.list(params=params))  # type: ignore[arg-type]
            found += [invoice_info(i) for i in page.data]
            if not page.has_more or not page.data:
                break
            params["starting_after"] = page.data[-1].id
        return found

    def payment_intents_of(self, stripe_invoice_id: str) -> list[str]:
        page = self._call(f"list the payments of {stripe_invoice_id}",
                          lambda: self.client.v1.invoice_payments.list(
                              params={"invoice": stripe_invoice_id, "limit": LIST_PAGE_SIZE}))
        intents = []
        for invoice_payment in page.data:
            intent = (invoice_payment.get("payment") or {}).get("payment_intent")
            intent_id = intent if isinstance(intent, str) else (intent or {}).get("id")
            if isinstance(intent_id, str):
                intents.append(intent_id)
        return intents

    def credit_notes_of(self, stripe_invoice_id: str) -> dict[str, str]:
        page = self._call(f"list the credit notes of {stripe_invoice_id}",
                          lambda: self.client.v1.credit_notes.list(
                              params={"invoice": stripe_invoice_id, "limit": LIST_PAGE_SIZE}))
        found = {}
        for note in page.data:
            request_key = (note.get("metadata") or {}).get(CREDIT_NOTE_REQUEST_KEY)
            if isinstance(request_key, str):
                found[request_key] = str(note.id)
        return found

    def create_credit_note(self, *, stripe_invoice_id: str, amount_minor: int, refund: bool,
                           memo: str, metadata: Mapping[str, str],
                           idempotency_key: str) -> str:
        params: dict[str, Any] = {"invoice": stripe_invoice_id, "amount": amount_minor,
                                  "memo": memo[:DESCRIPTION_LENGTH_MAX],
                                  "metadata": dict(metadata)}
        if refund:  # a paid invoice: the credit is refunded to the card it was paid with
            params["refund_amount"] = amount_minor
        note = self._call("create the credit note", lambda: self.client.v1.credit_notes.create(
            params=params, options={"idempotency_key": idempotency_key}))  # type: ignore[arg-type]
        return str(note.id)
