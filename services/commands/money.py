"""Money commands: top-ups and refunds, manual adjustments, credit limit, low-balance threshold,
and the link to the team's Stripe customer.

Top-ups, refunds and adjustments carry a natural key (the Stripe PaymentIntent, Checkout Session
or refund id; the adjustment id): doing one again returns False and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from domain.errors import InvalidInputError
from domain.money import minor_units_to_nanos
from domain.roles import Action
from domain.team import Team
from services.actor import Actor
from services.commands.ledger_core import LedgerCore


def _once(ledger: LedgerCore, team_id: UUID, actor: Actor, action: Action,
          idempotency_key: str | None, name: str, arguments: dict[str, Any],
          already: Callable[[Team], bool], move: Callable[[Team], None]) -> bool:
    """Move money once per natural key: False, and nothing changed, if `already` says it was
    moved before; else `move` it and return True (kept as text with an idempotency key)."""
    def apply(team: Team) -> bool:
        if already(team):
            return False
        move(team)
        return True

    return ledger._team_command(team_id, actor, action, idempotency_key, name, arguments,
                                apply) == str(True)


class MoneyCommands:
    def credit_top_up(self: LedgerCore, team_id: UUID, top_up_id: str, amount_minor: int,
                      currency: str, actor: Actor, idempotency_key: str | None = None) -> bool:
        """Credit a settled top-up (a Stripe PaymentIntent or Checkout Session id).

        The Stripe object id is the natural key: crediting it again returns False and changes
        nothing. Amounts arrive in minor units, as Stripe sends them, and convert exactly.
        """
        def move(team: Team) -> None:
            amount_nanos = minor_units_to_nanos(amount_minor, currency)
            team.credit_top_up(top_up_id, amount_nanos, amount_minor, currency, actor.user_id)

        return _once(self, team_id, actor, Action.CREDIT_TOP_UP, idempotency_key,
                     "credit_top_up", {"top_up_id": top_up_id, "amount_minor": amount_minor,
                                       "currency": currency},
                     lambda team: team.has_top_up(top_up_id), move)

    def refund_top_up(self: LedgerCore, team_id: UUID, top_up_id: str, refund_id: str,
                      amount_minor: int, currency: str, actor: Actor,
                      idempotency_key: str | None = None) -> bool:
        """Record a refund of a credited top-up; the Stripe refund id is the natural key."""
        def move(team: Team) -> None:
            if currency != team.currency:
                raise InvalidInputError(
                    f"refund is in {currency}, team is billed in {team.currency}")
            amount_nanos = minor_units_to_nanos(amount_minor, currency)
            team.refund_top_up(top_up_id, refund_id, amount_nanos, actor.user_id)

        return _once(self, team_id, actor, Action.REFUND_TOP_UP, idempotency_key,
                     "refund_top_up", {"top_up_id": top_up_id, "refund_id": refund_id,
                                       "amount_minor": amount_minor, "currency": currency},
                     lambda team: team.has_refund(refund_id), move)

    def record_adjustment(self: LedgerCore, team_id: UUID, adjustment_id: str,
                          amount_nanos: int, reason: str, actor: Actor,
                          idempotency_key: str | None = None) -> bool:
        """A signed manual adjustment; `adjustment_id` is its natural key."""
        return _once(self, team_id, actor, Action.RECORD_ADJUSTMENT, idempotency_key,
                     "record_adjustment", {"adjustment_id": adjustment_id,
                                           "amount_nanos": amount_nanos, "reason": reason},
                     lambda team: team.has_adjustment(adjustment_id),
                     lambda team: team.record_adjustment(adjustment_id, amount_nanos, reason,
                                                         actor.user_id))

    def set_credit_limit(self: LedgerCore, team_id: UUID, credit_limit_nanos: int,
                         actor: Actor, idempotency_key: str | None = None) -> None:
        self._team_command(team_id, actor, Action.SET_CREDIT_LIMIT, idempotency_key,
                           "set_credit_limit", {"credit_limit_nanos": credit_limit_nanos},
                           lambda t: t.set_credit_limit(credit_limit_nanos, actor.user_id))

    def set_low_balance_threshold(self: LedgerCore, team_id: UUID, threshold_nanos: int,
                                  actor: Actor, idempotency_key: str | None = None) -> None:
        self._team_command(team_id, actor, Action.SET_LOW_BALANCE_THRESHOLD, idempotency_key,
                           "set_low_balance_threshold", {"threshold_nanos": threshold_nanos},
                           lambda t: t.set_low_balance_threshold(threshold_nanos, actor.user_id))

    def link_stripe_customer(self: LedgerCore, team_id: UUID, customer_id: str, actor: Actor,
                             idempotency_key: str | None = None) -> None:
        self._team_command(team_id, actor, Action.LINK_STRIPE_CUSTOMER, idempotency_key,
                           "link_stripe_customer", {"customer_id": customer_id},
                           lambda t: t.link_stripe_customer(customer_id, actor.user_id))
