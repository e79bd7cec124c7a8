"""Team roles and the role matrix: which role may take which admin action.

The matrix is data, so the README table, the service check and the role-matrix test all read the
same thing. An owner may do everything; an admin runs the team but cannot touch owners or money
that leaves through Stripe refunds; billing runs money and invoices; members and auditors read.
"""

from __future__ import annotations

from enum import StrEnum

from domain.errors import InvalidInputError


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    BILLING = "billing"
    MEMBER = "member"
    AUDITOR = "auditor"


class Action(StrEnum):
    ADD_MEMBER = "add_member"
    CHANGE_MEMBER_ROLE = "change_member_role"
    REMOVE_MEMBER = "remove_member"
    GRANT_OWNER = "grant_owner"
    OPEN_ACCOUNT = "open_account"
    ASSIGN_PACKAGE = "assign_package"
    SUSPEND_ACCOUNT = "suspend_account"
    REACTIVATE_ACCOUNT = "reactivate_account"
    CLOSE_ACCOUNT = "close_account"
    SET_CREDIT_LIMIT = "set_credit_limit"
    SET_LOW_BALANCE_THRESHOLD = "set_low_balance_threshold"
    CREDIT_TOP_UP = "credit_top_up"
    REFUND_TOP_UP = "refund_top_up"
    RECORD_ADJUSTMENT = "record_adjustment"
    SUSPEND_TEAM = "suspend_team"
    REACTIVATE_TEAM = "reactivate_team"
    LINK_STRIPE_CUSTOMER = "link_stripe_customer"
    TOP_UP = "top_up"
    OPEN_BILLING_PORTAL = "open_billing_portal"
    MANAGE_INVOICES = "manage_invoices"
    VIEW_BILLING = "view_billing"
    VIEW_AUDIT = "view_audit"


_EVERYONE = frozenset(Role)
_OWNER = frozenset({Role.OWNER})
_OWNER_ADMIN = frozenset({Role.OWNER, Role.ADMIN})
_OWNER_BILLING = frozenset({Role.OWNER, Role.BILLING})
_OWNER_ADMIN_BILLING = frozenset({Role.OWNER, Role.ADMIN, Role.BILLING})

ROLE_MATRIX: dict[Action, frozenset[Role]] = {
    Action.ADD_MEMBER: _OWNER_ADMIN,
    Action.CHANGE_MEMBER_ROLE: _OWNER_ADMIN,
    Action.REMOVE_MEMBER: _OWNER_ADMIN,
    # Making someone an owner, or changing or removing an owner, is for owners alone.
    Action.GRANT_OWNER: _OWNER,
    Action.OPEN_ACCOUNT: _OWNER_ADMIN,
    Action.ASSIGN_PACKAGE: _OWNER_ADMIN,
    Action.SUSPEND_ACCOUNT: _OWNER_ADMIN,
    Action.REACTIVATE_ACCOUNT: _OWNER_ADMIN,
    Action.CLOSE_ACCOUNT: _OWNER_ADMIN,
    Action.SET_CREDIT_LIMIT: _OWNER_BILLING,
    Action.SET_LOW_BALANCE_THRESHOLD: _OWNER_ADMIN_BILLING,
    Action.CREDIT_TOP_UP: _OWNER_ADMIN_BILLING,
    Action.REFUND_TOP_UP: _OWNER_BILLING,
    Action.RECORD_ADJUSTMENT: _OWNER_BILLING,
    Action.SUSPEND_TEAM: _OWNER,
    Action.REACTIVATE_TEAM: _OWNER,
    Action.LINK_STRIPE_CUSTOMER: _OWNER_BILLING,
    # Money in through Stripe (a saved card or Checkout) and the Stripe customer portal, where
    # cards are saved and removed: the same people who run the team's money.
    Action.TOP_UP: _OWNER_BILLING,
    Action.OPEN_BILLING_PORTAL: _OWNER_BILLING,
    Action.MANAGE_INVOICES: _OWNER_BILLING,
    Action.VIEW_BILLING: frozenset({Role.OWNER, Role.ADMIN, Role.BILLING, Role.AUDITOR}),
    Action.VIEW_AUDIT: frozenset({Role.OWNER, Role.ADMIN, Role.AUDITOR}),
}

assert set(ROLE_MATRIX) == set(Action), "every action needs a row in the role matrix"
assert all(Role.OWNER in roles for roles in ROLE_MATRIX.values()), "owners may do everything"
assert frozenset().union(*ROLE_MATRIX.values()) <= _EVERYONE


def may(role: Role, action: Action) -> bool:
    return role in ROLE_MATRIX[action]


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise InvalidInputError(f"role {value!r} is not a role; use one of: {allowed}") from None
