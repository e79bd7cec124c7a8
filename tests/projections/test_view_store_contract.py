"""The same cases on the in-memory and the PostgreSQL view stores, so that they cannot drift apart.

Batches are folded from a real history (the in-memory Ledger's log, `mixed_history`) and applied
to the store under test: tracking moves with each batch, a batch is applied once (re-applying it
is refused by tracking and changes nothing), and balances, windows, authorization, audit rows and
the failure status read back as they were written.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from adapters.memory.view_store import MemoryViewStore
from adapters.postgres.view_store import PostgresViewStore
from domain.payment import Payment, PaymentBook
from projections.decoding import EventDecoder
from projections.fold import ViewFolder
from projections.ports import FailureKind, ProjectionFailure, TrackingConflictError
from projections.views import BatchChanges
from tests.projections.history import (
    OWNER,
    ledger_at,
    make_team,
    memory_ledger,
    memory_log,
    mixed_history,
)

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
BATCH_SIZE_EVENTS = 25  # small, so that the history spans several batches


@dataclass
class History:
    team_id: UUID
    other_account_id: UUID  # closed in the history
    batches: list[BatchChanges]
    folder: ViewFolder  # the state after every batch, folded without a store


@pytest.fixture(scope="module")
def history() -> History:
    with memory_ledger() as ledger:
        team = mixed_history(ledger)
        log = memory_log(ledger)
        decoder = EventDecoder(ledger.mapper)
        folder = ViewFolder()
        batches = []
        while entries := log.read_after(folder.position, BATCH_SIZE_EVENTS):
            batches.append(folder.fold_log(entries, decoder))
    return History(team.team_id, team.account_ids[1], batches, folder)


def _open_store(kind: str, request: pytest.FixtureRequest) -> Any:
    if kind == "memory":
        return MemoryViewStore()
    database_url = request.getfixturevalue("database_url")
    with ledger_at(database_url):
        pass  # creates the events table, which answers read the head of the log from
    return PostgresViewStore(database_url)


@pytest.fixture(params=["memory", "postgres"])
def store(request: pytest.FixtureRequest) -> Iterator[Any]:
    opened = _open_store(request.param, request)
    try:
        yield opened
    finally:
        opened.close()


def _apply_all(store: Any, history: History) -> None:
    for batch in history.batches:
        store.finish(store.stage(batch))


def test_each_batch_moves_the_tracking_position_and_the_rows(store: Any,
                                                             history: History) -> None:
    assert store.load_folder().position == 0
    for batch in history.batches:
        store.finish(store.stage(batch))
        assert store.load_folder().position == batch.last_position
    loaded = store.load_folder()
    assert loaded.teams == history.folder.teams
    assert loaded.accounts == history.folder.accounts
    assert loaded.invoices == history.folder.invoices
    assert loaded.top_ups == history.folder.top_ups
    assert loaded.audit_head == history.folder.audit_head


def test_a_batch_applied_again_is_refused_by_tracking_and_changes_nothing(
        store: Any, history: History) -> None:
    first = history.batches[0]
    store.finish(store.stage(first))
    with store.snapshot():
        before = (store.team(history.team_id), list(store.audit_rows(first.last_position)))
    with pytest.raises(TrackingConflictError):
        store.finish(store.stage(first))
    assert store.failure_kind(TrackingConflictError("x")) is FailureKind.RUNNER
    with store.snapshot() as (position, _):
        assert position == first.last_position
        assert (store.team(history.team_id),
                list(store.audit_rows(first.last_position))) == before


def test_a_batch_that_skips_ahead_of_the_tracking_position_is_refused(
        store: Any, history: History) -> None:
    with pytest.raises(TrackingConflictError):
        store.finish(store.stage(history.batches[1]))
    assert store.load_folder().position == 0


def test_balances_and_windows_read_back_as_folded(store: Any, history: History) -> None:
    _apply_all(store, history)
    team = history.folder.teams[history.team_id]
    answer = store.balance(history.team_id, NOW)
    assert answer["position"] == history.batches[-1].last_position
    assert answer["balance"] == team.as_dict()
    # 100.00 + 5.00 - 2.00 USD of top-ups, a -0.001 USD adjustment, and the usage spent.
    assert team.balance_nanos == 103_000_000_000 - 1_000_000 - team.spent_nanos
    totals = answer["usage"]["windows"]["total"]
    assert totals["requests"] == 60
    assert totals["cost_nanos"] == team.spent_nanos
    assert [a["account_key"] for a in answer["accounts"]] == ["acme-a0", "acme-a1", "acme-a2"]
    assert [i["status"] for i in answer["invoices"]] == ["paid"]
    assert sorted(t["top_up_id"] for t in answer["top_ups"]) == ["pi_1", "pi_2"]
    assert store.balance(UUID(int=0), NOW) is None


def test_authorization_reads_the_account_and_its_team(store: Any, history: History) -> None:
    _apply_all(store, history)
    assert store.authorize(history.other_account_id).blocked_by == "account_closed"
    assert store.authorize(UUID(int=0)).blocked_by == "unknown_account"


def test_audit_rows_read_back_in_order_with_the_chain_head(store: Any,
                                                           history: History) -> None:
    _apply_all(store, history)
    written = [row for batch in history.batches for row in batch.audit]
    with store.snapshot():
        position, head = store.audited()
        assert (position, head) == (history.folder.position, history.folder.audit_head)
        assert list(store.audit_rows(position)) == written
        assert list(store.audit_rows(written[9].position)) == written[:10]


def test_a_recorded_failure_is_counted_and_cleared(store: Any) -> None:
    assert store.failure() is None
    failure = ProjectionFailure(position=7, aggregate_id=UUID(int=1), aggregate_version=2,
                                event_type="Team.Registered", error="ValueError: bad")
    store.record_failure(failure)
    store.record_failure(failure)
    recorded = store.failure()
    assert (recorded.position, recorded.event_type, recorded.failures) == \
        (7, "Team.Registered", 2)
    store.clear_failure()
    assert store.failure() is None


def test_memory_and_postgresql_give_the_same_answers(history: History,
                                                     request: pytest.FixtureRequest) -> None:
    answers = []
    for kind in ("memory", "postgres"):
        opened = _open_store(kind, request)
        try:
            _apply_all(opened, history)
            answer = opened.balance(history.team_id, NOW)
            answers.append({k: v for k, v in answer.items() if k not in ("head_position",
                                                                          "lag_events")})
        finally:
            opened.close()
    assert answers[0] == answers[1]


def _payments_history() -> tuple[UUID, list[BatchChanges]]:
    """A team with three Stripe payments: one succeeded and partly refunded, one declined, one
    still processing; folded in batches of two events so that a payment spans batches."""
    with memory_ledger() as ledger:
        team = make_team(ledger, key="payer", accounts=1)
        book = PaymentBook(team_id=team.team_id)
        payments = []
        for key, minor in (("paid", 2500), ("declined", 1000), ("pending", 700)):
            payment = Payment.start(team_id=team.team_id, request_key=key,
                                    amount_nanos=minor * 10_000_000, amount_minor=minor,
                                    currency="USD", payment_method_id="pm_card_visa",
                                    actor="owner@payer")
            book.list_payment(payment.id)
            payment.attach_stripe_object(f"pi_{key}", "system:stripe")
            payments.append(payment)
        paid, declined, _pending = payments
        paid.succeed("pi_paid", paid.amount_nanos, "system:stripe")
        paid.record_refund("re_1", 5 * 10_000_000 * 100, "system:stripe")
        declined.fail("pi_declined", "card_declined", "Your card was declined.", "system:stripe")
        ledger.save(book, *payments)
        log, decoder, folder = memory_log(ledger), EventDecoder(ledger.mapper), ViewFolder()
        batches = []
        while entries := log.read_after(folder.position, 2):
            batches.append(folder.fold_log(entries, decoder))
    return team.team_id, batches


def test_payments_read_back_with_their_outcome_and_their_audit_rows_name_the_team(
        store: Any) -> None:
    team_id, batches = _payments_history()
    for batch in batches:
        store.finish(store.stage(batch))
    rows = {row["stripe_object_id"]: row for row in store.payments_of(team_id)}
    assert {k: (r["status"], r["credited_nanos"], r["reversed_nanos"])
            for k, r in rows.items()} == {
        "pi_paid": ("succeeded", 25_000_000_000, 5_000_000_000),
        "pi_declined": ("failed", 0, 0),
        "pi_pending": ("processing", 0, 0),
    }
    assert rows["pi_declined"]["failure_code"] == "card_declined"
    assert store.load_folder().payments.keys() == {r["payment_id"] for r in rows.values()}
    with store.snapshot():
        payment_rows = [row for row in store.audit_rows(batches[-1].last_position)
                        if row.event_type.startswith(("Payment.", "PaymentBook."))]
    assert len(payment_rows) == 13  # book: opened, 3 listed; 3 started, 3 attached, 3 outcomes
    assert {row.team_id for row in payment_rows} == {team_id}


def _holders_history() -> tuple[UUID, list[UUID], list[BatchChanges]]:
    """A team whose first account is given to ann, then to bob; the second to nobody; both
    priced by the team's package from the start, the first also by a later version."""
    with memory_ledger() as ledger:
        team = make_team(ledger, key="held", accounts=2)
        for user in ("ann", "bob"):
            ledger.add_member(team.team_id, user, "member", OWNER)
        first = team.account_ids[0]
        ledger.assign_account_holder(first, "ann", OWNER)
        ledger.assign_account_holder(first, "bob", OWNER)
        package_id = ledger.get_account(first).assignments[0]["package_id"]
        ledger.assign_package(first, package_id, OWNER, effective_from=NOW)
        log, decoder, folder = memory_log(ledger), EventDecoder(ledger.mapper), ViewFolder()
        batches = []
        while entries := log.read_after(folder.position, 3):
            batches.append(folder.fold_log(entries, decoder))
    return team.team_id, team.account_ids, batches


def test_holders_kinds_and_package_assignments_read_back(store: Any) -> None:
    team_id, account_ids, batches = _holders_history()
    for batch in batches:
        store.finish(store.stage(batch))
    accounts = {a.account_id: a for a in store.accounts_of(team_id)}
    assert accounts[account_ids[0]].holder_user_id == "bob"
    assert accounts[account_ids[1]].holder_user_id is None
    assert {a.kind for a in accounts.values()} == {"seat"}
    assignments = store.assignments_of(team_id)
    assert [(a.account_id, a.effective_from == NOW) for a in assignments
            if a.account_id == account_ids[0]] == [(account_ids[0], False),
                                                    (account_ids[0], True)]
    assert {a.account_id for a in assignments} == set(account_ids)
    assert all(a.team_id == team_id and a.package_name and a.position > 0
               for a in assignments)
