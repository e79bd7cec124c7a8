"""The port to the payment provider: what the top-up use cases need from Stripe, and nothing more.

Plain values in and out, so the use cases can be tested with a fake and the Stripe SDK stays in
`adapters/stripe/`. Amounts are in minor units, as Stripe speaks; currencies are upper case here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from domain.errors import LedgerError


class PaymentProviderError(LedgerError):
    """Stripe could not be reached or refused the request for a reason that is not the card's
    (a 5xx after retries, a timeout, a bad API key). Nothing was recorded as settled; the same
    request may be sent again (it carries the same idempotency key)."""

    code = "payment_provider_error"


@dataclass(frozen=True)
class IntentOutcome:
    """What Stripe answered about a PaymentIntent."""

    intent_id: str | None  # None when Stripe refused before creating one
    status: str  # Stripe's status, or "failed" for a declined card
    amount_minor: int
    amount_received_minor: int
    currency: str
    metadata: Mapping[str, str]
    failure_code: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True)
class RefundInfo:
    refund_id: str
    intent_id: str
    amount_minor: int
    currency: str
    status: str


@dataclass(frozen=True)
class DisputeInfo:
    dispute_id: str
    intent_id: str
    amount_minor: int
    currency: str
    status: str  # Stripe's: "lost", "won", "needs_response", ...


@dataclass(frozen=True)
class ChargeInfo:
    charge_id: str
    intent_id: str | None
    amount_minor: int
    amount_refunded_minor: int
    currency: str
    status: str
    disputed: bool = False


# Stripe Checkout and the customer portal -------------------------------------------------------

@dataclass(frozen=True)
class CheckoutSessionInfo:
    """A Checkout Session as Stripe reports it (created, or in a webhook)."""

    session_id: str
    url: str | None  # None once the session is complete or expired
    status: str  # "open", "complete", "expired"
    payment_status: str  # "paid", "unpaid", "no_payment_required"
    intent_id: str | None  # the PaymentIntent, once the customer paid or tried to
    expires_at: int | None
    metadata: Mapping[str, str]


@dataclass(frozen=True)
class CheckoutRequest:
    """What the ledger asks Checkout for: one payment of a fixed amount, the card saved."""

    customer_id: str
    amount_minor: int
    currency: str
    product_name: str
    metadata: Mapping[str, str]
    success_url: str
    cancel_url: str
    expires_at: int
    idempotency_key: str


class CheckoutGateway(Protocol):
    def create_checkout_session(self, request: CheckoutRequest) -> CheckoutSessionInfo: ...

    def retrieve_checkout_session(self, session_id: str) -> CheckoutSessionInfo: ...

    def create_portal_session(self, *, customer_id: str, return_url: str) -> str:
        """A billing-portal session for the customer; returns its URL."""
        ...

    def receipt_url(self, intent_id: str) -> str | None:
        """The receipt of the charge that paid the PaymentIntent, if there is one."""
        ...


class PaymentGateway(Protocol):
    def create_customer(self, *, team_id: str, team_name: str,
                        idempotency_key: str) -> str:
        """Create (once per key) the customer of a team; return its Stripe id."""
        ...

    def create_payment_intent(self, *, customer_id: str, payment_method_id: str,
                              amount_minor: int, currency: str, metadata: Mapping[str, str],
                              idempotency_key: str) -> IntentOutcome:
        """Charge a saved card off-session, confirming at once; a declined card is an outcome
        with status "failed", not an exception."""
        ...

    def retrieve_payment_intent(self, intent_id: str) -> IntentOutcome: ...

    def list_refunds(self, intent_id: str) -> list[RefundInfo]: ...

    def list_disputes(self, intent_id: str) -> list[DisputeInfo]: ...

    def list_charges(self, customer_id: str) -> list[ChargeInfo]: ...
