"""`ledger project` as a process: it stops cleanly on SIGTERM, and a kill -9 loses nothing and
counts nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from adapters.runtime.auditor_tools import replay
from tests.projections.history import ledger_at, make_team, usage

REPO_ROOT = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 60.0
RECORDS = 24_000


def _start_project(database_url: str, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LEDGER_DATABASE_URL": database_url}
    env.pop("LEDGER_NATS_URL", None)
    return subprocess.Popen([sys.executable, "-m", "adapters.cli", "project", *args], env=env,
                            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _position(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        try:
            row = conn.execute("SELECT notification_id FROM ledger_views.tracking").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0


def _wait_for(condition: object, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():  # type: ignore[operator]
        assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "ledger project made no progress"
        time.sleep(0.01)


def test_ledger_project_follows_the_log_and_stops_cleanly_on_sigterm(database_url: str) -> None:
    with ledger_at(database_url) as ledger:
        team = make_team(ledger, "term", accounts=1)
        process = _start_project(database_url)
        try:
            head = ledger.recorder.max_notification_id() or 0
            _wait_for(lambda: _position(database_url) >= head, process)
            ledger.record_usage_batch([usage(team.account_ids[0], "after-start",
                                             datetime.now(UTC))])
            _wait_for(lambda: _position(database_url) >= head + 1, process)
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(WAIT_SECONDS)
    assert code == 0, process.stderr.read().decode()  # type: ignore[union-attr]


def test_a_projector_killed_with_sigkill_counts_nothing_twice(database_url: str) -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    with ledger_at(database_url) as ledger:
        team = make_team(ledger, "kill", accounts=20)
        for offset in range(0, RECORDS, 8_000):
            ledger.record_usage_batch([
                usage(team.account_ids[i % 20], f"u{i}", start + timedelta(minutes=i))
                for i in range(offset, offset + 8_000)])
        head = ledger.recorder.max_notification_id() or 0
        spent = sum(ledger.get_account(a).spent_nanos for a in team.account_ids)

    process = _start_project(database_url, "--once")
    _wait_for(lambda: _position(database_url) > 0, process)
    process.kill()
    process.wait(WAIT_SECONDS)
    killed_at = _position(database_url)
    assert 0 < killed_at < head, "the kill should land in the middle of the catch-up"

    restarted = _start_project(database_url, "--once")
    assert restarted.wait(WAIT_SECONDS) == 0, restarted.stderr.read().decode()  # type: ignore[union-attr]
    assert _position(database_url) == head
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT t.spent_nanos, (SELECT sum(requests) FROM "
                           "ledger_views.usage_daily), (SELECT count(*) FROM ledger_views.audit) "
                           "FROM ledger_views.teams t WHERE t.team_id = %s",
                           (team.team_id,)).fetchone()
    assert row is not None
    assert (int(row[0]), int(row[1]), row[2]) == (spent, RECORDS, head)
    assert replay(database_url).equal
