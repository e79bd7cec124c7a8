"""Who is acting. Every state change records the actor's id in its event.

Team members act under their team role (see `domain.roles`). Two principals stand outside teams:
operators (platform staff) manage the package catalogue, and system actors (the Stripe webhook,
for example) credit what an outside system already settled, for a fixed set of actions only.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.roles import Action

# What a system principal may do without a team role: money that Stripe already settled, and a
# charge an authorised member asked for in advance (auto-recharge's top-up, under the policy an
# owner or billing member set; TOP_UP). No token maps to a system principal: they are the
# ledger's own jobs (the Stripe webhook, auto-recharge, invoicing).
SYSTEM_ACTIONS = frozenset({Action.CREDIT_TOP_UP, Action.REFUND_TOP_UP, Action.MANAGE_INVOICES,
                            Action.LINK_STRIPE_CUSTOMER, Action.TOP_UP})


@dataclass(frozen=True)
class Actor:
    user_id: str
    is_operator: bool = False
    is_system: bool = False

    @classmethod
    def system(cls, name: str) -> Actor:
        return cls(user_id=f"system:{name}", is_system=True)

    @classmethod
    def operator(cls, user_id: str) -> Actor:
        return cls(user_id=user_id, is_operator=True)
