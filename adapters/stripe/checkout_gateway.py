"""The Stripe adapter of the Checkout port: Checkout Sessions, billing-portal sessions, receipts.

Kept beside `gateway.py` (saved-card PaymentIntents, lists) rather than in it, so that the two
change for their own reasons. The same SDK client serves both: its retries (timeouts, connection
errors, 5xx) resend the same idempotency key, so a retry never opens a second session.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import stripe

from adapters.stripe.gateway import METADATA_VALUE_LENGTH_MAX
from services.payments.port import (
    CheckoutRequest,
    CheckoutSessionInfo,
    PaymentProviderError,
)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def checkout_session_info(data: Mapping[str, Any]) -> CheckoutSessionInfo:
    """A Checkout Session (SDK object or webhook JSON) as a port value."""
    intent = data.get("payment_intent")
    if isinstance(intent, Mapping):  # expanded
        intent = intent.get("id")
    expires_at = data.get("expires_at")
    metadata = data.get("metadata") or {}
    return CheckoutSessionInfo(
        session_id=_text(data.get("id")) or "", url=_text(data.get("url")),
        status=_text(data.get("status")) or "unknown",
        payment_status=_text(data.get("payment_status")) or "unknown",
        intent_id=_text(intent),
        expires_at=expires_at if type(expires_at) is int else None,
        metadata={str(k): str(v)[:METADATA_VALUE_LENGTH_MAX] for k, v in dict(metadata).items()})


def _receipt_of(charge: object) -> str | None:
    if isinstance(charge, Mapping):
        return _text(charge.get("receipt_url"))
    return None


class StripeCheckoutGateway:
    def __init__(self, client: stripe.StripeClient) -> None:
        self.client = client

    def create_checkout_session(self, request: CheckoutRequest) -> CheckoutSessionInfo:
        metadata = dict(request.metadata)
        params: dict[str, Any] = {
            "mode": "payment",
            "customer": request.customer_id,
            "line_items": [{"quantity": 1, "price_data": {
                "currency": request.currency.lower(), "unit_amount": request.amount_minor,
                "product_data": {"name": request.product_name[:METADATA_VALUE_LENGTH_MAX]}}}],
            # The PaymentIntent carries the payment id, so its own webhooks settle it; the card
            # is saved on the customer for later off-session top-ups.
            "payment_intent_data": {"metadata": metadata, "setup_future_usage": "off_session"},
            "metadata": metadata,
            "success_url": request.success_url,
            "cancel_url": request.cancel_url,
            "expires_at": request.expires_at,
        }
        try:
            session = self.client.v1.checkout.sessions.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": request.idempotency_key})
        except stripe.StripeError as error:
            raise PaymentProviderError(
                f"Stripe did not open the Checkout Session: {error}") from None
        return checkout_session_info(session)

    def retrieve_checkout_session(self, session_id: str) -> CheckoutSessionInfo:
        try:
            return checkout_session_info(self.client.v1.checkout.sessions.retrieve(session_id))
        except stripe.StripeError as error:
            raise PaymentProviderError(f"Stripe did not answer for {session_id}: {error}") \
                from None

    def create_portal_session(self, *, customer_id: str, return_url: str) -> str:
        # No idempotency key: a portal session changes nothing at Stripe and lives minutes; a
        # retried request is meant to get a fresh one.
        try:
            session = self.client.v1.billing_portal.sessions.create(
                params={"customer": customer_id, "return_url": return_url})
        except stripe.StripeError as error:
            raise PaymentProviderError(
                f"Stripe did not open the billing portal: {error}") from None
        url = _text(session.get("url"))
        if url is None:
            raise PaymentProviderError("Stripe answered a billing-portal session without a URL")
        return url

    def receipt_url(self, intent_id: str) -> str | None:
        """The receipt of the PaymentIntent's charge (`latest_charge` expanded; older API
        versions, and localstripe, list the charges on the PaymentIntent instead)."""
        try:
            intent = self.client.v1.payment_intents.retrieve(
                intent_id, params={"expand": ["latest_charge"]})
        except stripe.StripeError as error:
            raise PaymentProviderError(f"Stripe did not answer for {intent_id}: {error}") \
                from None
        receipt = _receipt_of(intent.get("latest_charge"))
        charges = intent.get("charges")
        if receipt is None and isinstance(charges, Mapping):
            listed = charges.get("data") or []
            receipt = _receipt_of(listed[-1]) if listed else None
        return receipt
