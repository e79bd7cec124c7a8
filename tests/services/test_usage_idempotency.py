"""Usage is charged exactly once: within a batch, across batches, processes and writers."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError

from adapters.runtime.settings import eventsourcing_env
from domain.usage import UsageRecord
from services.ledger import Ledger
from services.usage.outcomes import (
    COUNTER_CONFLICTS,
    COUNTER_DUPLICATES,
    COUNTER_RECORDED,
    COUNTER_REJECTED,
    RejectionCode,
)
from tests.services.support import OWNER, expected_cost, team_with_accounts, usage


def test_duplicate_usage_in_one_batch_is_charged_once(ledger: Ledger) -> None:
    setup = team_with_accounts(ledger, accounts=1)
    record = usage(setup.account_ids[0], "req-1")
    other = usage(setup.account_ids[0], "req-2", minutes=1)
    outcome = ledger.record_usage_batch([record, record, other, record])
    assert [r.usage_id for r in outcome.recorded] == ["req-1", "req-2"]
    assert outcome.duplicates == ["req-1", "req-1"]
    assert ledger.get_account(setup.account_ids[0]).usage_count == 2
    assert ledger.keyed.counter_values() == {COUNTER_RECORDED: 2, COUNTER_DUPLICATES: 2}


def test_duplicate_usage_in_a_later_batch_changes_nothing(ledger: Ledger) -> None:
    setup = team_with_accounts(ledger, accounts=1)
    record = usage(setup.account_ids[0], "req-1")
    ledger.record_usage_batch([record])
    later = ledger.record_usage_batch([record, usage(setup.account_ids[0], "req-2")])
    assert later.duplicates == ["req-1"]
    assert [r.usage_id for r in later.recorded] == ["req-2"]
    account = ledger.get_account(setup.account_ids[0])
    assert account.spent_nanos == 2 * expected_cost(record)


def test_same_id_with_different_content_is_a_counted_conflict(ledger: Ledger) -> None:
    setup = team_with_accounts(ledger, accounts=1)
    record = usage(setup.account_ids[0], "req-1")
    ledger.record_usage_batch([record])
    changed = dataclasses.replace(record, output_tokens=record.output_tokens + 1)
    outcome = ledger.record_usage_batch([changed, usage(setup.account_ids[0], "req-2")])
    (conflict,) = outcome.rejections
    assert conflict.code == RejectionCode.CONFLICT
    assert "different content" in conflict.message
    assert [r.usage_id for r in outcome.recorded] == ["req-2"]
    assert ledger.keyed.counter_values()[COUNTER_CONFLICTS] == 1
    (row,) = ledger.keyed.select_rejections(10)
    assert (row.usage_id, row.code) == ("req-1", RejectionCode.CONFLICT)
    in_batch = ledger.record_usage_batch([usage(setup.account_ids[0], "req-3"),
                                          usage(setup.account_ids[0], "req-3", minutes=5)])
    assert [r.code for r in in_batch.rejections] == [RejectionCode.CONFLICT]
    assert [r.usage_id for r in in_batch.recorded] == ["req-3"]


def test_unacceptable_records_are_rejected_with_reasons_and_the_rest_recorded(
        ledger: Ledger) -> None:
    setup = team_with_accounts(ledger, accounts=2)
    from uuid import uuid4

    ledger.close_account(setup.account_ids[1], "offboarded", OWNER)
    early = dataclasses.replace(usage(setup.account_ids[0], "too-early"),
                                occurred_at=usage(setup.account_ids[0], "x").occurred_at.replace(
                                    year=2025))
    outcome = ledger.record_usage_batch([
        usage(setup.account_ids[0], "ok-1"),
        usage(uuid4(), "nobody"),
        usage(setup.account_ids[1], "closed"),
        early,
        usage(setup.account_ids[0], "ok-2", minutes=1),
    ])
    assert [r.usage_id for r in outcome.recorded] == ["ok-1", "ok-2"]
    assert {r.usage_id: r.code for r in outcome.rejections} == {
        "nobody": RejectionCode.UNKNOWN_ACCOUNT,
        "closed": RejectionCode.ACCOUNT_CLOSED,
        "too-early": RejectionCode.NO_PACKAGE_IN_FORCE,
    }
    assert ledger.keyed.counter_values()[COUNTER_REJECTED] == 3


def test_a_pipelined_stream_records_what_sequential_batches_record(ledger: Ledger) -> None:
    setup = team_with_accounts(ledger, accounts=3)
    unique = [usage(setup.account_ids[n % 3], f"r{n}", minutes=n) for n in range(250)]
    records = [unique[n % 250] for n in range(600)]  # copies across batch boundaries
    batches = [records[i:i + 70] for i in range(0, len(records), 70)]
    outcomes = list(ledger.record_usage_batches(batches))
    assert len(outcomes) == len(batches)
    recorded = [r.usage_id for o in outcomes for r in o.recorded]
    assert sorted(recorded) == sorted(f"r{n}" for n in range(250))
    assert sum(len(o.duplicates) for o in outcomes) == 350
    total = sum(ledger.get_account(a).spent_nanos for a in setup.account_ids)
    assert total == sum(expected_cost(r) for r in unique)


def test_a_none_in_the_stream_finishes_the_batch_in_flight_at_once(ledger: Ledger) -> None:
    setup = team_with_accounts(ledger, accounts=2)
    records = [usage(setup.account_ids[n % 2], f"r{n}", minutes=n) for n in range(90)]
    asked: list[str] = []

    def stream() -> Iterator[list[UsageRecord] | None]:
        asked.append("first")
        yield records[:40]
        asked.append("none")
        yield None
        asked.append("second")
        yield records[40:]

    outcomes = ledger.record_usage_batches(stream())
    first = next(outcomes)
    # The first batch's outcome came without the second batch being asked for.
    assert asked == ["first", "none"]
    assert len(first.recorded) == 40
    rest = list(outcomes)
    assert [len(o.recorded) for o in rest] == [50]
    assert sum(ledger.get_account(a).usage_count for a in setup.account_ids) == 90


def test_a_pipeline_commit_that_fails_is_redone_without_double_charging(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    setup = team_with_accounts(ledger, accounts=2)
    records = [usage(setup.account_ids[n % 2], f"r{n}", minutes=n) for n in range(400)]
    original = ledger.save_events
    calls = {"n": 0}

    def fail_the_third_commit(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise IntegrityError("injected: another writer took a key first")
        original(*args, **kwargs)

    monkeypatch.setattr(ledger, "save_events", fail_the_third_commit)
    outcomes = list(ledger.record_usage_batches(records[i:i + 50] for i in range(0, 400, 50)))
    assert calls["n"] > 8  # the injected failure happened: more commits than batches
    assert sum(len(o.recorded) for o in outcomes) == 400
    accounts = [ledger.get_account(a) for a in setup.account_ids]
    assert sum(a.usage_count for a in accounts) == 400
    assert sum(a.spent_nanos for a in accounts) == sum(expected_cost(r) for r in records)


@pytest.fixture
def pg_ledger(database_url: str) -> Ledger:
    return Ledger(env=eventsourcing_env(database_url))


def test_duplicates_are_recognised_after_a_process_restart(pg_ledger: Ledger,
                                                           database_url: str) -> None:
    setup = team_with_accounts(pg_ledger, accounts=1)
    script = textwrap.dedent(f"""
        from uuid import UUID
        from adapters.runtime.settings import eventsourcing_env
        from services.ledger import Ledger
        from tests.services.support import usage
        ledger = Ledger(env=eventsourcing_env({database_url!r}))
        account = UUID({str(setup.account_ids[0])!r})
        outcome = ledger.record_usage_batch([usage(account, f"req-{{n}}", minutes=n)
                                             for n in range(50)])
        assert len(outcome.recorded) == 50, outcome
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    # A new process (this one, with nothing cached) sees the other's records as duplicates.
    again = pg_ledger.record_usage_batch([usage(setup.account_ids[0], f"req-{n}", minutes=n)
                                          for n in range(60)])
    assert len(again.duplicates) == 50
    assert [r.usage_id for r in again.recorded] == [f"req-{n}" for n in range(50, 60)]
    assert pg_ledger.get_account(setup.account_ids[0]).usage_count == 60


def test_racing_writers_charge_each_record_once(pg_ledger: Ledger, database_url: str) -> None:
    setup = team_with_accounts(pg_ledger, accounts=4)
    records = [usage(setup.account_ids[n % 4], f"race-{n}", minutes=n % 500)
               for n in range(2000)]
    writers = [Ledger(env=eventsourcing_env(database_url)) for _ in range(3)]
    errors: list[BaseException] = []

    def write(ledger: Ledger, offset: int) -> None:
        try:
            rotated = records[offset:] + records[:offset]
            for _ in ledger.record_usage_batches(rotated[i:i + 200]
                                                 for i in range(0, len(rotated), 200)):
                pass
        except BaseException as error:  # reported below, with the test's assertion
            errors.append(error)

    threads = [threading.Thread(target=write, args=(w, n * 700)) for n, w in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    counters = pg_ledger.keyed.counter_values()
    assert counters[COUNTER_RECORDED] == 2000
    assert counters[COUNTER_DUPLICATES] == 4000
    accounts = [pg_ledger.get_account(a) for a in setup.account_ids]
    assert sum(a.usage_count for a in accounts) == 2000
    assert sum(a.spent_nanos for a in accounts) == sum(expected_cost(r) for r in records)


def test_a_rejected_record_delivered_again_is_reported_but_counted_once(ledger: Ledger) -> None:
    setup = team_with_accounts(ledger, accounts=1)
    record = usage(setup.account_ids[0], "req-1")
    ledger.record_usage_batch([record])
    changed = dataclasses.replace(record, output_tokens=record.output_tokens + 1)
    from uuid import uuid4

    nobody = usage(uuid4(), "req-2")
    for _delivery in range(3):
        outcome = ledger.record_usage_batch([changed, nobody, changed])
        assert sorted(r.code for r in outcome.rejections) == sorted([
            RejectionCode.CONFLICT, RejectionCode.UNKNOWN_ACCOUNT, RejectionCode.CONFLICT])
    counters = ledger.keyed.counter_values()
    assert counters[COUNTER_CONFLICTS] == 1
    assert counters[COUNTER_REJECTED] == 1
    assert sorted((r.usage_id, r.code) for r in ledger.keyed.select_rejections(10)) == [
        ("req-1", RejectionCode.CONFLICT), ("req-2", RejectionCode.UNKNOWN_ACCOUNT)]
    # A different conflicting content is a new conflict.
    other = dataclasses.replace(record, output_tokens=record.output_tokens + 2)
    ledger.record_usage_batch([other])
    assert ledger.keyed.counter_values()[COUNTER_CONFLICTS] == 2


USAGE_THREADS = 4
USAGE_BATCHES_PER_THREAD = 5
USAGE_BATCH_RECORDS = 40


def test_batches_recorded_from_many_threads_of_one_ledger_are_each_charged_once(
        ledger: Ledger) -> None:
    """The HTTP API records each request's batch from its own worker thread on one shared
    Ledger; those batches touch the same accounts (it was a 500 with two concurrent clients)."""
    setup = team_with_accounts(ledger, accounts=3)
    failures: list[BaseException] = []

    def write(thread: int) -> None:
        try:
            for batch in range(USAGE_BATCHES_PER_THREAD):
                records = [usage(setup.account_ids[n % 3], f"t{thread}-b{batch}-{n}", minutes=n)
                           for n in range(USAGE_BATCH_RECORDS)]
                outcome = ledger.record_usage_batch(records)
                assert len(outcome.recorded) == USAGE_BATCH_RECORDS
        except BaseException as error:  # reported below, with the thread's error
            failures.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(USAGE_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    total = USAGE_THREADS * USAGE_BATCHES_PER_THREAD * USAGE_BATCH_RECORDS
    assert ledger.keyed.counter_values()["usage_recorded"] == total
    spent = sum(ledger.get_account(a).spent_nanos for a in setup.account_ids)
    one = expected_cost(usage(setup.account_ids[0], "x"))
    assert spent == total * one


def stored_version(ledger: Ledger, account_id: Any) -> int:
    """The account as the store has it, folded from its events (a gap in its versions raises
    OriginatorVersionError here), not the usage cache's copy."""
    return int(ledger.repository.get(account_id).version)


def test_a_commit_lost_with_the_next_batch_prepared_leaves_no_gap_in_versions(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch N's commit fails (the database went away) while N+1, on another account, is
    prepared: N+1's events must leave the cache too, or that account's next event would be
    stored after a gap and the account could never be loaded again (seen once under
    PostgreSQL restarts, tests/integration/test_crash_recovery.py)."""
    setup = team_with_accounts(ledger, accounts=2)
    first, second = setup.account_ids
    before = stored_version(ledger, second)
    original = ledger.save_events
    calls = {"n": 0}

    def lose_the_first_commit(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("injected: the database went away during the commit")
        original(*args, **kwargs)

    monkeypatch.setattr(ledger, "save_events", lose_the_first_commit)
    batches = [[usage(first, f"a{n}", minutes=n) for n in range(5)],
               [usage(second, f"b{n}", minutes=n) for n in range(5)]]
    with pytest.raises(ConnectionError):
        list(ledger.record_usage_batches(batches))
    assert ledger.record_usage_batch([usage(second, "after", minutes=99)]).recorded
    assert stored_version(ledger, second) == before + 1
    assert ledger.get_account(second).usage_count == 1


def test_pricing_stopped_half_way_leaves_no_priced_account_cached(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first account is priced, the second cannot be loaded: the first must leave the
    cache with the events it will never store (`BatchPreparer.price`)."""
    setup = team_with_accounts(ledger, accounts=2)
    first, second = setup.account_ids
    before = stored_version(ledger, first)
    original = ledger.repository.get

    def second_unreadable(aggregate_id: Any, *args: Any, **kwargs: Any) -> Any:
        if aggregate_id == second:
            raise ConnectionError("injected: the database went away while loading")
        return original(aggregate_id, *args, **kwargs)

    monkeypatch.setattr(ledger.repository, "get", second_unreadable)
    with pytest.raises(ConnectionError):
        ledger.record_usage_batch([usage(first, "x1"), usage(second, "x2")])
    monkeypatch.setattr(ledger.repository, "get", original)
    assert ledger.record_usage_batch([usage(first, "x3", minutes=1)]).recorded
    assert stored_version(ledger, first) == before + 1
