"""The README is part of the product: its Quickstart and role table must match reality."""

from __future__ import annotations

import re
from pathlib import Path

from domain.roles import ROLE_MATRIX, Action, Role

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_role_table_equals_the_role_matrix() -> None:
    for action in Action:
        row = re.search(rf"^\| `{action.value}` \|(.*)\|$", README, re.MULTILINE)
        assert row is not None, f"README has no row for {action.value}"
        cells = [cell.strip() for cell in row.group(1).split("|")]
        expected = ["yes" if role in ROLE_MATRIX[action] else "no" for role in Role]
        assert cells == expected, action


def test_ci_runs_exactly_the_readme_test_command() -> None:
    quickstart = README.split("## Quickstart", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in quickstart.strip().splitlines()]
    assert len(commands) == 2, "the Quickstart holds exactly two commands: run, test"
    ci_script = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci_script
