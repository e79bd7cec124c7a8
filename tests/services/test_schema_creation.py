"""The event store's schema is created once, and opening the ledger concurrently is safe."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from adapters.postgres.event_store import EVENT_STORE_SCHEMA_VERSION, SchemaVersionError
from adapters.runtime.settings import eventsourcing_env
from services.ledger import Ledger
from tests.services.support import OWNER

THREADS = 8
PROCESSES = 2
JOIN_SECONDS_MAX = 120

OPEN_AND_REGISTER = """
import sys
from adapters.runtime.settings import eventsourcing_env
from services.actor import Actor
from services.ledger import Ledger
ledger = Ledger(env=eventsourcing_env(sys.argv[1]))
ledger.register_team(team_key=sys.argv[2], name="T", currency="USD", timezone="UTC",
                     actor=Actor("olivia"))
ledger.close()
"""


def _open_and_register(url: str, key: str) -> None:
    ledger = Ledger(env=eventsourcing_env(url))
    try:
        ledger.register_team(team_key=key, name=key, currency="USD", timezone="UTC", actor=OWNER)
    finally:
        ledger.close()


def test_eight_threads_and_two_processes_open_a_fresh_database_at_once(
        database_url: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def open_one(n: int) -> None:
        try:
            start.wait()
            _open_and_register(database_url, f"thread-{n}")
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    root = Path(__file__).resolve().parents[2]
    processes = [subprocess.Popen([sys.executable, "-c", OPEN_AND_REGISTER, database_url,
                                   f"process-{n}"], cwd=root, stderr=subprocess.PIPE, text=True)
                 for n in range(PROCESSES)]
    threads = [threading.Thread(target=open_one, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_SECONDS_MAX)
    outputs = [p.communicate(timeout=JOIN_SECONDS_MAX)[1] for p in processes]
    assert errors == []
    assert [p.returncode for p in processes] == [0] * PROCESSES, outputs
    with psycopg.connect(database_url) as conn:
        teams = conn.execute("SELECT count(DISTINCT originator_id) FROM ledger_events").fetchone()
        versions = conn.execute("SELECT version FROM ledger_schema_version").fetchall()
    assert teams == (THREADS + PROCESSES,)
    assert versions == [(EVENT_STORE_SCHEMA_VERSION,)]


def test_an_ordinary_open_runs_no_ddl(database_url: str) -> None:
    Ledger(env=eventsourcing_env(database_url)).close()  # the first open creates the schema
    with psycopg.connect(database_url, autocommit=True) as conn:
        # An event trigger refuses every DDL command from now on.
        conn.execute("CREATE FUNCTION refuse_ddl() RETURNS event_trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN RAISE EXCEPTION 'DDL refused: %', tg_tag; END $$")
        conn.execute("CREATE EVENT TRIGGER refuse_ddl ON ddl_command_start "
                     "EXECUTE FUNCTION refuse_ddl()")
    _open_and_register(database_url, "after-init")


def test_opening_without_table_creation_names_the_missing_schema(database_url: str) -> None:
    env = {**eventsourcing_env(database_url), "CREATE_TABLE": "n"}
    with pytest.raises(SchemaVersionError, match="ledger init"):
        Ledger(env=env)
    Ledger(env=eventsourcing_env(database_url)).close()
    Ledger(env=env).close()
