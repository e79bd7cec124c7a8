"""The auditor's algorithms (replay and compare, verify the chain, balance as of a moment) on the
in-memory stores: the same code `ledger replay`, `ledger audit verify` and `ledger balance
--as-of` run on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from eventsourcing.persistence import StoredEvent

from adapters.memory.notification_log import MemoryNotificationLog
from adapters.memory.view_store import MemoryViewStore
from projections.as_of import TeamNotInHistoryError, balance_as_of
from projections.audit_verify import verify_audit
from projections.decoding import EventDecoder, LogEntry
from projections.replay import replay_and_compare
from projections.runner import ProjectionRunner
from tests.projections.history import Team, memory_ledger, memory_log, mixed_history


@dataclass
class Projected:
    team: Team
    log: MemoryNotificationLog
    decoder: EventDecoder
    live: MemoryViewStore


@pytest.fixture
def projected() -> Iterator[Projected]:
    with memory_ledger() as ledger:
        team = mixed_history(ledger)
        log, decoder, live = memory_log(ledger), EventDecoder(ledger.mapper), MemoryViewStore()
        ProjectionRunner(log, live, decoder, batch_size=16).catch_up()
        yield Projected(team, log, decoder, live)


class EditedLog:
    """The log with one stored event changed or removed, as someone with database access might."""

    def __init__(self, log: MemoryNotificationLog, position: int, state: bytes | None) -> None:
        self.log, self.position, self.state = log, position, state

    def read_after(self, position: int, limit: int, stop: int | None = None) -> list[LogEntry]:
        entries = self.log.read_after(position, limit, stop)
        if self.state is None:
            return [e for e in entries if e.position != self.position]
        return [e._replace(state=self.state) if e.position == self.position else e
                for e in entries]

    def head_position(self) -> int:
        return self.log.head_position()


def test_replay_equals_the_live_read_models(projected: Projected) -> None:
    report = replay_and_compare(projected.live, MemoryViewStore, projected.log, projected.decoder)
    assert report.equal
    assert report.position == projected.log.head_position()
    assert report.canonical_hash("live") == report.canonical_hash("replay")
    assert {t.table: t.live_rows > 0 for t in report.tables} == dict.fromkeys(
        ("teams", "accounts", "usage_daily", "audit", "invoices", "top_ups", "payments",
         "package_assignments"), True)


def test_replay_shows_the_row_an_edit_of_the_live_read_models_changed(
        projected: Projected) -> None:
    projected.live.teams[projected.team.team_id].spent_nanos += 1
    report = replay_and_compare(projected.live, MemoryViewStore, projected.log, projected.decoder)
    assert not report.equal
    different = [t for t in report.tables if not t.equal]
    assert [t.table for t in different] == ["teams"]
    assert len(different[0].differences) == 1


def test_verify_finds_the_chain_intact(projected: Projected) -> None:
    report = verify_audit(projected.log, projected.live, projected.decoder)
    assert report.ok, report.problems
    assert report.events == report.audit_rows == projected.log.head_position()


def test_verify_names_an_edited_audit_row_and_an_edited_or_removed_event(
        projected: Projected) -> None:
    live = projected.live
    live.audit[5] = live.audit[5]._replace(summary="nothing to see here")
    report = verify_audit(projected.log, live, projected.decoder)
    assert [(p.kind, p.position) for p in report.problems] == [
        ("chain_broken", live.audit[5].position)]

    target = live.audit[20]
    changed = EditedLog(projected.log, target.position, b'{"amount_nanos": 1}')
    kinds = {p.kind for p in verify_audit(changed, live, projected.decoder).problems
             if p.position == target.position}
    assert "changed" in kinds
    removed = EditedLog(projected.log, target.position, None)
    assert ("removed", target.position) in {
        (p.kind, p.position) for p in verify_audit(removed, live, projected.decoder).problems}


def test_verify_names_a_gap_in_an_aggregates_versions() -> None:
    """An event stored on top of a version that was never stored (the lost-commit cache bug
    of issue 10's third pass did this) is found, and only that event."""
    with memory_ledger() as ledger:
        team = mixed_history(ledger)
        log, decoder, live = memory_log(ledger), EventDecoder(ledger.mapper), MemoryViewStore()
        last = ledger.recorder.select_events(team.team_id, desc=True, limit=1)[0]
        ledger.recorder.insert_events([StoredEvent(
            originator_id=last.originator_id, originator_version=last.originator_version + 2,
            topic=last.topic, state=last.state)])
        ProjectionRunner(log, live, decoder, batch_size=16).catch_up()
        report = verify_audit(log, live, decoder)
    assert [(p.kind, p.aggregate_id, p.position) for p in report.problems] == [
        ("version_gap", team.team_id, log.head_position())]


def _timestamp_of(projected: Projected, event_type: str) -> Any:
    row = next(r for r in projected.live.audit if r.event_type == event_type)
    return row.recorded_at


def test_balance_as_of_a_moment_folds_the_history_up_to_it(projected: Projected) -> None:
    refunded_at = _timestamp_of(projected, "Team.TopUpRefunded")
    answer = balance_as_of(projected.log, projected.decoder, projected.team.team_id,
                           refunded_at, MemoryViewStore)
    # Two top-ups (100.00 and 5.00 USD) and a refund of 2.00 USD; nothing spent yet.
    assert answer["balance"]["balance_nanos"] == 103_000_000_000
    assert answer["balance"]["spent_nanos"] == 0
    assert answer["as_of"] == refunded_at.isoformat()
    assert answer["lag_events"] > 0

    now = balance_as_of(projected.log, projected.decoder, projected.team.team_id,
                        refunded_at + timedelta(days=3650), MemoryViewStore)
    assert now["balance"] == projected.live.teams[projected.team.team_id].as_dict()
    assert now["lag_events"] == 0


def test_balance_as_of_a_moment_before_the_team_existed_says_so(projected: Projected) -> None:
    registered_at = _timestamp_of(projected, "Team.Registered")
    with pytest.raises(TeamNotInHistoryError):
        balance_as_of(projected.log, projected.decoder, projected.team.team_id,
                      registered_at - timedelta(seconds=1), MemoryViewStore)
