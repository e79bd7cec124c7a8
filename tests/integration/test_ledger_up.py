"""End to end through the real entry point: `ledger up` on embedded servers, `ledger demo` against
it, Ctrl-C, and the data folder kept for the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.support import REPO_ROOT

pytestmark = pytest.mark.slow

START_TIMEOUT_SECONDS = 90.0
DEMO_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 30.0
DEMO_RECORDS = 400


def wait_for_file(path: Path, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"ledger up did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def test_ledger_up_runs_the_demo_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    data_dir = tmp_path / "ledger-data"
    env = {k: v for k, v in os.environ.items()
           if k not in ("LEDGER_DATABASE_URL", "LEDGER_NATS_URL")}
    env["LEDGER_DATA_DIR"] = str(data_dir)
    env["COLUMNS"] = "400"  # rich must not wrap the long temporary path
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        # Its own process group, like a command in a terminal: Ctrl-C signals the whole group.
        up = subprocess.Popen([sys.executable, "-m", "adapters.cli", "up"], env=env,
                              cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                              process_group=0)
    try:
        wait_for_file(data_dir / "servers.json", up, log)
        demo = subprocess.run([sys.executable, "-m", "adapters.cli", "demo", "--records",
                               str(DEMO_RECORDS)], env=env, cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=DEMO_TIMEOUT_SECONDS)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "alice" in demo.stdout + demo.stderr
    finally:
        os.killpg(up.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        code = up.wait(STOP_TIMEOUT_SECONDS)
    output = log.read_text()
    assert code == 0, output[-3000:]
    assert str(data_dir.resolve()) in output
    assert "postgresql://" in output and "nats://" in output
    assert "ledger stopped" in output
    # The servers outlive the Ctrl-C until the runners have stopped: nothing loses its database.
    assert "Traceback" not in output, output[-3000:]
    assert not (data_dir / "servers.json").exists()
    # The embedded servers' files stay for the next run.
    assert (data_dir / "postgres" / "pgdata" / "PG_VERSION").exists()
    assert (data_dir / "nats" / "jetstream").is_dir()
