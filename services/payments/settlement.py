"""Recording what Stripe reports about a payment: received, declined, cancelled, refunded.

Each report is one command that saves the team and the payment together, so the balance and the
payment's history cannot disagree: a success credits the team (`Team.credit_top_up`, keyed by the
PaymentIntent id, so it is credited once however many reports arrive) and marks the payment
succeeded; a refund, or a lost dispute, reverses exactly its amount (`Team.refund_top_up`, keyed
by the refund or dispute id); a failure or cancellation is recorded on the payment and moves no
money.

A report may carry an idempotency key (the Stripe event id, in scope `stripe_event`): a
delivery of the same event again, today or days later, in any process, replays the first
result and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate

from domain.errors import InvalidInputError, NotFoundError
from domain.money import minor_units_to_nanos
from domain.payment import Payment
from domain.roles import Action
from domain.team import Team
from services.actor import Actor
from services.command_runs import Attempt, Command, team_scope
from services.ledger import Ledger
from services.payments.port import DisputeInfo, IntentOutcome, RefundInfo

STRIPE_EVENT_SCOPE = "stripe_event"
# Stripe's PaymentIntent statuses that mean "not settled yet, not failed either".
PENDING_STATUSES = frozenset({"processing", "requires_action", "requires_confirmation",
                              "requires_capture"})


class PaymentNotFoundError(NotFoundError):
    code = "unknown_payment"


class Settlement:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def get_payment(self, payment_id: UUID) -> Payment:
        try:
            aggregate: object = self.ledger.repository.get(payment_id)
        except AggregateNotFoundError:
            raise PaymentNotFoundError(f"payment {payment_id} does not exist") from None
        if not isinstance(aggregate, Payment):
            raise PaymentNotFoundError(f"{payment_id} is not a payment")
        return aggregate

    def payment_of(self, metadata: object) -> Payment | None:
        """The payment a Stripe object's metadata names, or None if it is not one of ours."""
        if not isinstance(metadata, dict):
            return None
        try:
            payment_id = UUID(str(metadata.get("ledger_payment_id")))
        except ValueError:
            return None
        try:
            payment = self.get_payment(payment_id)
        except PaymentNotFoundError:
            return None
        return payment if str(payment.team_id) == metadata.get("ledger_team_id") else None

    def _run(self, name: str, payment_id: UUID, actor: Actor, arguments: dict[str, object],
             apply: Callable[[Team, Payment], str], event_id: str | None) -> str:
        """Apply one report to freshly loaded team and payment; save both, with the event id."""
        def attempt() -> Attempt:
            payment = self.get_payment(payment_id)
            team = self.ledger.get_team(payment.team_id)
            result = apply(team, payment)
            changed: Sequence[Aggregate] = [a for a in (team, payment) if a.pending_events]
            return Attempt(changed, result)

        scope = STRIPE_EVENT_SCOPE if event_id is not None else \
            team_scope(self.get_payment(payment_id).team_id)
        return self.ledger.commands.run(
            Command(name, scope, {"payment_id": str(payment_id), **arguments}, actor.user_id,
                    event_id), attempt)

    def record_answer(self, payment_id: UUID, outcome: IntentOutcome, actor: Actor) -> str:
        """Record Stripe's direct answer to creating the PaymentIntent: the PaymentIntent is
        attached, or the payment failed. A success is not credited here: the money is credited
        on one path only, when Stripe reports it (its webhook, or a read by `refresh_payment`),
        through `apply_intent`."""
        if outcome.intent_id is not None and outcome.status == "succeeded":
            outcome = replace(outcome, status="processing")
        if outcome.intent_id is None:
            def failed(_team: Team, payment: Payment) -> str:
                changed = payment.fail(None, outcome.failure_code, outcome.failure_message,
                                       actor.user_id)
                return "failed" if changed else "unchanged"
            return self._run("record_stripe_answer", payment_id, actor,
                             {"status": outcome.status}, failed, None)
        return self.apply_intent(outcome, actor, payment_id=payment_id)

    def apply_intent(self, outcome: IntentOutcome, actor: Actor, event_id: str | None = None,
                     payment_id: UUID | None = None) -> str:
        """Record a PaymentIntent's state as Stripe reports it; returns what changed."""
        intent_id = outcome.intent_id
        if intent_id is None:
            return "ignored: a PaymentIntent without an id"
        if payment_id is None:
            payment = self.payment_of(dict(outcome.metadata))
            if payment is None:
                return "ignored: not a ledger payment"
            payment_id = payment.id

        def apply(team: Team, payment: Payment) -> str:
            if outcome.status == "succeeded":
                return self._credit(team, payment, outcome, intent_id, actor)
            if outcome.status == "canceled":
                return "canceled" if payment.cancel(intent_id, actor.user_id) else "unchanged"
            if outcome.status in PENDING_STATUSES:
                changed = payment.attach_stripe_object(intent_id, actor.user_id)
                return "attached" if changed else "unchanged"
            changed = payment.fail(intent_id, outcome.failure_code or outcome.status,
                                   outcome.failure_message, actor.user_id)
            return "failed" if changed else "unchanged"

        return self._run("apply_payment_intent", payment_id, actor,
                         {"intent_id": intent_id, "status": outcome.status}, apply, event_id)

    def _credit(self, team: Team, payment: Payment, outcome: IntentOutcome, intent_id: str,
                actor: Actor) -> str:
        self.ledger.authorize(team, actor, Action.CREDIT_TOP_UP)
        currency = outcome.currency.upper()
        if currency != payment.currency:
            raise InvalidInputError(
                f"PaymentIntent {intent_id} is in {currency}, payment {payment.id} in "
                f"{payment.currency}")
        received_minor = outcome.amount_received_minor or outcome.amount_minor
        received_nanos = minor_units_to_nanos(received_minor, currency)
        credited = False
        if not team.has_top_up(intent_id):
            team.credit_top_up(intent_id, received_nanos, received_minor, currency,
                               actor.user_id)
            credited = True
        payment.succeed(intent_id, received_nanos, actor.user_id)
        return "credited" if credited else "unchanged"

    def apply_refunds(self, intent: IntentOutcome, refunds: Sequence[RefundInfo], actor: Actor,
                      event_id: str | None = None) -> str:
        """Record every succeeded refund of a PaymentIntent not recorded yet."""
        payment = self.payment_of(dict(intent.metadata))
        if payment is None:
            return "ignored: not a ledger payment"
        settled = sorted((r for r in refunds if r.status == "succeeded"),
                         key=lambda r: r.refund_id)

        def apply(team: Team, payment: Payment) -> str:
            self.ledger.authorize(team, actor, Action.REFUND_TOP_UP)
            recorded = 0
            for refund in settled:
                currency = refund.currency.upper()
                if currency != payment.currency:
                    raise InvalidInputError(
                        f"refund {refund.refund_id} is in {currency}, payment {payment.id} in "
                        f"{payment.currency}")
                nanos = minor_units_to_nanos(refund.amount_minor, currency)
                if not team.has_refund(refund.refund_id):
                    team.refund_top_up(refund.intent_id, refund.refund_id, nanos, actor.user_id)
                    recorded += 1
                payment.record_refund(refund.refund_id, nanos, actor.user_id)
            return f"refunds recorded: {recorded}"

        # The refunds read from Stripe are not part of the command's identity: a later delivery
        # of the same event may see more of them, and must replay, not conflict.
        return self._run("apply_refunds", payment.id, actor, {"intent_id": intent.intent_id},
                         apply, event_id)

    def apply_dispute_lost(self, intent: IntentOutcome, dispute: DisputeInfo, actor: Actor,
                           event_id: str | None = None) -> str:
        """Reverse exactly the amount of a lost dispute (keyed by the dispute id, recorded on
        the team as a reversal of the top-up and on the payment as `DisputeLost`)."""
        payment = self.payment_of(dict(intent.metadata))
        if payment is None:
            return "ignored: not a ledger payment"
        if dispute.status != "lost":
            return f"ignored: dispute {dispute.status}"

        def apply(team: Team, payment: Payment) -> str:
            self.ledger.authorize(team, actor, Action.REFUND_TOP_UP)
            currency = dispute.currency.upper()
            if currency != payment.currency:
                raise InvalidInputError(
                    f"dispute {dispute.dispute_id} is in {currency}, payment {payment.id} in "
                    f"{payment.currency}")
            nanos = minor_units_to_nanos(dispute.amount_minor, currency)
            reversed_now = not team.has_refund(dispute.dispute_id)
            if reversed_now:
                team.refund_top_up(dispute.intent_id, dispute.dispute_id, nanos, actor.user_id)
            payment.record_dispute_lost(dispute.dispute_id, nanos, actor.user_id)
            return "dispute reversed" if reversed_now else "unchanged"

        return self._run("apply_dispute_lost", payment.id, actor,
                         {"intent_id": intent.intent_id, "dispute_id": dispute.dispute_id},
                         apply, event_id)
