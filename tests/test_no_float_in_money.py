"""No float in money paths: the domain and service code never makes or annotates a float."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MONEY_PACKAGES = ("domain", "services")
# Modules of those packages that hold no money at all, each with the reason. Every other module
# is checked; a module listed here may not import a money module (checked below).
NOT_MONEY = {
    "services/backoff.py": "waits before a retry, in seconds (random jitter is a float)",
}
MONEY_MODULES = ("domain.money", "domain.pricing", "domain.usage")


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
             for path in sorted((ROOT / package).rglob("*.py"))
             if str(path.relative_to(ROOT)) not in NOT_MONEY for use in float_uses(path)]
    assert found == []


def test_modules_exempt_from_the_float_rule_touch_no_money() -> None:
    for module in NOT_MONEY:
        text = (ROOT / module).read_text()
        assert not any(name in text for name in MONEY_MODULES), module
        assert "nanos" not in text, module
