"""A projection failure stops only the projections, names the event and position, turns health red.

The event that cannot be folded is a crafted stored event (a Team event whose state is not
JSON, inserted with SQL), and, for the resume after a fix, a test-only decoder that refuses one
position until it is "fixed".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from adapters.cli.main import main
from adapters.postgres.notification_log import PostgresNotificationLog
from adapters.postgres.view_status import projection_health
from adapters.postgres.view_store import PostgresViewStore
from adapters.runtime.projection_process import ledger_decoder, open_runner
from projections import runner as runner_module
from projections.decoding import EventDecoder, LogEntry
from projections.ports import ProjectionFailure
from projections.runner import ProjectionRunner
from services.backoff import Backoff
from tests.projections.history import OWNER, ledger_at, make_team, usage

WAIT_SECONDS_MAX = 60.0
POLL_SECONDS = 0.05
# Small batches, so that the failing event sits in the middle of one and isolation has to work.
BATCH_SIZE_EVENTS = 8


def _history_with_bad_event(database_url: str) -> tuple[int, Any, int]:
    """Events, one crafted event nobody can decode, then more events. Returns the crafted
    event's position, the team id and the adjustments (nanos) recorded before it."""
    with ledger_at(database_url) as ledger:
        team = make_team(ledger, accounts=2)
        for n in range(5):
            ledger.record_adjustment(team.team_id, f"before-{n}", 1_000, "before", OWNER)
        with psycopg.connect(database_url, autocommit=True) as conn:
            row = conn.execute(
                "INSERT INTO ledger_events (originator_id, originator_version, topic, state) "
                "VALUES (%s, 1, 'domain.team:Team.AdjustmentRecorded', 'not json'::bytea) "
                "RETURNING notification_id", (uuid4(),)).fetchone()
        assert row is not None
        for n in range(5):
            ledger.record_adjustment(team.team_id, f"after-{n}", 7, "after", OWNER)
    return int(row[0]), team.team_id, 5 * 1_000


def _run_until_failed(runner: ProjectionRunner) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=runner.run_forever, args=(stop,))
    thread.start()
    deadline = time.monotonic() + WAIT_SECONDS_MAX
    try:
        while runner.failed is None and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
    finally:
        stop.set()
        thread.join(WAIT_SECONDS_MAX)
    assert runner.failed is not None, "the runner did not stop on the failure"


def _read_models(database_url: str, team_id: Any) -> tuple[int, int, int]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT notification_id FROM ledger_views.tracking), "
            "(SELECT max(position) FROM ledger_views.audit), "
            "(SELECT adjusted_nanos FROM ledger_views.teams WHERE team_id = %s)",
            (team_id,)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


@pytest.fixture
def runner_parts(database_url: str) -> Iterator[tuple[PostgresNotificationLog, PostgresViewStore]]:
    log_source = PostgresNotificationLog(database_url)
    store = PostgresViewStore(database_url)
    try:
        yield log_source, store
    finally:
        store.close()
        log_source.close()


def test_an_event_that_cannot_be_projected_stops_the_projections_and_turns_health_red(
        database_url: str, runner_parts: tuple[PostgresNotificationLog, PostgresViewStore],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    bad_position, team_id, adjusted_before = _history_with_bad_event(database_url)
    log_source, store = runner_parts
    decoder = ledger_decoder(database_url)

    _run_until_failed(ProjectionRunner(log_source, store, decoder, batch_size=BATCH_SIZE_EVENTS))

    # Everything before the event is applied, nothing at or after it (no half batch).
    assert _read_models(database_url, team_id) == (bad_position - 1, bad_position - 1,
                                                   adjusted_before)
    health = projection_health(database_url)
    assert not health.ok
    assert f"log position {bad_position}" in health.message
    assert "Team.AdjustmentRecorded" in health.message
    assert "recorded 1 time(s)" in health.message

    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    monkeypatch.delenv("LEDGER_HEALTH_FILE", raising=False)
    assert main(["health"]) == 1
    assert f"log position {bad_position}" in capsys.readouterr().err.replace("\n", " ")

    # A restart without a fix fails again on the same event, and counts it.
    with open_runner(database_url) as runner:  # the production wiring, default batch size
        _run_until_failed(runner)
    assert "recorded 2 time(s)" in projection_health(database_url).message
    assert _read_models(database_url, team_id)[0] == bad_position - 1


class RefusingDecoder(EventDecoder):
    """A test-only handler: refuses the event at one position, as a bug in a fold would."""

    def __init__(self, decoder: EventDecoder, refused_position: int) -> None:
        super().__init__(decoder.mapper)
        self.refused_position = refused_position

    def decode(self, entry: LogEntry) -> Any:
        if entry.position == self.refused_position:
            raise ValueError("this fold has a bug")
        return super().decode(entry)


def test_a_restart_after_the_fix_resumes_from_the_failed_event_and_clears_health(
        database_url: str, runner_parts: tuple[PostgresNotificationLog, PostgresViewStore]
        ) -> None:
    with ledger_at(database_url) as ledger:
        team = make_team(ledger, accounts=1)
        for n in range(20):
            ledger.record_adjustment(team.team_id, f"adj-{n}", 10, "fix", OWNER)
        head = ledger.recorder.max_notification_id()
    assert head is not None
    refused = head - 7
    log_source, store = runner_parts
    decoder = ledger_decoder(database_url)

    broken = ProjectionRunner(log_source, store, RefusingDecoder(decoder, refused),
                              batch_size=BATCH_SIZE_EVENTS)
    _run_until_failed(broken)
    failure = store.failure()
    assert isinstance(failure, ProjectionFailure)
    assert (failure.position, failure.aggregate_id) == (refused, team.team_id)
    assert "this fold has a bug" in failure.error
    assert broken.position == refused - 1

    fixed = ProjectionRunner(log_source, store, decoder, batch_size=BATCH_SIZE_EVENTS)
    stop = threading.Event()
    thread = threading.Thread(target=fixed.run_forever, args=(stop,))
    thread.start()
    deadline = time.monotonic() + WAIT_SECONDS_MAX
    while (fixed.position < head or store.failure() is not None) \
            and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    stop.set()
    thread.join(WAIT_SECONDS_MAX)
    assert fixed.position == head
    assert store.failure() is None
    assert projection_health(database_url).ok
    assert _read_models(database_url, team.team_id)[2] == 20 * 10


def test_a_nul_in_a_charged_models_name_stops_the_projections_at_that_record(
        database_url: str, runner_parts: tuple[PostgresNotificationLog, PostgresViewStore]
        ) -> None:
    """Issue 8, item 2: a NUL in `model` used to make every batch fail on COPY, retried
    forever. The stored event is edited here (input validation refuses such a record now)."""
    with ledger_at(database_url) as ledger:
        team = make_team(ledger, accounts=1)
        start = datetime(2026, 11, 20, tzinfo=UTC)
        ledger.record_usage_batch([usage(team.account_ids[0], f"u{n}", start) for n in range(6)])
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT notification_id, state FROM ledger_events WHERE topic LIKE "
                           "'%UsageRecorded' ORDER BY notification_id OFFSET 3 LIMIT 1"
                           ).fetchone()
        assert row is not None and b'"model":"m1"' in row[1]
        conn.execute("UPDATE ledger_events SET state = %s WHERE notification_id = %s",
                     (row[1].replace(b'"model":"m1"', b'"model":"evil\\u0000model"'), row[0]))
    poisoned = int(row[0])
    log_source, store = runner_parts

    runner = ProjectionRunner(log_source, store, ledger_decoder(database_url))
    _run_until_failed(runner)

    failure = store.failure()
    assert failure is not None
    assert (failure.position, failure.event_type) == (poisoned, "Account.UsageRecorded")
    assert runner.position == poisoned - 1
    assert not projection_health(database_url).ok


class LosingConnectionStore:
    """The real store, whose commits fail as on a lost connection the first `losses` times."""

    def __init__(self, store: PostgresViewStore, losses: int) -> None:
        self.store = store
        self.losses = losses
        self.recorded: list[ProjectionFailure] = []
        self.cleared = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def finish(self, staged: Any) -> None:
        if self.losses > 0:
            self.losses -= 1
            self.store.abort(staged)
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        self.store.finish(staged)

    def record_failure(self, failure: ProjectionFailure) -> None:
        self.recorded.append(failure)
        self.store.record_failure(failure)

    def clear_failure(self) -> None:
        self.cleared += 1
        self.store.clear_failure()


def test_a_lost_connection_is_retried_reported_after_a_bound_and_cleared_on_recovery(
        database_url: str, runner_parts: tuple[PostgresNotificationLog, PostgresViewStore],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "RETRY_BACKOFF", Backoff(0.01, 0.02))
    with ledger_at(database_url) as ledger:
        team = make_team(ledger, accounts=1)
        head = ledger.recorder.max_notification_id()
    log_source, store = runner_parts
    flaky = LosingConnectionStore(store, losses=runner_module.TRANSIENT_FAILURES_MAX + 1)
    runner = ProjectionRunner(log_source, flaky, ledger_decoder(database_url))

    stop = threading.Event()
    thread = threading.Thread(target=runner.run_forever, args=(stop,))
    thread.start()
    deadline = time.monotonic() + WAIT_SECONDS_MAX
    while (runner.position != head or flaky.cleared == 0) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    stop.set()
    thread.join(WAIT_SECONDS_MAX)

    # Red after the bound (no event to blame), retried on, green again once a batch committed.
    assert len(flaky.recorded) == 2  # the 5th and the 6th loss in a row
    assert flaky.recorded[0].aggregate_id is None
    assert "server closed the connection" in flaky.recorded[0].error
    assert runner.position == head
    assert store.failure() is None
    assert _read_models(database_url, team.team_id)[0] == head
