"""The audit trail: hash-chained, verified against the stored events, exported for auditors."""

from __future__ import annotations

import csv
import io
import json

import psycopg
import pytest

from adapters.cli.main import main
from adapters.postgres.audit_queries import export, team_audit_rows
from adapters.runtime.auditor_tools import verify
from adapters.runtime.projection_process import ledger_decoder
from tests.projections.history import ledger_at, mixed_history, project


def _usage_position(database_url: str) -> tuple[int, str]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT position, aggregate_id FROM ledger_views.audit "
                           "WHERE event_type = 'Account.UsageRecorded' ORDER BY position "
                           "OFFSET 5 LIMIT 1").fetchone()
    assert row is not None
    return row[0], str(row[1])


def test_an_untouched_history_verifies(database_url: str) -> None:
    with ledger_at(database_url) as ledger:
        mixed_history(ledger)
    position = project(database_url)

    report = verify(database_url, ledger_decoder(database_url))

    assert report.ok, report.problems
    assert report.events == report.audit_rows == position


def test_a_changed_byte_in_a_stored_event_is_detected_by_audit_verify(
        database_url: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    with ledger_at(database_url) as ledger:
        mixed_history(ledger)
    project(database_url)
    position, aggregate_id = _usage_position(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        # Turn the first digit of "cost_nanos": into another digit: still valid JSON.
        conn.execute(
            "UPDATE ledger_events SET state = overlay(state placing "
            "(CASE WHEN get_byte(state, p) = 57 THEN '\\x31' ELSE '\\x39' END)::bytea "
            "from p + 1 for 1) FROM (SELECT position('\"cost_nanos\":'::bytea in state) + 12 AS p "
            "FROM ledger_events WHERE notification_id = %(n)s) AS found "
            "WHERE notification_id = %(n)s", {"n": position})

    report = verify(database_url, ledger_decoder(database_url))
    assert not report.ok
    assert [(p.position, p.kind, str(p.aggregate_id)) for p in report.problems] == [
        (position, "changed", aggregate_id)]

    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    assert main(["audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert f"position {position} [changed] aggregate {aggregate_id}" in out


def test_removed_and_unreadable_events_are_reported_precisely(database_url: str) -> None:
    with ledger_at(database_url) as ledger:
        mixed_history(ledger)
    project(database_url)
    removed, removed_aggregate = _usage_position(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM ledger_events WHERE notification_id = %s", (removed,))
        conn.execute("UPDATE ledger_events SET state = 'not json'::bytea "
                     "WHERE notification_id = %s", (removed + 1,))

    report = verify(database_url, ledger_decoder(database_url))

    kinds = {(p.position, p.kind) for p in report.problems}
    assert (removed, "removed") in kinds
    assert (removed + 1, "unreadable") in kinds
    assert (removed + 1, "changed") in kinds
    assert next(p for p in report.problems if p.kind == "removed").aggregate_id is not None
    assert str(next(p for p in report.problems if p.kind == "removed").aggregate_id) == \
        removed_aggregate


def test_an_altered_audit_row_breaks_the_chain(database_url: str) -> None:
    with ledger_at(database_url) as ledger:
        mixed_history(ledger)
    project(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM ledger_views.audit WHERE position = 20")

    report = verify(database_url, ledger_decoder(database_url))

    assert {(p.position, p.kind) for p in report.problems} == {(20, "unaudited"),
                                                               (21, "chain_broken")}


def test_audit_export_gives_every_team_event_with_balances(database_url: str) -> None:
    with ledger_at(database_url) as ledger:
        team = mixed_history(ledger)
    project(database_url)

    out = io.StringIO()
    count = export(team_audit_rows(database_url, team.team_id), out, "csv")
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(rows) == count > 60
    top_up = next(r for r in rows if r["event_type"] == "Team.TopUpCredited")
    assert int(top_up["balance_after_nanos"]) - int(top_up["balance_before_nanos"]) == \
        100 * 10**9
    assert "credited 100.000000000 USD" in top_up["summary"]
    assert top_up["actor"] == "system:stripe"

    out = io.StringIO()
    export(team_audit_rows(database_url, team.team_id), out, "jsonl")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["position"] for r in lines] == sorted(r["position"] for r in lines)
    assert all(r["team_id"] == str(team.team_id) for r in lines)
    usage_rows = [r for r in lines if r["event_type"] == "Account.UsageRecorded"]
    assert len(usage_rows) == 60
    assert all(r["balance_before_nanos"] - r["balance_after_nanos"] >= 0 for r in usage_rows)


# Each edit keeps the row valid SQL-wise; every one of them must be found at the row's position.
COLUMN_EDITS = {
    "position": "position = position + 1000000",
    "recorded_at": "recorded_at = recorded_at + interval '1 microsecond'",
    "team_id": "team_id = gen_random_uuid()",
    "aggregate_id": "aggregate_id = gen_random_uuid()",
    "aggregate_version": "aggregate_version = aggregate_version + 1",
    "event_type": "event_type = 'Team.AdjustmentRecorded'",
    "actor": "actor = 'mallory'",
    "summary": "summary = summary || ' '",
    "balance_before_nanos": "balance_before_nanos = balance_before_nanos + 1",
    "balance_after_nanos": "balance_after_nanos = balance_after_nanos + 1",
    "event_digest": "event_digest = sha256(event_digest)",
    "hash": "hash = sha256(hash)",
}


def test_an_edit_of_any_column_of_an_audit_row_is_found_at_its_position(
        database_url: str) -> None:
    with ledger_at(database_url) as ledger:
        mixed_history(ledger)
    project(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT position FROM ledger_views.audit WHERE event_type = "
                           "'Team.TopUpCredited' ORDER BY position LIMIT 1").fetchone()
        assert row is not None
        position = row[0]
        columns = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "'ledger_views' AND table_name = 'audit'")]
        assert sorted(columns) == sorted(COLUMN_EDITS), "a new audit column needs a case here"
        conn.execute("CREATE TABLE audit_copy AS SELECT * FROM ledger_views.audit "
                     "WHERE position = %s", (position,))
        for column, edit in COLUMN_EDITS.items():
            conn.execute(f"UPDATE ledger_views.audit SET {edit} WHERE position = %s",
                         (position,))
            report = verify(database_url, ledger_decoder(database_url))
            assert position in {p.position for p in report.problems}, column
            # Put the row back exactly as it was; the chain verifies again.
            conn.execute("DELETE FROM ledger_views.audit WHERE aggregate_id = (SELECT "
                         "aggregate_id FROM audit_copy) AND aggregate_version = (SELECT "
                         "aggregate_version FROM audit_copy) OR position IN (%s, %s) ",
                         (position, position + 1000000))
            conn.execute("INSERT INTO ledger_views.audit SELECT * FROM audit_copy")
            assert verify(database_url, ledger_decoder(database_url)).ok, column
