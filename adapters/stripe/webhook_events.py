"""What the ledger does with each verified Stripe event type.

PaymentIntent events carry the PaymentIntent; it is recorded as Stripe reports it (credited once
when it succeeded, visible when it failed or was cancelled). Refund events are resolved by a
read: the PaymentIntent and its refunds are fetched from Stripe, so the ledger records what
Stripe holds now, whatever order the events came in. Every handled event is recorded under its
Stripe event id (scope `stripe_event`), so a second delivery replays the first result, lastingly.
A closed dispute that was lost reverses exactly the disputed amount (the amount and status come
from the signed event; the PaymentIntent is read for its metadata). Other types are acknowledged
and ignored.

Checkout events (`checkout.session.*`) go to `services.payments.checkout`: the session is
recorded on its payment in whatever order it arrives, and the payment is settled through the
session's PaymentIntent as Stripe holds it (read, not trusted from the event), or marked expired.
A succeeded PaymentIntent's receipt (its charge's `receipt_url`) is read and recorded.
"""

from __future__ import annotations

import logging

from adapters.stripe.checkout_gateway import checkout_session_info
from adapters.stripe.gateway import dispute_info, intent_outcome
from adapters.stripe.invoices import invoice_info
from adapters.stripe.webhook_signature import VerifiedEvent
from services.invoicing.invoice_commands import apply_stripe_invoice
from services.payments.checkout import SESSION_EXPIRED_TYPE, SESSION_SETTLING_TYPES, Checkout
from services.payments.port import PaymentGateway
from services.payments.settlement import Settlement
from services.payments.top_ups import STRIPE_ACTOR

log = logging.getLogger("ledger.stripe.webhook")

INTENT_EVENT_TYPES = frozenset({
    "payment_intent.succeeded", "payment_intent.payment_failed", "payment_intent.canceled",
    "payment_intent.processing", "payment_intent.requires_action"})
REFUND_EVENT_TYPES = frozenset({
    "charge.refunded", "refund.created", "refund.updated", "charge.refund.updated"})
DISPUTE_EVENT_TYPES = frozenset({"charge.dispute.closed"})
# Invoice events: the ledger invoice named by the Stripe invoice's metadata is linked to it,
# marked paid (`invoice.paid`, in whatever order it comes) or voided (`invoice.voided`); the
# amounts and status come from the signed event (services.invoicing.invoice_commands).
INVOICE_EVENT_TYPES = frozenset({
    "invoice.created", "invoice.finalized", "invoice.paid", "invoice.voided",
    "invoice.payment_failed", "invoice.updated"})
CHECKOUT_EVENT_TYPES = SESSION_SETTLING_TYPES | {SESSION_EXPIRED_TYPE}
HANDLED_EVENT_TYPES = INTENT_EVENT_TYPES | REFUND_EVENT_TYPES | DISPUTE_EVENT_TYPES | \
    INVOICE_EVENT_TYPES | CHECKOUT_EVENT_TYPES


def handle_invoice_event(event: VerifiedEvent, settlement: Settlement) -> str:
    return apply_stripe_invoice(settlement.ledger, event.event_type,
                                invoice_info(event.data_object), STRIPE_ACTOR,
                                event_id=event.event_id)


def handle_event(event: VerifiedEvent, settlement: Settlement, gateway: PaymentGateway,
                 checkout: Checkout | None = None) -> str:
    """Apply one verified event; returns what happened (for the answer and the log).

    `checkout` is None while Checkout is not configured: its events are then refused (an
    error, so Stripe delivers them again once it is)."""
    if event.event_type in INTENT_EVENT_TYPES:
        intent = intent_outcome(event.data_object)
        result = settlement.apply_intent(intent, STRIPE_ACTOR, event_id=event.event_id)
        if checkout is not None:
            record_receipt(checkout, settlement, intent.status, dict(intent.metadata),
                           intent.intent_id)
    elif event.event_type in CHECKOUT_EVENT_TYPES:
        if checkout is None:
            raise RuntimeError(f"{event.event_type} arrived but Stripe Checkout is not "
                               "configured here (see docs/stripe.md)")
        result = checkout.apply_session_event(
            event.event_type, checkout_session_info(event.data_object), event.event_id)
    elif event.event_type in REFUND_EVENT_TYPES:
        intent_id = event.data_object.get("payment_intent")
        if not isinstance(intent_id, str) or not intent_id:
            result = "ignored: no PaymentIntent"
        else:
            intent = gateway.retrieve_payment_intent(intent_id)
            refunds = gateway.list_refunds(intent_id)
            result = settlement.apply_refunds(intent, refunds, STRIPE_ACTOR,
                                              event_id=event.event_id)
    elif event.event_type in DISPUTE_EVENT_TYPES:
        dispute = dispute_info(event.data_object)
        if not dispute.dispute_id or not dispute.intent_id:
            result = "ignored: dispute without id or PaymentIntent"
        else:
            intent = gateway.retrieve_payment_intent(dispute.intent_id)
            result = settlement.apply_dispute_lost(intent, dispute, STRIPE_ACTOR,
                                                   event_id=event.event_id)
    elif event.event_type in INVOICE_EVENT_TYPES:
        result = handle_invoice_event(event, settlement)
    else:
        result = "ignored: type not handled"
    log.info("stripe event %s (%s): %s", event.event_id, event.event_type, result)
    return result


def record_receipt(checkout: Checkout, settlement: Settlement, status: str,
                   metadata: dict[str, str], intent_id: str | None) -> None:
    """A succeeded PaymentIntent of ours: read its charge's receipt and record it (once)."""
    if status != "succeeded" or intent_id is None:
        return
    payment = settlement.payment_of(metadata)
    if payment is not None and payment.receipt_url is None:
        checkout.record_receipt(payment.id, intent_id)
