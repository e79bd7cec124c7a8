"""An HTTP worker that starts while PostgreSQL is away waits for it, and never prints a traceback.

Found by the database-restart crash test (tests/integration/test_crash_recovery.py): the worker
group starts a worker again whenever one exits, and one started while PostgreSQL was restarting
died on its first connection with a traceback, to be replaced at once by another doing the same.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from adapters.http import worker
from adapters.runtime.embedded_postgres import EmbeddedPostgres

# Longer than eventsourcing's own wait for a pooled connection (5 s by default), so the worker
# sees at least one failed attempt and tries again.
ABSENT_SECONDS = 7.0


def test_a_starting_worker_waits_for_a_database_that_comes_back(
        work_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    # In the session's folder: PostgreSQL's own user must be able to enter it.
    server = EmbeddedPostgres(work_dir / "postgres-worker-wait", durable=False).start()
    database_url = server.create_database("ledger")
    server.stop()
    with caplog.at_level(logging.WARNING, logger="ledger.http.worker"), \
            ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        opening = pool.submit(worker.open_app, database_url, None)
        time.sleep(ABSENT_SECONDS)
        assert not opening.done()
        server.start()  # in the main thread: the launcher sets signal handlers
        try:
            ledger, app = opening.result(timeout=worker.DATABASE_WAIT_SECONDS)
            try:
                assert time.monotonic() - started >= ABSENT_SECONDS
                assert app.state.database_url == database_url
                assert ledger.keyed.counter_values() == {}  # the ledger reads the database
            finally:
                app.state.pool.close()
                ledger.close()
        finally:
            server.stop()
    waits = [r.getMessage() for r in caplog.records]
    assert waits and all("the database is not reachable" in w for w in waits)
    assert all("Traceback" not in w and "\n" not in w for w in waits)


def test_a_worker_gives_up_on_an_absent_database_with_one_line_and_exit_code_1() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listening = socket.create_server(("127.0.0.1", 0))
    script = (
        "import sys\n"
        "from adapters.http import worker\n"
        "worker.DATABASE_WAIT_SECONDS = 1.0\n"
        "sys.exit(worker.main(sys.argv[1:]))\n")
    env = {"PATH": "/usr/bin:/bin",
           worker.DATABASE_URL_ENV: f"postgresql://ledger:secret@127.0.0.1:{port}/ledger"}
    with listening:
        result = subprocess.run(
            [sys.executable, "-c", script, "--fd", str(listening.fileno()),
             "--host", "127.0.0.1", "--port", str(listening.getsockname()[1])],
            env=env, pass_fds=[listening.fileno()], capture_output=True, text=True,
            timeout=60, cwd=Path(worker.__file__).resolve().parents[2])
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    # One line per attempt while it waits (here the first attempt outlasts the wait), then one
    # line saying why it stops.
    assert "stops: the database at" in output
    assert "did not answer within 1s" in output and worker.DATABASE_URL_ENV in output
