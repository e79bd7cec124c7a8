"""Idempotency keys of admin and money commands: every command takes one, scoped to its team."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest

from adapters.runtime.composition import open_ledger
from adapters.runtime.settings import eventsourcing_env
from domain.errors import IdempotencyConflictError, InvalidInputError
from domain.pricing import PriceTerms
from services.actor import Actor
from services.ledger import Ledger
from tests.services.support import OPERATOR, OWNER, SINCE, team_with_accounts

STRIPE = Actor.system("stripe-webhook")
CHEAPER = PriceTerms(request_nanos=1, input_token_nanos=1, cached_input_token_nanos=1,
                     output_token_nanos=1)


def _twice(command: Callable[[str], object], key: str) -> tuple[object, object]:
    return command(key), command(key)


def test_every_admin_and_money_command_returns_its_first_result_for_a_retried_key(
        ledger: Ledger) -> None:
    setup = team_with_accounts(ledger, accounts=1)
    team, account = setup.team_id, setup.account_ids[0]
    commands: dict[str, Callable[[str], object]] = {
        "register_team": lambda k: ledger.register_team(
            team_key="other", name="Other", currency="USD", timezone="UTC", actor=OWNER,
            idempotency_key=k),
        "create_package": lambda k: ledger.create_package(
            package_key="cheap", name="Cheap", currency="USD", terms=CHEAPER, actor=OPERATOR,
            idempotency_key=k),
        "publish_package_version": lambda k: ledger.publish_package_version(
            setup.package_id, CHEAPER, OPERATOR, idempotency_key=k),
        "add_member": lambda k: ledger.add_member(team, "bea", "admin", OWNER,
                                                  idempotency_key=k),
        "change_member_role": lambda k: ledger.change_member_role(team, "bea", "billing", OWNER,
                                                                  idempotency_key=k),
        "remove_member": lambda k: ledger.remove_member(team, "bea", OWNER, idempotency_key=k),
        "set_credit_limit": lambda k: ledger.set_credit_limit(team, 5, OWNER, idempotency_key=k),
        "set_low_balance_threshold": lambda k: ledger.set_low_balance_threshold(
            team, 7, OWNER, idempotency_key=k),
        "link_stripe_customer": lambda k: ledger.link_stripe_customer(
            team, "cus_1", OWNER, idempotency_key=k),
        "credit_top_up": lambda k: ledger.credit_top_up(team, "pi_1", 1_000, "USD", STRIPE,
                                                        idempotency_key=k),
        "refund_top_up": lambda k: ledger.refund_top_up(team, "pi_1", "re_1", 100, "USD",
                                                        STRIPE, idempotency_key=k),
        "record_adjustment": lambda k: ledger.record_adjustment(team, "adj-1", 3, "fix", OWNER,
                                                                idempotency_key=k),
        "open_account": lambda k: ledger.open_account(team, account_key="bot", name="Bot",
                                                      actor=OWNER, idempotency_key=k),
        "assign_package": lambda k: ledger.assign_package(
            account, setup.package_id, OWNER, effective_from=SINCE.replace(year=2027),
            idempotency_key=k),
        "suspend_account": lambda k: ledger.suspend_account(account, "why", OWNER,
                                                            idempotency_key=k),
        "reactivate_account": lambda k: ledger.reactivate_account(account, OWNER,
                                                                  idempotency_key=k),
        "draft_invoice": lambda k: ledger.draft_invoice(
            team, period_start="2026-01-01", period_end="2026-01-31",
            lines=[{"description": "usage", "amount_nanos": 10**9}], actor=OWNER,
            idempotency_key=k),
        "suspend_team": lambda k: ledger.suspend_team(team, "unpaid", OWNER, idempotency_key=k),
        "reactivate_team": lambda k: ledger.reactivate_team(team, OWNER, idempotency_key=k),
        "close_account": lambda k: ledger.close_account(account, "done", OWNER,
                                                        idempotency_key=k),
    }
    results = {}
    for name, command in commands.items():
        before = ledger.recorder.max_notification_id()
        first = command(f"key-{name}")
        after_first = ledger.recorder.max_notification_id()
        assert after_first != before, name  # the first run did something
        assert command(f"key-{name}") == first, name
        # The retry changed nothing: the log ends where the first run left it.
        assert ledger.recorder.max_notification_id() == after_first, name
        results[name] = first
    invoice_id = results["draft_invoice"]
    assert isinstance(invoice_id, UUID)
    invoice_commands: dict[str, Callable[[str], object]] = {
        "finalize_invoice": lambda k: ledger.finalize_invoice(invoice_id, OWNER,
                                                              idempotency_key=k),
        "issue_credit_note": lambda k: ledger.issue_credit_note(
            invoice_id, "cn-1", 10, "goodwill", OWNER, idempotency_key=k),
        "mark_invoice_paid": lambda k: ledger.mark_invoice_paid(invoice_id, "pi_9", STRIPE,
                                                                idempotency_key=k),
    }
    for name, command in invoice_commands.items():
        first, again = _twice(command, f"key-{name}")
        assert again == first, name
    assert ledger.get_invoice(invoice_id).status.value == "paid"
    second = ledger.draft_invoice(team, period_start="2026-02-01", period_end="2026-02-28",
                                  lines=[], actor=OWNER)
    assert _twice(lambda k: ledger.void_invoice(second, "duplicate", OWNER, idempotency_key=k),
                  "key-void_invoice") == (None, None)
    assert ledger.get_invoice(second).status.value == "void"
    assert ledger.credit_top_up(team, "pi_1", 1_000, "USD", STRIPE) is False  # natural key


def test_a_retried_key_after_success_changes_nothing_more(ledger: Ledger) -> None:
    setup = team_with_accounts(ledger, accounts=0)
    ledger.record_adjustment(setup.team_id, "adj-1", 5, "fix", OWNER, idempotency_key="k")
    head = ledger.recorder.max_notification_id()
    assert ledger.record_adjustment(setup.team_id, "adj-1", 5, "fix", OWNER,
                                    idempotency_key="k") is True
    assert ledger.recorder.max_notification_id() == head
    assert ledger.commands.stats.replayed_keys == 1


def test_the_same_key_with_another_command_is_a_clear_error(ledger: Ledger) -> None:
    setup = team_with_accounts(ledger, accounts=0)
    ledger.set_credit_limit(setup.team_id, 5, OWNER, idempotency_key="k-1")
    with pytest.raises(IdempotencyConflictError, match=r"k-1.*different command"):
        ledger.set_credit_limit(setup.team_id, 6, OWNER, idempotency_key="k-1")
    with pytest.raises(IdempotencyConflictError):
        ledger.record_adjustment(setup.team_id, "adj-1", 5, "fix", OWNER, idempotency_key="k-1")
    assert ledger.get_team(setup.team_id).credit_limit_nanos == 5
    assert ledger.get_team(setup.team_id).adjustments == {}


def test_one_teams_key_never_blocks_another_team(ledger: Ledger) -> None:
    first = team_with_accounts(ledger, accounts=0, key="first")
    second = team_with_accounts(ledger, accounts=0, key="second")
    ledger.set_credit_limit(first.team_id, 5, OWNER, idempotency_key="monthly-limit")
    ledger.set_credit_limit(second.team_id, 9, OWNER, idempotency_key="monthly-limit")
    assert ledger.get_team(first.team_id).credit_limit_nanos == 5
    assert ledger.get_team(second.team_id).credit_limit_nanos == 9
    # Team-less commands are scoped to their principal: two users may use the same key.
    a = ledger.register_team(team_key="a", name="A", currency="USD", timezone="UTC",
                             actor=Actor("ann"), idempotency_key="setup")
    b = ledger.register_team(team_key="b", name="B", currency="USD", timezone="UTC",
                             actor=Actor("bob"), idempotency_key="setup")
    assert a != b


def test_an_idempotency_key_is_bounded(ledger: Ledger) -> None:
    setup = team_with_accounts(ledger, accounts=0)
    for bad in ("", "k" * 201, "nul\x00"):
        with pytest.raises(InvalidInputError, match="idempotency key"):
            ledger.set_credit_limit(setup.team_id, 5, OWNER, idempotency_key=bad)


def test_a_command_that_loses_a_race_reloads_and_applies_on_the_winner(
        database_url: str) -> None:
    """Another process commits between this command's load and its save: the save conflicts,
    the command reloads the team and applies its change on top, nothing is lost."""
    ledger = Ledger(env=eventsourcing_env(database_url))
    rival = Ledger(env=eventsourcing_env(database_url))
    setup = team_with_accounts(ledger, accounts=0)
    original_get_team = ledger.get_team
    raced = []

    def get_team_then_lose_the_race(team_id: UUID) -> object:
        team = original_get_team(team_id)
        if not raced:
            raced.append(True)
            rival.record_adjustment(team_id, "rival", 7, "first", OWNER)
        return team

    ledger.get_team = get_team_then_lose_the_race  # type: ignore[method-assign]
    try:
        assert ledger.record_adjustment(setup.team_id, "mine", 5, "second", OWNER,
                                        idempotency_key="mine")
        assert ledger.get_team(setup.team_id).adjustments == {"rival": 7, "mine": 5}
        assert ledger.commands.stats.conflicts_retried == 1
    finally:
        del ledger.get_team
        rival.close()
        ledger.close()


def test_a_command_refused_because_its_own_key_just_committed_elsewhere_answers_the_first_answer(
        database_url: str) -> None:
    """Two processes run the same command with the same key: B looks for the key (not there
    yet), A commits, B's attempt then sees A's change and refuses ("already finalized"). B must
    answer A's result, as any retry with that key does, not fail (found by two concurrent
    invoicing passes)."""
    first, second = open_ledger(database_url), open_ledger(database_url)
    try:
        setup = team_with_accounts(first, accounts=1)
        invoice = first.draft_invoice(setup.team_id, period_start="2026-10-01",
                                      period_end="2026-11-01", lines=[], actor=OWNER)
        original = second.get_invoice
        calls: list[UUID] = []

        def load_after_the_other_process_committed(invoice_id: UUID) -> Any:
            calls.append(invoice_id)
            if len(calls) == 2:  # inside the second's attempt, after it looked for the key
                first.finalize_invoice(invoice_id, OWNER, idempotency_key="finalize-october")
            return original(invoice_id)

        second.get_invoice = load_after_the_other_process_committed  # type: ignore[method-assign]
        second.finalize_invoice(invoice, OWNER, idempotency_key="finalize-october")
        assert len(calls) >= 2 and first.get_invoice(invoice).number is not None
        # A different command under the same key is still refused.
        with pytest.raises(IdempotencyConflictError):
            second.void_invoice(invoice, "no", OWNER, idempotency_key="finalize-october")
    finally:
        first.close()
        second.close()
