"""The Stripe adapter of the payment port: every call to Stripe goes through the SDK's
`StripeClient` here, with an idempotency key on each request that creates something.

Timeouts, connection errors and Stripe 5xx are retried by the SDK itself
(`max_network_retries`, with its backoff) under the same idempotency key, so a retry never
creates a second object; what still fails is a `PaymentProviderError` (nothing was recorded as
settled; the caller may send the same request again). A declined card is not an error: it is an
outcome with status "failed" that the payment records, and so is a request Stripe refuses for
good (an unknown payment method).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import stripe

from adapters.stripe.settings import StripeSettings
from services.payments.port import (
    ChargeInfo,
    DisputeInfo,
    IntentOutcome,
    PaymentProviderError,
    RefundInfo,
)

# Objects one list call reads at most (Stripe's own page limit is 100).
LIST_PAGE_SIZE = 100
# Pages a listing follows at most; a customer with more charges than this is listed partly.
LIST_PAGES_MAX = 50
METADATA_VALUE_LENGTH_MAX = 500


def make_client(settings: StripeSettings,
                http_client: stripe.HTTPClient | None = None) -> stripe.StripeClient:
    """The SDK client for these settings; tests pass an `http_client` double."""
    return stripe.StripeClient(
        settings.api_key,
        base_addresses={"api": settings.api_base},
        max_network_retries=settings.network_retries,
        http_client=http_client or stripe.RequestsClient(timeout=settings.timeout_seconds))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int:
    return value if type(value) is int else 0


def intent_outcome(data: Mapping[str, Any]) -> IntentOutcome:
    """A PaymentIntent (as Stripe sends it: SDK object or webhook JSON) as a port value."""
    error = data.get("last_payment_error") or {}
    metadata = data.get("metadata") or {}
    return IntentOutcome(
        intent_id=_text(data.get("id")), status=_text(data.get("status")) or "unknown",
        amount_minor=_int(data.get("amount")),
        amount_received_minor=_int(data.get("amount_received")),
        currency=(_text(data.get("currency")) or "").upper(),
        metadata={str(k): str(v)[:METADATA_VALUE_LENGTH_MAX] for k, v in dict(metadata).items()},
        failure_code=_text(error.get("code")) if isinstance(error, Mapping) else None,
        failure_message=_text(error.get("message")) if isinstance(error, Mapping) else None)


def dispute_info(data: Mapping[str, Any]) -> DisputeInfo:
    """A Dispute (SDK object or webhook JSON) as a port value."""
    return DisputeInfo(dispute_id=_text(data.get("id")) or "",
                       intent_id=_text(data.get("payment_intent")) or "",
                       amount_minor=_int(data.get("amount")),
                       currency=(_text(data.get("currency")) or "").upper(),
                       status=_text(data.get("status")) or "unknown")


def _declined(error: stripe.CardError, amount_minor: int, currency: str,
              metadata: Mapping[str, str]) -> IntentOutcome:
    body = error.json_body if isinstance(error.json_body, dict) else {}
    detail = body.get("error") or {}
    intent = detail.get("payment_intent") if isinstance(detail, dict) else None
    if isinstance(intent, dict) and intent.get("id"):
        declined = intent_outcome(intent)
        if declined.status != "succeeded":
            return replace(declined, status="failed",
                           failure_code=declined.failure_code or error.code,
                           failure_message=declined.failure_message or error.user_message)
    return IntentOutcome(intent_id=None, status="failed", amount_minor=amount_minor,
                         amount_received_minor=0, currency=currency.upper(), metadata=metadata,
                         failure_code=error.code or "card_declined",
                         failure_message=error.user_message or str(error))


class StripeGateway:
    def __init__(self, client: stripe.StripeClient) -> None:
        self.client = client

    def create_customer(self, *, team_id: str, team_name: str, idempotency_key: str) -> str:
        try:
            customer = self.client.v1.customers.create(
                params={"name": team_name[:METADATA_VALUE_LENGTH_MAX],
                        "metadata": {"ledger_team_id": team_id}},
                options={"idempotency_key": idempotency_key})
        except stripe.StripeError as error:
            raise PaymentProviderError(f"Stripe did not create the customer: {error}") from None
        return str(customer.id)

    def create_payment_intent(self, *, customer_id: str, payment_method_id: str,
                              amount_minor: int, currency: str, metadata: Mapping[str, str],
                              idempotency_key: str) -> IntentOutcome:
        try:
            intent = self.client.v1.payment_intents.create(
                params={"amount": amount_minor, "currency": currency.lower(),
                        "customer": customer_id, "payment_method": payment_method_id,
                        "confirm": True, "off_session": True, "metadata": dict(metadata)},
                options={"idempotency_key": idempotency_key})
        except stripe.CardError as error:
            return _declined(error, amount_minor, currency, metadata)
        except stripe.InvalidRequestError as error:
            # Stripe refused this request for good (an unknown or foreign payment method, for
            # example); Stripe replays the same refusal for the same key, so it is final.
            return IntentOutcome(intent_id=None, status="failed", amount_minor=amount_minor,
                                 amount_received_minor=0, currency=currency.upper(),
                                 metadata=metadata, failure_code=error.code or "invalid_request",
                                 failure_message=error.user_message or str(error))
        except stripe.StripeError as error:
            raise PaymentProviderError(f"Stripe did not take the payment: {error}") from None
        return intent_outcome(intent)

    def retrieve_payment_intent(self, intent_id: str) -> IntentOutcome:
        try:
            return intent_outcome(self.client.v1.payment_intents.retrieve(intent_id))
        except stripe.StripeError as error:
            raise PaymentProviderError(f"Stripe did not answer for {intent_id}: {error}") \
                from None

    def list_refunds(self, intent_id: str) -> list[RefundInfo]:
        try:
            page = self.client.v1.refunds.list(
                params={"payment_intent": intent_id, "limit": LIST_PAGE_SIZE})
        except stripe.StripeError as error:
            raise PaymentProviderError(f"Stripe did not list refunds of {intent_id}: {error}") \
                from None
        return [RefundInfo(refund_id=str(r.id), intent_id=intent_id, amount_minor=int(r.amount),
                           currency=str(r.currency).upper(), status=str(r.status))
                for r in page.data]

    def list_disputes(self, intent_id: str) -> list[DisputeInfo]:
        try:
            page = self.client.v1.disputes.list(
                params={"payment_intent": intent_id, "limit": LIST_PAGE_SIZE})
        except stripe.StripeError as error:
            raise PaymentProviderError(f"Stripe did not list disputes of {intent_id}: "
                                       f"{error}") from None
        return [dispute_info(d) for d in page.data]

    def list_charges(self, customer_id: str) -> list[ChargeInfo]:
        charges: list[ChargeInfo] = []
        params: dict[str, Any] = {"customer": customer_id, "limit": LIST_PAGE_SIZE}
        try:
            for _ in range(LIST_PAGES_MAX):
                page = self.client.v1.charges.list(params=params)  # type: ignore[arg-type]
                charges += [ChargeInfo(
                    charge_id=str(c.id), intent_id=_text(c.get("payment_intent")),
                    amount_minor=int(c.amount), amount_refunded_minor=int(
                        c.get("amount_refunded") or 0),
                    currency=str(c.currency).upper(), status=str(c.status),
                    disputed=c.get("disputed") is True) for c in page.data]
                if not page.has_more or not page.data:
                    break
                params["starting_after"] = page.data[-1].id
        except stripe.StripeError as error:
            raise PaymentProviderError(f"Stripe did not list charges of {customer_id}: "
                                       f"{error}") from None
        return charges
