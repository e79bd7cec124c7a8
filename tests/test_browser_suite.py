"""The browser tests (tests/browser), run in a pytest process of their own.

Playwright's sync API leaves an event loop running on the main thread of the process that
started it, so the browser tests cannot share a worker with the async tests: this test runs them
in a separate `pytest` process and fails with that run's report when any of them fails. Run them
alone with `LEDGER_BROWSER_TESTS_RUN=1 uv run pytest tests/browser -n 0`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BROWSER_RUN_VARIABLE, BROWSER_TESTS

ROOT = Path(__file__).resolve().parent.parent
# Installing chromium on a fresh machine (about 20 s), then some 20 pages and screenshots.
BROWSER_RUN_TIMEOUT_SECONDS = 900
REPORT_TAIL_CHARACTERS = 20_000


@pytest.mark.timeout(BROWSER_RUN_TIMEOUT_SECONDS + 60)
def test_the_browser_tests_pass_in_a_process_of_their_own() -> None:
    env = {**os.environ, BROWSER_RUN_VARIABLE: "1"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", str(BROWSER_TESTS), "-n", "0",
         "-p", "no:cacheprovider", "-q", "-rfE"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=BROWSER_RUN_TIMEOUT_SECONDS)
    report = (run.stdout + run.stderr)[-REPORT_TAIL_CHARACTERS:]
    assert run.returncode == 0, f"the browser tests failed (exit {run.returncode}):\n{report}"
    assert " passed" in run.stdout and "no tests ran" not in run.stdout, report
