"""Every `ledger` command answers bad input and unreachable servers with one line on standard
error naming what to fix, a non-zero exit, within a named bound, and never a traceback.
Each case of issue 8 item 11 is a test of its own, run through the real entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.cli.main import EXIT_BAD_INPUT, EXIT_UNAVAILABLE, main
from adapters.nats.connection import FIRST_CONNECT_WAIT_SECONDS
from adapters.runtime.server_files import free_port
from adapters.runtime.settings import CONNECT_TIMEOUT_SECONDS
from tests.integration.support import REPO_ROOT

# Python's start-up and imports on a busy machine, on top of the named connect bounds.
START_UP_ALLOWANCE_SECONDS = 30.0
COMMAND_TIMEOUT_SECONDS = FIRST_CONNECT_WAIT_SECONDS + CONNECT_TIMEOUT_SECONDS \
    + START_UP_ALLOWANCE_SECONDS


def ledger(args: list[str], env: dict[str, str],
           tmp_path: Path) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    full_env["LEDGER_DATA_DIR"] = str(tmp_path / "no-ledger-here")
    full_env["COLUMNS"] = "400"
    full_env.update(env)
    return subprocess.run([sys.executable, "-m", "adapters.cli", *args], env=full_env,
                          cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_SECONDS)


def assert_one_line(result: subprocess.CompletedProcess[str], code: int, *names: str) -> str:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == code, output
    # A command may have said what it was starting (a banner line); the error is one line, last.
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ledger ")]
    assert len(errors) == 1 and errors[0] == lines[-1] and len(lines) <= 2, result.stderr
    for name in names:
        assert name in errors[0], errors[0]
    return errors[0]


def unreachable_database_url() -> str:
    return f"postgresql://ledger:secret@127.0.0.1:{free_port()}/ledger"


def unreachable_nats_url() -> str:
    return f"nats://ledger:secret@127.0.0.1:{free_port()}"


def test_audit_export_into_a_missing_folder_names_the_folder(database_url: str,
                                                            tmp_path: Path) -> None:
    target = tmp_path / "missing" / "audit.csv"
    result = ledger(["audit", "export", "--team", "acme", "--output", str(target)],
                    {"LEDGER_DATABASE_URL": database_url}, tmp_path)
    assert_one_line(result, EXIT_BAD_INPUT, str(tmp_path / "missing"), "does not exist")


def test_an_unreachable_database_is_named_with_the_variable_to_check(tmp_path: Path) -> None:
    result = ledger(["balance", "--team", "acme"],
                    {"LEDGER_DATABASE_URL": unreachable_database_url()}, tmp_path)
    line = assert_one_line(result, EXIT_UNAVAILABLE, "LEDGER_DATABASE_URL")
    assert "secret" not in line  # the password is never printed


def test_a_database_url_that_is_not_a_url_is_refused(tmp_path: Path) -> None:
    result = ledger(["balance", "--team", "acme"], {"LEDGER_DATABASE_URL": "not a url"},
                    tmp_path)
    assert_one_line(result, EXIT_BAD_INPUT, "LEDGER_DATABASE_URL", "postgresql://")


def test_consume_refuses_partitions_outside_the_stream(tmp_path: Path) -> None:
    result = ledger(["consume", "--partitions", "99"],
                    {"LEDGER_DATABASE_URL": unreachable_database_url(),
                     "LEDGER_NATS_URL": unreachable_nats_url()}, tmp_path)
    assert_one_line(result, EXIT_BAD_INPUT, "--partitions", "99", "LEDGER_USAGE_PARTITIONS")


def test_a_batch_size_that_is_not_a_number_is_refused(tmp_path: Path) -> None:
    result = ledger(["consume"], {"LEDGER_DATABASE_URL": unreachable_database_url(),
                                  "LEDGER_NATS_URL": unreachable_nats_url(),
                                  "LEDGER_INGEST_BATCH_SIZE": "abc"}, tmp_path)
    assert_one_line(result, EXIT_BAD_INPUT, "LEDGER_INGEST_BATCH_SIZE", "'abc'")


def test_consume_against_an_unreachable_nats_stops_within_the_connect_bound(
        database_url: str, tmp_path: Path) -> None:
    result = ledger(["consume"], {"LEDGER_DATABASE_URL": database_url,
                                  "LEDGER_NATS_URL": unreachable_nats_url()}, tmp_path)
    line = assert_one_line(result, EXIT_UNAVAILABLE, "cannot connect to NATS", "LEDGER_NATS_URL")
    assert "secret" not in line


def test_demo_against_an_unreachable_nats_stops_within_the_connect_bound(
        database_url: str, tmp_path: Path) -> None:
    result = ledger(["demo", "--records", "10"],
                    {"LEDGER_DATABASE_URL": database_url,
                     "LEDGER_NATS_URL": unreachable_nats_url()}, tmp_path)
    assert_one_line(result, EXIT_UNAVAILABLE, "cannot connect to NATS")


def test_init_against_an_unreachable_nats_stops_within_the_connect_bound(
        database_url: str, tmp_path: Path) -> None:
    result = ledger(["init"], {"LEDGER_DATABASE_URL": database_url,
                               "LEDGER_NATS_URL": unreachable_nats_url()}, tmp_path)
    assert_one_line(result, EXIT_UNAVAILABLE, "cannot connect to NATS")


def test_project_once_refuses_a_nats_url_that_is_not_a_url(database_url: str,
                                                          tmp_path: Path) -> None:
    result = ledger(["project", "--once", "--nats-url", "garbage"],
                    {"LEDGER_DATABASE_URL": database_url}, tmp_path)
    assert_one_line(result, EXIT_BAD_INPUT, "--nats-url", "nats://")


def test_a_nats_url_that_is_not_a_url_is_refused(tmp_path: Path) -> None:
    result = ledger(["consume"], {"LEDGER_DATABASE_URL": unreachable_database_url(),
                                  "LEDGER_NATS_URL": "localhost:4222"}, tmp_path)
    assert_one_line(result, EXIT_BAD_INPUT, "LEDGER_NATS_URL", "nats://")


@pytest.mark.parametrize("command", [["balance", "--team", "acme"],
                                     ["authorize", "--account",
                                      "00000000-0000-0000-0000-000000000001"],
                                     ["replay"], ["audit", "verify"], ["project", "--once"],
                                     ["consume"], ["demo"], ["credentials", "producer"]])
def test_commands_without_a_running_ledger_say_so_and_start_no_server(
        command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # In process (the subprocess cases above cover the entry point): quicker, same main().
    for name in [k for k in os.environ if k.startswith("LEDGER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LEDGER_DATA_DIR", str(tmp_path / "no-ledger-here"))
    assert main(command) == EXIT_BAD_INPUT
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"ledger {command[0]}: no `ledger up` is running"), line
    assert "LEDGER_DATABASE_URL" in line and "\n" not in line
    assert not (tmp_path / "no-ledger-here").exists()  # nothing started, nothing created
