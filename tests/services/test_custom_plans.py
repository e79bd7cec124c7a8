"""Every ledger session plans each statement for its own parameters (no cached generic plans).

psycopg and eventsourcing prepare their statements, and PostgreSQL then caches a generic plan
for a prepared statement after five executions, chosen from the table's size at that moment. A
process that starts on a fresh database (a new deployment, a demo) thus kept a sequential scan
for the idempotency-key lookup and for event reads, and paid it on every batch as the tables
grew: measured on 2026-12-04, a lookup of 1,000 keys took 3.0-3.5 s at 60,000 keys (1.6-3 ms
planned afresh), and an event read 30-37 ms at 300,000 events. These tests assert that no
ledger session runs a generic plan, whatever its tables held when it started.
"""

from __future__ import annotations

import os
from uuid import uuid4

import psycopg
import pytest

from adapters.runtime.composition import open_ledger
from adapters.runtime.settings import (
    POSTGRES_OPTIONS_VARIABLE,
    apply_postgres_session_options,
    eventsourcing_env,
)
from services.ledger import Ledger

# More executions than PostgreSQL's five custom plans before it may switch to a generic one.
EXECUTIONS = 12


def test_the_key_lookup_and_event_reads_never_use_a_generic_plan(database_url: str) -> None:
    # One session, so that every statement below ran in the one inspected.
    ledger = Ledger(env=eventsourcing_env(database_url) | {"POSTGRES_POOL_SIZE": "1",
                                                          "POSTGRES_MAX_OVERFLOW": "0"})
    try:
        for number in range(EXECUTIONS):
            # Empty tables: the moment a cached generic plan would be a sequential scan.
            assert ledger.keyed.select_keys("usage", [f"absent-{number}-{i}"
                                                      for i in range(50)]) == {}
            assert list(ledger.recorder.select_events(uuid4())) == []
        with ledger.recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
            rows = conn.execute(
                "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements "
                "WHERE statement LIKE '%idempotency_keys%' OR statement LIKE '%ledger_events%'"
            ).fetchall()
    finally:
        ledger.close()
    lookups = [row for row in rows if "idempotency_keys" in row["statement"]]
    reads = [row for row in rows if row["statement"].lstrip().upper().startswith("SELECT")
             and "ledger_events" in row["statement"]]
    assert lookups and reads, rows
    assert [row["generic_plans"] for row in lookups + reads] == [0] * len(lookups + reads)
    assert sum(row["custom_plans"] for row in lookups) >= EXECUTIONS
    assert sum(row["custom_plans"] for row in reads) >= EXECUTIONS


def test_the_ledgers_own_connections_plan_afresh_too(database_url: str) -> None:
    open_ledger(database_url).close()  # as every ledger process does first
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SHOW plan_cache_mode").fetchone() == ("force_custom_plan",)


def test_an_operators_own_session_options_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(POSTGRES_OPTIONS_VARIABLE, "-c statement_timeout=5s")
    apply_postgres_session_options()
    apply_postgres_session_options()  # idempotent
    assert os.environ[POSTGRES_OPTIONS_VARIABLE] == (
        "-c statement_timeout=5s -c plan_cache_mode=force_custom_plan")


def test_an_operators_own_plan_cache_mode_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(POSTGRES_OPTIONS_VARIABLE, "-c plan_cache_mode=auto")
    apply_postgres_session_options()
    assert os.environ[POSTGRES_OPTIONS_VARIABLE] == "-c plan_cache_mode=auto"
