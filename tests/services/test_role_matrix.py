"""Every admin command, tried by every role: allowed exactly where the role matrix says."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

import pytest

from domain.errors import PermissionDeniedError
from domain.roles import ROLE_MATRIX, Action, Role
from services.actor import Actor
from services.ledger import Ledger
from tests.services.support import OWNER, team_with_accounts
from tests.stripe.stripe_http_double import StripeHttpDouble
from tests.stripe.test_checkout_top_ups import checkout_with

ACTOR = "actor-under-test"
FUTURE = datetime(2027, 1, 1, tzinfo=UTC)
TOP_UP_NANOS = 20_000_000_000
Command = Callable[[Ledger, UUID, UUID, Actor], object]


def _prepare_suspended_account(ledger: Ledger, account_id: UUID) -> None:
    ledger.suspend_account(account_id, "prepared", OWNER)


def _prepare_suspended_team(ledger: Ledger, team_id: UUID) -> None:
    ledger.suspend_team(team_id, "prepared", OWNER)


def _draft(ledger: Ledger, team_id: UUID) -> UUID:
    lines = [{"description": "usage", "amount_nanos": 10, "quantity": 1}]
    return ledger.draft_invoice(team_id, period_start="2026-10-01", period_end="2026-11-01",
                                lines=lines, actor=OWNER)


# action -> (what to set up as the owner first, the command the actor under test tries)
COMMANDS: dict[Action, tuple[Callable[[Ledger, UUID, UUID], object], Command]] = {
    Action.ADD_MEMBER: (lambda lg, t, a: None,
                        lambda lg, t, a, who: lg.add_member(t, "newcomer", "member", who)),
    Action.GRANT_OWNER: (lambda lg, t, a: None,
                         lambda lg, t, a, who: lg.add_member(t, "newowner", "owner", who)),
    Action.CHANGE_MEMBER_ROLE: (
        lambda lg, t, a: lg.add_member(t, "target", "member", OWNER),
        lambda lg, t, a, who: lg.change_member_role(t, "target", "auditor", who)),
    Action.REMOVE_MEMBER: (
        lambda lg, t, a: lg.add_member(t, "target", "member", OWNER),
        lambda lg, t, a, who: lg.remove_member(t, "target", who)),
    Action.OPEN_ACCOUNT: (lambda lg, t, a: None,
                          lambda lg, t, a, who: lg.open_account(t, account_key="new",
                                                                name="New", actor=who)),
    Action.ASSIGN_PACKAGE: (
        lambda lg, t, a: None,
        lambda lg, t, a, who: lg.assign_package(a, lg.get_account(a).assignments[0][
            "package_id"], who, effective_from=FUTURE)),
    Action.SUSPEND_ACCOUNT: (lambda lg, t, a: None,
                             lambda lg, t, a, who: lg.suspend_account(a, "why", who)),
    Action.REACTIVATE_ACCOUNT: (lambda lg, t, a: _prepare_suspended_account(lg, a),
                                lambda lg, t, a, who: lg.reactivate_account(a, who)),
    Action.CLOSE_ACCOUNT: (lambda lg, t, a: None,
                           lambda lg, t, a, who: lg.close_account(a, "why", who)),
    Action.SET_CREDIT_LIMIT: (lambda lg, t, a: None,
                              lambda lg, t, a, who: lg.set_credit_limit(t, 10, who)),
    Action.SET_LOW_BALANCE_THRESHOLD: (
        lambda lg, t, a: None,
        lambda lg, t, a, who: lg.set_low_balance_threshold(t, 10, who)),
    Action.CREDIT_TOP_UP: (lambda lg, t, a: None,
                           lambda lg, t, a, who: lg.credit_top_up(t, "pi_x", 100, "USD", who)),
    Action.REFUND_TOP_UP: (
        lambda lg, t, a: lg.credit_top_up(t, "pi_x", 100, "USD", OWNER),
        lambda lg, t, a, who: lg.refund_top_up(t, "pi_x", "re_x", 10, "USD", who)),
    Action.RECORD_ADJUSTMENT: (
        lambda lg, t, a: None,
        lambda lg, t, a, who: lg.record_adjustment(t, "adj", 5, "goodwill", who)),
    Action.SUSPEND_TEAM: (lambda lg, t, a: None,
                          lambda lg, t, a, who: lg.suspend_team(t, "why", who)),
    Action.REACTIVATE_TEAM: (lambda lg, t, a: _prepare_suspended_team(lg, t),
                             lambda lg, t, a, who: lg.reactivate_team(t, who)),
    Action.LINK_STRIPE_CUSTOMER: (
        lambda lg, t, a: None,
        lambda lg, t, a, who: lg.link_stripe_customer(t, "cus_1", who)),
    # Stripe's side is the SDK-level double: the role check runs before any request to it.
    Action.TOP_UP: (lambda lg, t, a: None,
                    lambda lg, t, a, who: checkout_with(lg, StripeHttpDouble()).top_ups
                    .start_top_up(t, TOP_UP_NANOS, "pm_card_visa", who, "role-matrix")),
    Action.OPEN_BILLING_PORTAL: (
        lambda lg, t, a: None,
        lambda lg, t, a, who: checkout_with(lg, StripeHttpDouble()).open_portal(t, who)),
    Action.MANAGE_INVOICES: (lambda lg, t, a: _draft(lg, t),
                             lambda lg, t, a, who: lg.finalize_invoice(
                                 lg.get_invoice(_invoice_id(t)).id, who)),
}

# Read-only actions are checked by the read side (projections, HTTP), not by commands.
READ_ACTIONS = {Action.VIEW_BILLING, Action.VIEW_AUDIT}


def _invoice_id(team_id: UUID) -> UUID:
    from domain.invoice import Invoice

    return Invoice.create_id(team_id, "2026-10-01", "2026-11-01")


def test_every_admin_action_has_a_command_in_this_test() -> None:
    assert set(COMMANDS) | READ_ACTIONS == set(Action)


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("action", list(COMMANDS))
def test_role_may_run_the_command_exactly_when_the_matrix_allows(action: Action,
                                                                 role: Role) -> None:
    ledger = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    setup = team_with_accounts(ledger, accounts=1)
    team_id, account_id = setup.team_id, setup.account_ids[0]
    if role == Role.OWNER:
        ledger.add_member(team_id, ACTOR, "owner", OWNER)
    else:
        ledger.add_member(team_id, ACTOR, role.value, OWNER)
    prepare, command = COMMANDS[action]
    prepare(ledger, team_id, account_id)
    if role in ROLE_MATRIX[action]:
        command(ledger, team_id, account_id, Actor(ACTOR))
    else:
        with pytest.raises(PermissionDeniedError, match=f"role '{role.value}'.*may not"):
            command(ledger, team_id, account_id, Actor(ACTOR))


def test_a_non_member_may_not_act_on_a_team() -> None:
    ledger = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    setup = team_with_accounts(ledger, accounts=0)
    with pytest.raises(PermissionDeniedError, match="is not a member"):
        ledger.set_credit_limit(setup.team_id, 1, Actor("stranger"))


def test_a_system_actor_may_only_settle_stripe_money() -> None:
    ledger = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    setup = team_with_accounts(ledger, accounts=0)
    stripe = Actor.system("stripe-webhook")
    assert ledger.credit_top_up(setup.team_id, "pi_1", 100, "USD", stripe)
    with pytest.raises(PermissionDeniedError):
        ledger.set_credit_limit(setup.team_id, 1, stripe)
