"""Starting a top-up: a team's Stripe customer (made once), the payment record, the charge.

The order of steps is what makes a crash harmless:
1. the team's Stripe customer is created with a key derived from the team id (a retry gets the
   same customer) and linked by the `link_stripe_customer` command, attributed to the member
   who started the top-up;
2. the `Payment` is started and listed in the team's `PaymentBook` in one save, under an id
   derived from the caller's request key (a retry with the same key finds it again);
3. Stripe is asked to charge the saved card with the idempotency key derived from the payment's
   `Started` event (a retry after a crash here sends the same key: Stripe answers with the same
   PaymentIntent instead of charging twice);
4. what Stripe answered is recorded on the payment (attached, or failed for a declined card).
The balance is not touched here: it is credited when Stripe reports the money received
(`services.payments.settlement`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from uuid import UUID

from domain.errors import (
    IdempotencyConflictError,
    InvalidAmountError,
    InvalidInputError,
    InvalidStateError,
)
from domain.money import format_nanos, nanos_per_minor_unit
from domain.payment import Payment, PaymentBook, payment_book_id_for, payment_id_for
from domain.roles import Action
from domain.team import Team
from services.actor import Actor
from services.command_runs import Attempt, Command, team_scope
from services.ledger import Ledger
from services.payments.port import PaymentGateway
from services.payments.settlement import Settlement

# Who may start a top-up (saved card or Checkout): a row of its own in the role matrix.
TOP_UP_ACTION = Action.TOP_UP
STRIPE_ACTOR = Actor.system("stripe")
# Payments one listing answers with at most (the latest ones first).
PAYMENTS_LISTED_MAX = 200


@dataclass(frozen=True)
class TopUpLimits:
    """The smallest and largest top-up of one currency, in nanos."""

    minimum_nanos: int
    maximum_nanos: int


def customer_idempotency_key(team_id: UUID) -> str:
    return f"ledger-team-{team_id}-create-customer"


class TopUps:
    def __init__(self, ledger: Ledger, gateway: PaymentGateway,
                 limits_for: Callable[[str], TopUpLimits]) -> None:
        self.ledger = ledger
        self.gateway = gateway
        self.limits_for = limits_for
        self.settlement = Settlement(ledger)

    # Customer ------------------------------------------------------------------------------

    def ensure_customer(self, team: Team, actor: Actor) -> str:
        """The team's Stripe customer id, created and linked (attributed to `actor`) on first
        use. Two racing first top-ups get the same customer from Stripe (same key); the loser
        of the link finds it linked and uses it."""
        if team.stripe_customer_id is not None:
            return team.stripe_customer_id
        customer_id = self.gateway.create_customer(
            team_id=str(team.id), team_name=team.name,
            idempotency_key=customer_idempotency_key(team.id))
        try:
            self.ledger.link_stripe_customer(team.id, customer_id, actor)
        except InvalidStateError:
            linked = self.ledger.get_team(team.id).stripe_customer_id
            if linked != customer_id:
                raise
        return customer_id

    # Top-ups -------------------------------------------------------------------------------

    def check_amount(self, team: Team, amount_nanos: int) -> int:
        """The amount in minor units; errors name the currency's step and the limits."""
        if type(amount_nanos) is not int:
            raise InvalidAmountError("amount_nanos must be a whole number of nanos")
        step = nanos_per_minor_unit(team.currency)
        if amount_nanos % step:
            raise InvalidAmountError(
                f"amount_nanos must be a whole number of {team.currency} minor units "
                f"(a multiple of {step} nanos), got {amount_nanos}")
        limits = self.limits_for(team.currency)
        if not limits.minimum_nanos <= amount_nanos <= limits.maximum_nanos:
            raise InvalidAmountError(
                f"a top-up in {team.currency} must be between "
                f"{format_nanos(limits.minimum_nanos, team.currency)} and "
                f"{format_nanos(limits.maximum_nanos, team.currency)}, got "
                f"{format_nanos(amount_nanos, team.currency)}")
        return amount_nanos // step

    def start_top_up(self, team_id: UUID, amount_nanos: int, payment_method_id: str,
                     actor: Actor, request_key: str | None = None) -> Payment:
        """Start (or, with the same request key, resume) a top-up charged to a saved card."""
        team = self.ledger.get_team(team_id)
        self.ledger.authorize(team, actor, TOP_UP_ACTION)
        team.check_active()
        amount_minor = self.check_amount(team, amount_nanos)
        customer_id = self.ensure_customer(team, actor)
        payment = self.start_payment(team, request_key or uuid.uuid4().hex, amount_nanos,
                                      amount_minor, payment_method_id, actor)
        if payment.stripe_object_id is None and not payment.is_final:
            outcome = self.gateway.create_payment_intent(
                customer_id=customer_id, payment_method_id=payment.payment_method_id,
                amount_minor=payment.amount_minor, currency=payment.currency.lower(),
                metadata=payment_metadata(payment), idempotency_key=payment.stripe_idempotency_key)
            self.settlement.record_answer(payment.id, outcome, STRIPE_ACTOR)
        return self.get_payment(payment.id)

    def start_payment(self, team: Team, request_key: str, amount_nanos: int,
                      amount_minor: int, payment_method_id: str, actor: Actor) -> Payment:
        """Start the payment and list it in the team's book (once per request key); the
        caller has checked the actor and the amount."""
        payment_id = payment_id_for(team.id, request_key)
        arguments = {"team_id": str(team.id), "request_key": request_key,
                     "amount_nanos": amount_nanos, "payment_method_id": payment_method_id}

        def attempt() -> Attempt:
            if self.ledger.exists(payment_id):
                earlier = self.get_payment(payment_id)
                if (earlier.amount_nanos, earlier.payment_method_id) != \
                        (amount_nanos, payment_method_id):
                    raise IdempotencyConflictError(
                        f"request key {request_key!r} already started a top-up of "
                        f"{earlier.amount_nanos} nanos; use a new key for a new top-up")
                return Attempt([], str(payment_id))
            payment = Payment.start(team_id=team.id, request_key=request_key,
                                    amount_nanos=amount_nanos, amount_minor=amount_minor,
                                    currency=team.currency,
                                    payment_method_id=payment_method_id, actor=actor.user_id)
            book = self._book(team.id)
            book.list_payment(payment.id)
            return Attempt([payment, book], str(payment.id))

        self.ledger.commands.run(
            Command("start_top_up", team_scope(team.id), arguments, actor.user_id), attempt)
        return self.get_payment(payment_id)

    def _book(self, team_id: UUID) -> PaymentBook:
        book_id = payment_book_id_for(team_id)
        if self.ledger.exists(book_id):
            book: PaymentBook = self.ledger.repository.get(book_id)
            return book
        return PaymentBook(team_id=team_id)

    # Reading -------------------------------------------------------------------------------

    def get_payment(self, payment_id: UUID) -> Payment:
        return self.settlement.get_payment(payment_id)

    def payments_of(self, team_id: UUID, limit: int = PAYMENTS_LISTED_MAX) -> list[Payment]:
        """The team's latest payments, newest first (at most `limit`)."""
        if not 1 <= limit <= PAYMENTS_LISTED_MAX:
            raise InvalidInputError(f"limit must be 1 to {PAYMENTS_LISTED_MAX}")
        book_id = payment_book_id_for(team_id)
        if not self.ledger.exists(book_id):
            return []
        book: PaymentBook = self.ledger.repository.get(book_id)
        return [self.get_payment(pid) for pid in reversed(book.payment_ids[-limit:])]

    def refresh_payment(self, payment_id: UUID) -> Payment:
        """Read the payment's PaymentIntent from Stripe and record what it says (the same path
        as a webhook): for a webhook that never came, or after Stripe was unreachable."""
        payment = self.get_payment(payment_id)
        if payment.stripe_object_id is not None:
            outcome = self.gateway.retrieve_payment_intent(payment.stripe_object_id)
            self.settlement.apply_intent(outcome, STRIPE_ACTOR)
        return self.get_payment(payment_id)

    def refresh_open_payments(self, team_id: UUID) -> int:
        """Refresh every payment of the team (among its latest `PAYMENTS_LISTED_MAX`) that is
        not final yet; returns how many were read. Heals webhooks that never came."""
        open_payments = [p for p in self.payments_of(team_id)
                         if not p.is_final and p.stripe_object_id is not None]
        for payment in open_payments:
            self.refresh_payment(payment.id)
        return len(open_payments)


def payment_metadata(payment: Payment) -> Mapping[str, str]:
    """What the PaymentIntent carries back to us in every webhook about it."""
    return {"ledger_team_id": str(payment.team_id), "ledger_payment_id": str(payment.id)}
