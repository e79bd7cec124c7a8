"""Replay equals live; a batch counts once, however the runner stops and restarts."""

from __future__ import annotations

import psycopg
import pytest

from adapters.postgres import view_writes
from adapters.postgres.view_store import PostgresViewStore
from adapters.runtime.auditor_tools import replay
from adapters.runtime.projection_process import open_runner
from projections.ports import TrackingConflictError
from tests.projections.history import ledger_at, mixed_history, project, usage


def test_replay_equals_live_after_a_mixed_history(database_url: str) -> None:
    with ledger_at(database_url) as ledger:
        mixed_history(ledger)
    position = project(database_url)

    report = replay(database_url)

    assert report.position == position > 0
    assert report.equal, [t for t in report.tables if not t.equal]
    assert report.canonical_hash("live") == report.canonical_hash("replay")
    assert {t.table: t.live_rows > 0 for t in report.tables} == {
        "teams": True, "accounts": True, "usage_daily": True, "audit": True, "invoices": True,
        "top_ups": True, "payments": True, "package_assignments": True}


def test_replay_shows_the_first_differing_row_when_live_was_changed(database_url: str) -> None:
    with ledger_at(database_url) as ledger:
        team = mixed_history(ledger)
    project(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE ledger_views.teams SET spent_nanos = spent_nanos + 1 "
                     "WHERE team_id = %s", (team.team_id,))

    report = replay(database_url)

    assert not report.equal
    teams = next(t for t in report.tables if t.table == "teams")
    assert not teams.equal and teams.differences
    live, replayed = teams.differences[0]
    assert str(team.team_id) in (live or "") and live != replayed
    assert all(t.equal for t in report.tables if t.table != "teams")


def test_reprocessing_a_range_is_a_no_op(database_url: str) -> None:
    with ledger_at(database_url) as ledger:
        team = mixed_history(ledger)
    with open_runner(database_url) as runner:
        runner.catch_up()
        # Fold the last range again from the position before it, as a confused or second
        # runner would, and try to commit it: the tracking row refuses it.
        stale = PostgresViewStore(database_url).load_folder()
        entries = runner.log.read_after(stale.position - 10, 10)
        stale.position = entries[0].position - 1
        changes = stale.fold([(e, runner.decoder.decode(e)) for e in entries])
        with pytest.raises(TrackingConflictError):
            runner.store.commit(changes)
        assert runner.catch_up() == 0
        balance = runner.store.team(team.team_id)
    with open_runner(database_url) as again:
        assert again.catch_up() == 0
    assert balance is not None
    assert balance == PostgresViewStore(database_url).team(team.team_id)
    assert replay(database_url).equal


def test_a_projector_killed_mid_batch_counts_nothing_twice(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with ledger_at(database_url) as ledger:
        team = mixed_history(ledger)
        spent_expected = sum(ledger.get_account(a).spent_nanos for a in team.account_ids)
    with open_runner(database_url) as runner:
        runner.batch_size = 7  # many batches, so the failure lands in the middle of the log
        runner.catch_up(stop_position=30)
        original = view_writes.append_audit
        calls = 0

        def dies_after_writing_usage(*args: object) -> None:
            nonlocal calls
            calls += 1
            if calls == 2:
                # The batch's usage sums are copied, the batch before it may be committing; the
                # process dies before this batch's audit rows and its commit.
                raise KeyboardInterrupt("killed mid-batch")
            original(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(view_writes, "append_audit", dies_after_writing_usage)
        with pytest.raises(KeyboardInterrupt):
            runner.catch_up()
        killed_at = runner.position
        monkeypatch.setattr(view_writes, "append_audit", original)
    assert killed_at > 30
    with open_runner(database_url) as restarted:
        assert restarted.position == killed_at
        restarted.catch_up()
        team_view = restarted.store.team(team.team_id)
        usage_sum = restarted.store.conn.execute(
            "SELECT sum(cost_nanos), sum(requests) FROM ledger_views.usage_daily "
            "WHERE team_id = %s", (team.team_id,)).fetchone()
    assert team_view is not None and team_view.spent_nanos == spent_expected
    assert usage_sum is not None and int(usage_sum[0]) == spent_expected and usage_sum[1] == 60
    assert replay(database_url).equal


def test_a_runner_follows_new_events_after_catching_up(database_url: str) -> None:
    with ledger_at(database_url) as ledger:
        team = mixed_history(ledger)
        with open_runner(database_url) as runner:
            runner.catch_up()
            before = runner.store.team(team.team_id)
            ledger.record_usage_batch([usage(team.account_ids[0], "new-1", ledger.clock())])
            assert runner.catch_up() == 1
            after = runner.store.team(team.team_id)
    assert before is not None and after is not None
    assert after.spent_nanos > before.spent_nanos
