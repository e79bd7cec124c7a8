"""Running `ledger up` as a user would, in its own process group, and finding its servers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from adapters.runtime.composition import servers_file
from adapters.runtime.embedded_nats import nats_server_binary
from adapters.runtime.embedded_postgres import postgres_bin_dir
from adapters.runtime.server_processes import server_processes
from tests.integration.support import REPO_ROOT

START_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 30.0
COMMAND_TIMEOUT_SECONDS = 120.0
SERVERS_GONE_TIMEOUT_SECONDS = 20.0


def ledger_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env["LEDGER_DATA_DIR"] = str(data_dir)
    env["COLUMNS"] = "400"  # rich must not wrap the long temporary path
    env.update(extra)
    return env


class LedgerUp:
    """One `ledger up` in its own process group, like a command in a terminal."""

    def __init__(self, data_dir: Path, log: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.log = log
        self.env = ledger_env(data_dir, **env)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> LedgerUp:
        servers_file(self.data_dir).unlink(missing_ok=True)  # a kill -9 leaves it behind
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "adapters.cli", "up"],
                                            env=self.env, cwd=REPO_ROOT, stdout=out,
                                            stderr=subprocess.STDOUT, process_group=0)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not servers_file(self.data_dir).exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"ledger up did not start:\n{self.output()[-3000:]}")
            time.sleep(0.2)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def interrupt(self) -> int:
        """What a terminal's Ctrl-C does: SIGINT to the whole group."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(STOP_TIMEOUT_SECONDS)

    def kill_group(self) -> None:
        """kill -9 of the whole process group."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT_SECONDS)

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "adapters.cli", *args],
                              env={**self.env, **env}, cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=COMMAND_TIMEOUT_SECONDS)


def postgres_pids(data_dir: Path) -> list[int]:
    return server_processes(postgres_bin_dir() / "postgres", cwd=data_dir / "postgres" / "pgdata")


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postgres" / "pgdata" / "postmaster.pid").read_text().split()[0])


def nats_pids(data_dir: Path) -> list[int]:
    return server_processes(Path(nats_server_binary()),
                            argument=str(data_dir / "nats" / "nats.conf"))


def wait_until_no_servers(data_dir: Path) -> None:
    deadline = time.monotonic() + SERVERS_GONE_TIMEOUT_SECONDS
    while postgres_pids(data_dir) or nats_pids(data_dir):
        if time.monotonic() > deadline:
            raise AssertionError(f"servers still running on {data_dir}: PostgreSQL "
                                 f"{postgres_pids(data_dir)}, NATS {nats_pids(data_dir)}")
        time.sleep(0.2)
