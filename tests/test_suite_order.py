"""The suite's longest files start first (tests/conftest.py): a renamed file would silently
lose its place and bring back the idle worker at the end of a run."""

from pathlib import Path

import pytest

from tests.conftest import LONGEST_FILES_FIRST

ROOT = Path(__file__).resolve().parent.parent


def test_every_file_named_to_run_first_exists() -> None:
    missing = [name for name in LONGEST_FILES_FIRST if not (ROOT / name).is_file()]
    assert missing == []


def test_xdist_hands_out_files_in_that_order(pytestconfig: pytest.Config) -> None:
    # By default xdist sorts files by their number of tests, most first, which put the one-test
    # browser suite last; `--no-loadscope-reorder` (pyproject's addopts) keeps our order.
    assert pytestconfig.getoption("loadscopereorder") is False
