"""End to end through the real entry point: `ledger up` on embedded servers, one per data folder,
other commands attached to it, its servers dying with it, stale servers swept, Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from adapters.cli.main import EXIT_BAD_INPUT
from adapters.cli.runtime import EXIT_SERVER_DIED
from adapters.runtime.composition import open_ledger, servers_file
from adapters.runtime.embedded_nats import nats_server_binary
from adapters.runtime.embedded_postgres import postgres_bin_dir
from adapters.runtime.server_files import free_port
from domain.tokens import PrincipalKind
from services.tokens import Tokens
from tests.integration.ledger_up_support import (
    STOP_TIMEOUT_SECONDS,
    LedgerUp,
    nats_pids,
    postgres_pids,
    postmaster_pid,
    wait_until_no_servers,
)

pytestmark = pytest.mark.slow

DEMO_RECORDS = 400
SERVER_DEATH_NOTICED_SECONDS = 60.0


def test_ledger_up_runs_the_demo_and_stops_cleanly_on_ctrl_c(ledger_data_dir: Path,
                                                             tmp_path: Path) -> None:
    up = LedgerUp(ledger_data_dir, tmp_path / "up.log").start()
    try:
        written = json.loads(servers_file(ledger_data_dir).read_text())
        assert stat.S_IMODE(servers_file(ledger_data_dir).stat().st_mode) == 0o600
        producer = up.run("credentials", "producer")
        assert producer.returncode == 0, producer.stderr
        assert producer.stdout.strip() == written["producer_nats_url"]
        assert producer.stdout.startswith("nats://producer:")

        demo = up.run("demo", "--records", str(DEMO_RECORDS))
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "alice" in demo.stdout + demo.stderr
        # A new ledger printed its first operator token once; it logs in as an operator.
        tokens = re.findall(r"ldg_[A-Za-z0-9_-]+", up.output())
        assert len(tokens) == 1, up.output()[-3000:]
        ledger = open_ledger(written["database_url"])
        try:
            token = Tokens(ledger).authenticate(tokens[0])
            assert token is not None and token.kind == PrincipalKind.OPERATOR
        finally:
            ledger.close()
    finally:
        code = up.interrupt()
    output = up.output()
    assert code == 0, output[-3000:]
    assert str(ledger_data_dir.resolve()) in output
    assert "postgresql://postgres:***@" in output and "nats://ledger:***@" in output
    assert written["database_url"].split("@")[0] not in output  # no password printed
    assert "ledger stopped" in output
    # The servers outlive the Ctrl-C until the runners have stopped: nothing loses its database.
    assert "Traceback" not in output, output[-3000:]
    assert not servers_file(ledger_data_dir).exists()
    wait_until_no_servers(ledger_data_dir)
    # The embedded servers' files stay for the next run.
    assert (ledger_data_dir / "postgres" / "pgdata" / "PG_VERSION").exists()
    assert (ledger_data_dir / "nats" / "jetstream").is_dir()

    # A second start on the same folder has one already: nothing is printed again.
    again = LedgerUp(ledger_data_dir, tmp_path / "up-again.log").start()
    assert again.interrupt() == 0
    assert "ldg_" not in again.output()


def test_one_ledger_up_per_data_folder_and_read_commands_leave_its_servers_alone(
        ledger_data_dir: Path, tmp_path: Path) -> None:
    up = LedgerUp(ledger_data_dir, tmp_path / "up.log").start()
    try:
        server = postmaster_pid(ledger_data_dir)
        second = up.run("up")
        assert second.returncode == EXIT_BAD_INPUT, second.stdout + second.stderr
        assert second.stderr.strip().startswith("ledger up: another `ledger up` (pid ")
        assert str(ledger_data_dir.resolve()) in second.stderr
        assert "Traceback" not in second.stderr

        # Read commands attach to the running servers (they used to start their own on the
        # same folder and `pg_ctl stop` the live one).
        for command in (["balance", "--team", "nobody"], ["audit", "verify"],
                        ["project", "--once"], ["replay"]):
            result = up.run(*command)
            assert "Traceback" not in result.stdout + result.stderr, result.stderr
            assert "no `ledger up` is running" not in result.stderr
        assert up.run("audit", "verify").returncode == 0
        assert postmaster_pid(ledger_data_dir) == server
        assert up.process is not None and up.process.poll() is None
        assert postgres_pids(ledger_data_dir) and len(nats_pids(ledger_data_dir)) == 1
    finally:
        assert up.interrupt() == 0, up.output()[-3000:]


def test_kill_9_of_ledger_up_takes_its_servers_along(ledger_data_dir: Path,
                                                    tmp_path: Path) -> None:
    up = LedgerUp(ledger_data_dir, tmp_path / "up.log").start()
    assert postgres_pids(ledger_data_dir) and nats_pids(ledger_data_dir)
    up.kill_group()
    # They used to run on in sessions of their own; now the kernel tells them we died.
    wait_until_no_servers(ledger_data_dir)
    again = LedgerUp(ledger_data_dir, tmp_path / "again.log").start()
    assert again.interrupt() == 0, again.output()[-3000:]


def test_stale_servers_of_the_folder_are_stopped_before_new_ones_start(
        ledger_data_dir: Path, tmp_path: Path) -> None:
    first = LedgerUp(ledger_data_dir, tmp_path / "first.log").start()
    assert first.interrupt() == 0
    wait_until_no_servers(ledger_data_dir)
    # Servers left running on the folder by something that did not take them along (an older
    # ledger, a kill -9 where setpriv is missing): started by hand, in sessions of their own.
    nats_stale = subprocess.Popen(
        [nats_server_binary(), "-c", str(ledger_data_dir / "nats" / "nats.conf"), "-p", "-1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    pgdata = ledger_data_dir / "postgres" / "pgdata"
    owner = pgdata.stat()
    postgres_stale = subprocess.Popen(
        [str(postgres_bin_dir() / "postgres"), "-D", str(pgdata), "-p", str(free_port()),
         "-c", "listen_addresses=", "-c",
         f"unix_socket_directories={ledger_data_dir / 'postgres' / 'socket'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        cwd=pgdata, user=owner.st_uid, group=owner.st_gid, extra_groups=[])
    try:
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while not (pgdata / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert postgres_stale.pid in postgres_pids(ledger_data_dir)
        assert nats_stale.pid in nats_pids(ledger_data_dir)

        up = LedgerUp(ledger_data_dir, tmp_path / "up.log").start()
        try:
            assert postgres_stale.wait(STOP_TIMEOUT_SECONDS) is not None
            assert nats_stale.wait(STOP_TIMEOUT_SECONDS) is not None
            assert len(nats_pids(ledger_data_dir)) == 1
            assert postmaster_pid(ledger_data_dir) != postgres_stale.pid
            assert up.run("audit", "verify").returncode == 0
        finally:
            assert up.interrupt() == 0, up.output()[-3000:]
    finally:
        for stale in (nats_stale, postgres_stale):
            if stale.poll() is None:
                stale.kill()
                stale.wait()


def test_ledger_up_exits_non_zero_with_the_reason_when_its_database_dies(
        ledger_data_dir: Path, tmp_path: Path) -> None:
    up = LedgerUp(ledger_data_dir, tmp_path / "up.log").start()
    assert up.process is not None
    try:
        os.kill(postmaster_pid(ledger_data_dir), signal.SIGKILL)
        code = up.process.wait(SERVER_DEATH_NOTICED_SECONDS)
    finally:
        if up.process.poll() is None:
            up.kill_group()
    output = up.output()
    assert code == EXIT_SERVER_DIED, output[-3000:]
    assert "ledger up: the embedded PostgreSQL server exited" in output
    assert "postgres.log" in output
    assert "Traceback" not in output, output[-3000:]
    wait_until_no_servers(ledger_data_dir)
    # The next start recovers.
    again = LedgerUp(ledger_data_dir, tmp_path / "again.log").start()
    assert again.run("audit", "verify").returncode == 0
    assert again.interrupt() == 0
