"""The Team aggregate: the billing customer.

A team has members with roles, an account pool, money settings (credit limit, low-balance
threshold), top-ups credited and refunded through Stripe, signed manual adjustments, and can be
suspended. Spending is recorded on the accounts (see `domain.account`); the balance is
credited - refunded + adjusted - spent, which the balance projection computes from both.

Commands validate and compute first; the `@event` methods only assign state, because they run
again on every replay.
"""

from __future__ import annotations

from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from eventsourcing.domain import Aggregate, event

from domain.errors import (
    InvalidInputError,
    InvalidStateError,
    LastOwnerError,
    PermissionDeniedError,
)
from domain.ids import team_id_for
from domain.money import check_amount_nanos, check_currency
from domain.roles import Action, Role, may

TEAM_NAME_LENGTH_MAX = 200
USER_ID_LENGTH_MAX = 200
REASON_LENGTH_MAX = 1000


def check_text(name: str, value: object, length_max: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{name} must be a non-empty string")
    if len(value) > length_max:
        raise InvalidInputError(f"{name} must be at most {length_max} characters")
    return value


def check_timezone(timezone: str) -> str:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidInputError(
            f"timezone {timezone!r} is not an IANA time zone (e.g. 'Europe/Berlin', 'UTC')"
        ) from None
    return timezone


class Team(Aggregate):
    @staticmethod
    def create_id(team_key: str) -> UUID:
        return team_id_for(team_key)

    @event("Registered")
    def __init__(self, team_key: str, name: str, currency: str, timezone: str,
                 owner_user_id: str, actor: str) -> None:
        self.team_key = team_key
        self.name = name
        self.currency = currency
        self.timezone = timezone
        self.members: dict[str, Role] = {owner_user_id: Role.OWNER}
        self.account_ids: list[UUID] = []
        self.credit_limit_nanos = 0
        self.low_balance_threshold_nanos = 0
        self.stripe_customer_id: str | None = None
        self.top_ups: dict[str, int] = {}  # Stripe object id -> credited nanos
        self.refunds: dict[str, int] = {}  # Stripe refund id -> refunded nanos
        self.refunded_by_top_up: dict[str, int] = {}
        self.adjustments: dict[str, int] = {}  # adjustment id -> signed nanos
        self.suspended = False
        self.invoices_finalized = 0

    @classmethod
    def register(cls, *, team_key: str, name: str, currency: str, timezone: str,
                 owner_user_id: str, actor: str) -> Team:
        check_text("team_key", team_key, TEAM_NAME_LENGTH_MAX)
        check_text("name", name, TEAM_NAME_LENGTH_MAX)
        check_currency(currency)
        check_timezone(timezone)
        check_text("owner_user_id", owner_user_id, USER_ID_LENGTH_MAX)
        check_text("actor", actor, USER_ID_LENGTH_MAX)
        return cls(team_key=team_key, name=name, currency=currency, timezone=timezone,
                   owner_user_id=owner_user_id, actor=actor)

    # Authorization -------------------------------------------------------------------------

    def role_of(self, user_id: str) -> Role | None:
        return self.members.get(user_id)

    def check_may(self, actor: str, action: Action) -> None:
        role = self.members.get(actor)
        if role is None:
            raise PermissionDeniedError(
                f"user {actor!r} is not a member of team {self.name!r} and may not {action.value}"
            )
        if not may(role, action):
            raise PermissionDeniedError(
                f"user {actor!r} has role {Role(role).value!r} in team {self.name!r}, "
                f"which may not {action.value}"
            )

    def check_active(self) -> None:
        if self.suspended:
            raise InvalidStateError(f"team {self.name!r} is suspended; reactivate it first")

    # Members -------------------------------------------------------------------------------

    def add_member(self, user_id: str, role: Role, actor: str) -> None:
        check_text("user_id", user_id, USER_ID_LENGTH_MAX)
        if user_id in self.members:
            raise InvalidStateError(
                f"user {user_id!r} is already a member (role {Role(self.members[user_id]).value}); "
                "change their role instead"
            )
        self._member_added(user_id=user_id, role=role, actor=actor)

    @event("MemberAdded")
    def _member_added(self, user_id: str, role: Role, actor: str) -> None:
        self.members[user_id] = Role(role)

    def change_member_role(self, user_id: str, role: Role, actor: str) -> None:
        old_role = self._check_member(user_id)
        if old_role == role:
            raise InvalidStateError(f"user {user_id!r} already has role {role.value!r}")
        if old_role == Role.OWNER:
            self._check_not_last_owner(user_id)
        self._member_role_changed(user_id=user_id, old_role=old_role, role=role, actor=actor)

    @event("MemberRoleChanged")
    def _member_role_changed(self, user_id: str, old_role: Role, role: Role, actor: str) -> None:
        self.members[user_id] = Role(role)

    def remove_member(self, user_id: str, actor: str) -> None:
        old_role = self._check_member(user_id)
        if old_role == Role.OWNER:
            self._check_not_last_owner(user_id)
        self._member_removed(user_id=user_id, role=old_role, actor=actor)

    @event("MemberRemoved")
    def _member_removed(self, user_id: str, role: Role, actor: str) -> None:
        del self.members[user_id]

    def _check_member(self, user_id: str) -> Role:
        try:
            return self.members[user_id]
        except KeyError:
            raise InvalidStateError(
                f"user {user_id!r} is not a member of team {self.name!r}"
            ) from None

    def _check_not_last_owner(self, user_id: str) -> None:
        owners = [u for u, r in self.members.items() if r == Role.OWNER]
        if owners == [user_id]:
            raise LastOwnerError(
                f"user {user_id!r} is the last owner of team {self.name!r}; "
                "make another member an owner first"
            )

    # Account pool --------------------------------------------------------------------------

    def add_account_to_pool(self, account_id: UUID, actor: str) -> None:
        if account_id in self.account_ids:
            raise InvalidStateError(f"account {account_id} is already in the pool")
        self._account_pooled(account_id=account_id, actor=actor)

    @event("AccountPooled")
    def _account_pooled(self, account_id: UUID, actor: str) -> None:
        self.account_ids.append(account_id)

    # Money settings ------------------------------------------------------------------------

    def set_credit_limit(self, credit_limit_nanos: int, actor: str) -> None:
        check_amount_nanos("credit_limit_nanos", credit_limit_nanos, allow_zero=True)
        self._credit_limit_set(credit_limit_nanos=credit_limit_nanos,
                               previous_nanos=self.credit_limit_nanos, actor=actor)

    @event("CreditLimitSet")
    def _credit_limit_set(self, credit_limit_nanos: int, previous_nanos: int, actor: str) -> None:
        self.credit_limit_nanos = credit_limit_nanos

    def set_low_balance_threshold(self, threshold_nanos: int, actor: str) -> None:
        check_amount_nanos("threshold_nanos", threshold_nanos, allow_zero=True)
        self._low_balance_threshold_set(threshold_nanos=threshold_nanos,
                                        previous_nanos=self.low_balance_threshold_nanos,
                                        actor=actor)

    @event("LowBalanceThresholdSet")
    def _low_balance_threshold_set(self, threshold_nanos: int, previous_nanos: int,
                                   actor: str) -> None:
        self.low_balance_threshold_nanos = threshold_nanos

    def link_stripe_customer(self, customer_id: str, actor: str) -> None:
        check_text("customer_id", customer_id, USER_ID_LENGTH_MAX)
        if self.stripe_customer_id == customer_id:
            raise InvalidStateError(f"team is already linked to Stripe customer {customer_id}")
        self._stripe_customer_linked(customer_id=customer_id, actor=actor)

    @event("StripeCustomerLinked")
    def _stripe_customer_linked(self, customer_id: str, actor: str) -> None:
        self.stripe_customer_id = customer_id

    # Top-ups, refunds, adjustments ---------------------------------------------------------

    def has_top_up(self, top_up_id: str) -> bool:
        return top_up_id in self.top_ups

    def credit_top_up(self, top_up_id: str, amount_nanos: int, amount_minor: int,
                      currency: str, actor: str) -> None:
        """Credit a paid Stripe top-up. The Stripe object id is the idempotency key."""
        check_text("top_up_id", top_up_id, USER_ID_LENGTH_MAX)
        check_amount_nanos("amount_nanos", amount_nanos)
        self._check_currency(currency)
        if top_up_id in self.top_ups:
            raise InvalidStateError(f"top-up {top_up_id} is already credited")
        self._top_up_credited(top_up_id=top_up_id, amount_nanos=amount_nanos,
                              amount_minor=amount_minor, currency=currency, actor=actor)

    @event("TopUpCredited")
    def _top_up_credited(self, top_up_id: str, amount_nanos: int, amount_minor: int,
                         currency: str, actor: str) -> None:
        self.top_ups[top_up_id] = amount_nanos

    def has_refund(self, refund_id: str) -> bool:
        return refund_id in self.refunds

    def refund_top_up(self, top_up_id: str, refund_id: str, amount_nanos: int,
                      actor: str) -> None:
        check_text("refund_id", refund_id, USER_ID_LENGTH_MAX)
        check_amount_nanos("amount_nanos", amount_nanos)
        if top_up_id not in self.top_ups:
            raise InvalidStateError(f"top-up {top_up_id} was never credited to this team")
        if refund_id in self.refunds:
            raise InvalidStateError(f"refund {refund_id} is already recorded")
        refundable = self.top_ups[top_up_id] - self.refunded_by_top_up.get(top_up_id, 0)
        if amount_nanos > refundable:
            raise InvalidStateError(
                f"refund of {amount_nanos} nanos exceeds the {refundable} nanos still "
                f"refundable on top-up {top_up_id}"
            )
        self._top_up_refunded(top_up_id=top_up_id, refund_id=refund_id,
                              amount_nanos=amount_nanos, actor=actor)

    @event("TopUpRefunded")
    def _top_up_refunded(self, top_up_id: str, refund_id: str, amount_nanos: int,
                         actor: str) -> None:
        self.refunds[refund_id] = amount_nanos
        self.refunded_by_top_up[top_up_id] = (
            self.refunded_by_top_up.get(top_up_id, 0) + amount_nanos
        )

    def has_adjustment(self, adjustment_id: str) -> bool:
        return adjustment_id in self.adjustments

    def record_adjustment(self, adjustment_id: str, amount_nanos: int, reason: str,
                          actor: str) -> None:
        """A signed manual correction: positive credits the team, negative debits it."""
        check_text("adjustment_id", adjustment_id, USER_ID_LENGTH_MAX)
        check_amount_nanos("amount_nanos", amount_nanos, allow_negative=True)
        check_text("reason", reason, REASON_LENGTH_MAX)
        if adjustment_id in self.adjustments:
            raise InvalidStateError(f"adjustment {adjustment_id} is already recorded")
        self._adjustment_recorded(adjustment_id=adjustment_id, amount_nanos=amount_nanos,
                                  reason=reason, actor=actor)

    @event("AdjustmentRecorded")
    def _adjustment_recorded(self, adjustment_id: str, amount_nanos: int, reason: str,
                             actor: str) -> None:
        self.adjustments[adjustment_id] = amount_nanos

    def _check_currency(self, currency: str) -> None:
        if currency != self.currency:
            raise InvalidInputError(
                f"amount is in {currency} but team {self.name!r} is billed in {self.currency}"
            )

    # Suspension ----------------------------------------------------------------------------

    def suspend(self, reason: str, actor: str) -> None:
        check_text("reason", reason, REASON_LENGTH_MAX)
        if self.suspended:
            raise InvalidStateError(f"team {self.name!r} is already suspended")
        self._suspended(reason=reason, actor=actor)

    @event("Suspended")
    def _suspended(self, reason: str, actor: str) -> None:
        self.suspended = True

    def reactivate(self, actor: str) -> None:
        if not self.suspended:
            raise InvalidStateError(f"team {self.name!r} is not suspended")
        self._reactivated(actor=actor)

    @event("Reactivated")
    def _reactivated(self, actor: str) -> None:
        self.suspended = False

    # Invoices ------------------------------------------------------------------------------

    def issue_invoice_number(self, invoice_id: UUID, actor: str) -> str:
        sequence = self.invoices_finalized + 1
        number = f"{self.team_key.upper()[:12]}-{sequence:06d}"
        self._invoice_number_issued(invoice_id=invoice_id, sequence=sequence, number=number,
                                    actor=actor)
        return number

    @event("InvoiceNumberIssued")
    def _invoice_number_issued(self, invoice_id: UUID, sequence: int, number: str,
                               actor: str) -> None:
        self.invoices_finalized = sequence
