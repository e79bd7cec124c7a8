"""Top-ups through Stripe Checkout, and the Stripe customer portal.

A Checkout top-up is a `Payment` like a saved-card one (same deterministic id from the caller's
request key, same `PaymentBook`), with `payment_method_id = "checkout"`: the customer picks the
card on Stripe's page. The order of steps makes a crash harmless:
1. the team's Stripe customer is made once (`TopUps.ensure_customer`);
2. the payment is started (a retry with the same key finds it);
3. Stripe opens the Checkout Session with an idempotency key derived from the payment's `Started`
   event, and every parameter derived from the payment too (the expiry from the moment it
   started), so a retry after a crash sends the same request and Stripe answers the same session;
4. the session is recorded on the payment (`CheckoutSessionOpened`), and its URL answered.
The PaymentIntent that Checkout makes carries the payment id in its metadata, so it is settled
by the same path as every other (`Settlement.apply_intent`: credited once, keyed by the
PaymentIntent). Checkout's own events are resolved by a read of that PaymentIntent; an expired
session marks the payment expired, with no money moved.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from domain.errors import InvalidStateError
from domain.payment import CHECKOUT_METHOD, Payment
from domain.roles import Action
from services.actor import Actor
from services.command_runs import Attempt, Command, team_scope
from services.payments.port import CheckoutGateway, CheckoutRequest, CheckoutSessionInfo
from services.payments.settlement import STRIPE_EVENT_SCOPE
from services.payments.top_ups import STRIPE_ACTOR, TopUps, payment_metadata

# Stripe accepts a Checkout Session's expires_at from 30 minutes to 24 hours after creation.
CHECKOUT_LIFETIME_SECONDS_MIN = 30 * 60
CHECKOUT_LIFETIME_SECONDS_MAX = 24 * 60 * 60
CHECKOUT_LIFETIME_SECONDS_DEFAULT = 60 * 60
# A session is not opened for a payment whose window closes sooner than this: Stripe would
# refuse the expiry, and the customer would have no time to pay.
CHECKOUT_OPEN_MARGIN_SECONDS = CHECKOUT_LIFETIME_SECONDS_MIN
TEAM_PLACEHOLDER = "{team_id}"
# Webhook types of Checkout that resolve to the session's PaymentIntent.
SESSION_SETTLING_TYPES = frozenset({
    "checkout.session.completed", "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed"})
SESSION_EXPIRED_TYPE = "checkout.session.expired"
NANOSECONDS_PER_SECOND = 1_000_000_000
# What the Checkout page calls the purchase. Fixed, not the team's name: every parameter of the
# request must be the same on a retry, and a team may be renamed in between.
CHECKOUT_PRODUCT_NAME = "Ledger balance top-up"


@dataclass(frozen=True)
class CheckoutLinks:
    """Where Stripe sends the customer back to; `{team_id}` is replaced by the team's id."""

    success_url: str
    cancel_url: str
    portal_return_url: str
    lifetime_seconds: int = CHECKOUT_LIFETIME_SECONDS_DEFAULT

    def for_team(self, template: str, team_id: UUID) -> str:
        return template.replace(TEAM_PLACEHOLDER, str(team_id))


@dataclass(frozen=True)
class CheckoutStart:
    payment: Payment
    checkout_url: str | None  # None when the payment is already final (paid, expired...)


class Checkout:
    def __init__(self, top_ups: TopUps, gateway: CheckoutGateway, links: CheckoutLinks,
                 clock: Callable[[], int] | None = None) -> None:
        self.top_ups = top_ups
        self.ledger = top_ups.ledger
        self.gateway = gateway
        self.links = links
        self.clock = clock or unix_seconds

    # Starting -------------------------------------------------------------------------------

    def start_checkout_top_up(self, team_id: UUID, amount_nanos: int, actor: Actor,
                              request_key: str | None = None) -> CheckoutStart:
        """Start (or, with the same request key, resume) a top-up paid on Stripe's page."""
        team = self.ledger.get_team(team_id)
        self.ledger.authorize(team, actor, Action.TOP_UP)
        team.check_active()
        amount_minor = self.top_ups.check_amount(team, amount_nanos)
        customer_id = self.top_ups.ensure_customer(team, actor)
        payment = self.top_ups.start_payment(team, request_key or uuid.uuid4().hex,
                                             amount_nanos, amount_minor, CHECKOUT_METHOD, actor)
        if payment.is_final:
            return CheckoutStart(payment, None)
        if payment.checkout_url is not None:
            # Stripe's expiry event may still be on its way: an expired page is not offered.
            expires = payment.checkout_expires_at
            still_open = expires is None or self.clock() < expires
            return CheckoutStart(payment, payment.checkout_url if still_open else None)
        expires_at = self.expires_at(payment)
        if payment.checkout_session_id is None and \
                self.clock() > expires_at - CHECKOUT_OPEN_MARGIN_SECONDS:
            raise InvalidStateError(
                f"top-up {payment.id} started too long ago to open its checkout now; start a "
                "new top-up with a new idempotency key")
        session = self.gateway.create_checkout_session(CheckoutRequest(
            customer_id=customer_id, amount_minor=payment.amount_minor,
            currency=payment.currency, product_name=CHECKOUT_PRODUCT_NAME,
            metadata=payment_metadata(payment),
            success_url=self.links.for_team(self.links.success_url, team.id),
            cancel_url=self.links.for_team(self.links.cancel_url, team.id),
            expires_at=expires_at, idempotency_key=checkout_idempotency_key(payment)))
        self.record_session(payment.id, session, STRIPE_ACTOR)
        return CheckoutStart(self.top_ups.get_payment(payment.id), session.url)

    def expires_at(self, payment: Payment) -> int:
        """When the payment's session expires: from the `Started` event, so every retry asks
        Stripe for the same expiry (Stripe refuses a key reused with other parameters)."""
        return int(payment.created_on.timestamp()) + self.links.lifetime_seconds

    def record_session(self, payment_id: UUID, session: CheckoutSessionInfo,
                       actor: Actor) -> str:
        """Record the session on the payment (a no-op if it is already recorded)."""
        def attempt() -> Attempt:
            payment = self.top_ups.get_payment(payment_id)
            changed = payment.open_checkout_session(session.session_id, session.url,
                                                    session.expires_at, actor.user_id)
            return Attempt([payment] if changed else [], "opened" if changed else "unchanged")

        team_id = self.top_ups.get_payment(payment_id).team_id
        return self.ledger.commands.run(
            Command("open_checkout_session", team_scope(team_id),
                    {"payment_id": str(payment_id), "session_id": session.session_id},
                    actor.user_id), attempt)

    # The customer portal --------------------------------------------------------------------

    def open_portal(self, team_id: UUID, actor: Actor) -> str:
        """A Stripe billing-portal session URL for the team's customer (made once if none)."""
        team = self.ledger.get_team(team_id)
        self.ledger.authorize(team, actor, Action.OPEN_BILLING_PORTAL)
        customer_id = self.top_ups.ensure_customer(team, actor)
        return self.gateway.create_portal_session(
            customer_id=customer_id,
            return_url=self.links.for_team(self.links.portal_return_url, team.id))

    # What Stripe reports --------------------------------------------------------------------

    def apply_session_event(self, event_type: str, session: CheckoutSessionInfo,
                            event_id: str) -> str:
        """A verified Checkout webhook: record the session (in any order), then settle through
        its PaymentIntent as Stripe holds it now, or mark the payment expired."""
        payment = self.top_ups.settlement.payment_of(dict(session.metadata))
        if payment is None or not session.session_id:
            return "ignored: not a ledger payment"
        if event_type == SESSION_EXPIRED_TYPE:
            return self._expire(payment.id, session.session_id, event_id)
        if event_type not in SESSION_SETTLING_TYPES:
            return "ignored: type not handled"
        return self._settle(payment, session)

    def _settle(self, payment: Payment, session: CheckoutSessionInfo) -> str:
        """Record the session, then what its PaymentIntent says as Stripe holds it now."""
        self.record_session(payment.id, session, STRIPE_ACTOR)
        if session.intent_id is None:
            return f"session recorded; no PaymentIntent yet ({session.payment_status})"
        intent = self.top_ups.gateway.retrieve_payment_intent(session.intent_id)
        # Not keyed by the event id: what is recorded is read now, and a later delivery of the
        # same event may read more (processing, then succeeded), which a key recorded with the
        # first reading would refuse as a conflict for ever. A repeat is harmless all the same:
        # the credit is keyed by the PaymentIntent.
        result = self.top_ups.settlement.apply_intent(intent, STRIPE_ACTOR,
                                                      payment_id=payment.id)
        if intent.status == "succeeded" and payment.receipt_url is None:
            self.record_receipt(payment.id, intent.intent_id or session.intent_id)
        return result

    def refresh_open_checkouts(self, team_id: UUID) -> int:
        """Read the session of every unfinished Checkout payment of the team (among its latest
        `PAYMENTS_LISTED_MAX`) and record what Stripe says, by the same path as the webhooks:
        heals events that never came. Returns how many were read."""
        open_payments = [p for p in self.top_ups.payments_of(team_id)
                         if p.is_checkout and not p.is_final and p.checkout_session_id]
        for payment in open_payments:
            assert payment.checkout_session_id is not None
            session = self.gateway.retrieve_checkout_session(payment.checkout_session_id)
            if session.status == "expired":
                self._expire(payment.id, session.session_id, None)
            else:
                self._settle(payment, session)
        return len(open_payments)

    def _expire(self, payment_id: UUID, session_id: str, event_id: str | None) -> str:
        def attempt() -> Attempt:
            payment = self.top_ups.get_payment(payment_id)
            changed = payment.expire_checkout(session_id, STRIPE_ACTOR.user_id)
            return Attempt([payment] if payment.pending_events else [],
                           "expired" if changed else "unchanged")

        scope = STRIPE_EVENT_SCOPE if event_id is not None else \
            team_scope(self.top_ups.get_payment(payment_id).team_id)
        return self.ledger.commands.run(
            Command("expire_checkout", scope,
                    {"payment_id": str(payment_id), "session_id": session_id},
                    STRIPE_ACTOR.user_id, event_id), attempt)

    def record_receipt(self, payment_id: UUID, intent_id: str) -> str:
        """Read the receipt of the charge that paid the payment and record it (once)."""
        receipt_url = self.gateway.receipt_url(intent_id)
        if receipt_url is None:
            return "no receipt"

        def attempt() -> Attempt:
            payment = self.top_ups.get_payment(payment_id)
            changed = payment.record_receipt(receipt_url, STRIPE_ACTOR.user_id)
            return Attempt([payment] if changed else [], "receipt" if changed else "unchanged")

        team_id = self.top_ups.get_payment(payment_id).team_id
        return self.ledger.commands.run(
            Command("record_receipt", team_scope(team_id), {"payment_id": str(payment_id)},
                    STRIPE_ACTOR.user_id), attempt)


def unix_seconds() -> int:
    return time.time_ns() // NANOSECONDS_PER_SECOND


def checkout_idempotency_key(payment: Payment) -> str:
    """Derived from the payment's `Started` event (its id at version 1)."""
    return f"ledger-payment-{payment.id}-v1-checkout"
