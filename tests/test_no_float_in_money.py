"""No float in money paths: the domain and service code never makes or annotates a float."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MONEY_PACKAGES = ("domain", "services")


def float_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    # Durations are seconds, not money: `SOMETHING_SECONDS = 0.5` is the one float allowed.
    durations = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Assign)
                 and all(isinstance(t, ast.Name) and t.id.endswith("_SECONDS")
                         for t in node.targets)}
    found = []
    for node in ast.walk(tree):
        if id(node) in durations:
            continue
        if isinstance(node, ast.Name) and node.id == "float":
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} uses float")
        if isinstance(node, ast.Constant) and isinstance(node.value, float):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} has float literal "
                         f"{node.value!r}")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} divides with / (use //)")
    return found


def test_domain_and_services_make_no_floats() -> None:
    found = [use for package in MONEY_PACKAGES
             for path in sorted((ROOT / package).rglob("*.py")) for use in float_uses(path)]
    assert found == []
