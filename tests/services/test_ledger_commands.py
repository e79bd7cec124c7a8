"""Ledger commands through the service layer, on the in-memory store and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from domain.errors import (
    AccountNotFoundError,
    IdempotencyConflictError,
    InvalidInputError,
    InvalidStateError,
    PermissionDeniedError,
    TeamNotFoundError,
)
from domain.money import NANOS_PER_UNIT
from services.actor import Actor
from services.ledger import ACCOUNT_SNAPSHOT_INTERVAL_EVENTS, Ledger
from tests.services.support import (
    OPERATOR,
    OWNER,
    expected_cost,
    team_balance_nanos,
    team_with_accounts,
    usage,
)

STRIPE = Actor.system("stripe-webhook")


def test_a_team_tops_up_spends_and_is_refunded(ledger: Ledger) -> None:
    setup = team_with_accounts(ledger, accounts=2)
    assert ledger.credit_top_up(setup.team_id, "pi_100", 10_000, "USD", STRIPE)
    records = [usage(setup.account_ids[n % 2], f"req-{n}", minutes=n) for n in range(10)]
    outcome = ledger.record_usage_batch(records)
    assert len(outcome.recorded) == 10
    assert ledger.refund_top_up(setup.team_id, "pi_100", "re_1", 2_500, "USD", STRIPE)
    assert ledger.record_adjustment(setup.team_id, "adj-1", -NANOS_PER_UNIT, "manual fix", OWNER)

    spent = sum(expected_cost(r) for r in records)
    assert outcome.cost_nanos == spent
    # The accounting identity: balance = credits - debits.
    expected_balance = 100 * NANOS_PER_UNIT - 25 * NANOS_PER_UNIT - NANOS_PER_UNIT - spent
    assert team_balance_nanos(ledger, setup.team_id) == expected_balance


def test_unknown_team_and_account_are_named_in_the_error(ledger: Ledger) -> None:
    missing = uuid4()
    with pytest.raises(TeamNotFoundError, match=str(missing)):
        ledger.set_credit_limit(missing, 1, OWNER)
    with pytest.raises(AccountNotFoundError, match=str(missing)):
        ledger.suspend_account(missing, "why", OWNER)


def test_an_admin_command_with_an_idempotency_key_runs_once(ledger: Ledger) -> None:
    setup = team_with_accounts(ledger, accounts=0)
    first = ledger.open_account(setup.team_id, account_key="bot", name="Bot", actor=OWNER,
                                idempotency_key="open-bot-1")
    again = ledger.open_account(setup.team_id, account_key="bot", name="Bot", actor=OWNER,
                                idempotency_key="open-bot-1")
    assert first == again
    assert ledger.get_team(setup.team_id).account_ids == [first]
    with pytest.raises(IdempotencyConflictError, match="open-bot-1"):
        ledger.open_account(setup.team_id, account_key="bot2", name="Bot", actor=OWNER,
                            idempotency_key="open-bot-1")


def test_reusing_an_account_key_without_idempotency_key_is_refused(ledger: Ledger) -> None:
    setup = team_with_accounts(ledger, accounts=1)
    with pytest.raises(InvalidInputError, match="already in use"):
        ledger.open_account(setup.team_id, account_key="seat-0", name="Again", actor=OWNER)


def test_top_ups_are_credited_once_per_stripe_object(ledger: Ledger) -> None:
    setup = team_with_accounts(ledger, accounts=0)
    assert ledger.credit_top_up(setup.team_id, "pi_1", 500, "USD", STRIPE) is True
    assert ledger.credit_top_up(setup.team_id, "pi_1", 500, "USD", STRIPE) is False
    assert ledger.get_team(setup.team_id).top_ups == {"pi_1": 5 * NANOS_PER_UNIT}


def test_only_operators_manage_packages(ledger: Ledger) -> None:
    setup = team_with_accounts(ledger, accounts=0)
    from tests.services.support import STANDARD

    with pytest.raises(PermissionDeniedError, match="only operators"):
        ledger.create_package(package_key="x", name="X", currency="USD", terms=STANDARD,
                              actor=OWNER)
    assert ledger.publish_package_version(setup.package_id, STANDARD, OPERATOR) == 2


def test_a_package_in_another_currency_cannot_be_assigned(ledger: Ledger) -> None:
    setup = team_with_accounts(ledger, accounts=1)
    from tests.services.support import STANDARD

    euro = ledger.create_package(package_key="eur", name="Euro", currency="EUR",
                                 terms=STANDARD, actor=OPERATOR)
    with pytest.raises(InvalidInputError, match="priced in EUR"):
        ledger.assign_package(setup.account_ids[0], euro, OWNER,
                              effective_from=datetime(2027, 1, 1, tzinfo=UTC))


def test_invoice_numbers_follow_the_team_sequence(ledger: Ledger) -> None:
    setup = team_with_accounts(ledger, accounts=0)
    lines = [{"description": "usage", "amount_nanos": 1_005_000_000, "quantity": 1}]
    october = ledger.draft_invoice(setup.team_id, period_start="2026-10-01",
                                   period_end="2026-11-01", lines=lines, actor=OWNER)
    november = ledger.draft_invoice(setup.team_id, period_start="2026-11-01",
                                    period_end="2026-12-01", lines=lines, actor=OWNER)
    ledger.finalize_invoice(november, OWNER)
    ledger.finalize_invoice(october, OWNER)
    assert ledger.get_invoice(november).number == "ACME-000001"
    assert ledger.get_invoice(october).number == "ACME-000002"
    assert ledger.get_invoice(october).total_minor == 100  # 1.005 USD rounds half-even to 1.00
    with pytest.raises(InvalidStateError, match="is finalized; this needs it draft"):
        ledger.finalize_invoice(october, OWNER)
    ledger.mark_invoice_paid(october, "in_123", STRIPE)
    ledger.void_invoice(november, "issued in error", OWNER)
    with pytest.raises(InvalidInputError, match="already exists"):
        ledger.draft_invoice(setup.team_id, period_start="2026-10-01",
                             period_end="2026-11-01", lines=lines, actor=OWNER)


def test_accounts_with_long_histories_reload_from_snapshots(ledger: Ledger) -> None:
    setup = team_with_accounts(ledger, accounts=1)
    account_id = setup.account_ids[0]
    count = ACCOUNT_SNAPSHOT_INTERVAL_EVENTS + 50
    records = [usage(account_id, f"r{n}", minutes=n) for n in range(count)]
    for outcome in ledger.record_usage_batches([records[:600], records[600:]]):
        assert not outcome.rejections
    assert ledger.snapshots is not None
    snapshots = list(ledger.snapshots.get(account_id))
    assert snapshots, "an account past the snapshot interval has a snapshot"
    fresh = Ledger(env=dict(ledger.env))
    if type(ledger.recorder).__name__.startswith("InMemory"):
        fresh = ledger  # the in-memory store lives in one application only
    reloaded = fresh.get_account(account_id)
    assert reloaded.usage_count == count
    assert reloaded.spent_nanos == sum(expected_cost(r) for r in records)


def test_idempotency_keys_may_hold_any_character(ledger: Ledger) -> None:
    setup = team_with_accounts(ledger, accounts=0)
    key = "import\x1fbatch-7"
    first = ledger.open_account(setup.team_id, account_key="bot", name="Bot", actor=OWNER,
                                idempotency_key=key)
    assert ledger.open_account(setup.team_id, account_key="bot", name="Bot", actor=OWNER,
                               idempotency_key=key) == first
