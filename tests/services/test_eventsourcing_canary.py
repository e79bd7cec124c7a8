"""Canary for the eventsourcing upgrade: every private name the seam uses is still there, as used.

`services.eventsourcing_seam` is the only module allowed to touch private names of the library.
Each one it lists gets its own test, named after it, checking that it exists, is callable with
the parameters the seam passes (or, for an attribute, is set on a new instance), so an upgrade
that removes or changes one fails here first, by name. The installed version must be inside the
pin in pyproject.toml, and the pin inside what the seam was checked against.
"""

from __future__ import annotations

import inspect
import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from services.eventsourcing_seam import (
    PRIVATE_NAMES,
    SUPPORTED_VERSION_LOWEST,
    SUPPORTED_VERSION_PREFIX,
    PrivateName,
)

ROOT = Path(__file__).resolve().parents[2]
SOURCE_PACKAGES = ("domain", "services", "projections", "adapters", "bench", "tests")
SEAM = ROOT / "services" / "eventsourcing_seam.py"


def _eventsourcing_requirement() -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(d) for d in project["dependencies"]
             if Requirement(d).name == "eventsourcing"]
    assert len(found) == 1, "pyproject.toml must name eventsourcing exactly once"
    return found[0]


def test_installed_eventsourcing_is_inside_the_pin_and_the_seam_was_checked_against_it() -> None:
    installed = Version(version("eventsourcing"))
    requirement = _eventsourcing_requirement()
    assert installed in requirement.specifier, (
        f"eventsourcing {installed} is installed, pyproject pins {requirement.specifier}")
    assert str(installed).startswith(SUPPORTED_VERSION_PREFIX), (
        f"eventsourcing {installed}: services/eventsourcing_seam.py was checked against "
        f"{SUPPORTED_VERSION_PREFIX}x; re-check every private name it lists, then update it")
    assert installed.release >= SUPPORTED_VERSION_LOWEST


def test_the_pin_allows_no_version_the_seam_was_not_checked_against() -> None:
    specifier = _eventsourcing_requirement().specifier
    next_minor = SUPPORTED_VERSION_PREFIX.rstrip(".").split(".")
    next_minor[-1] = str(int(next_minor[-1]) + 1)
    assert not specifier.contains(".".join(next_minor)), (
        f"pyproject allows eventsourcing {'.'.join(next_minor)}, which the seam was not "
        "checked against")


@pytest.mark.parametrize("private", PRIVATE_NAMES,
                         ids=[f"{p.owner_topic.split(':')[1]}.{p.name}" for p in PRIVATE_NAMES])
def test_private_name_is_still_there_as_the_seam_uses_it(private: PrivateName) -> None:
    owner = private.owner()
    if private.parameters is None:
        assert private.name in vars(owner()), (
            f"{owner.__name__}() no longer sets {private.name}: "
            "update services/eventsourcing_seam.py")
        return
    member = getattr(owner, private.name, None)
    assert callable(member), (
        f"{owner.__name__}.{private.name} is gone: update services/eventsourcing_seam.py")
    parameters = tuple(inspect.signature(member).parameters)
    assert parameters == private.parameters, (
        f"{owner.__name__}.{private.name} now takes {parameters}, the seam calls it with "
        f"{private.parameters}: update services/eventsourcing_seam.py")


def test_no_module_but_the_seam_names_a_private_name_of_the_library() -> None:
    names = {p.name for p in PRIVATE_NAMES}
    pattern = re.compile(r"\.(" + "|".join(sorted(names)) + r")\b")
    offenders = [f"{path.relative_to(ROOT)}:{number}"
                 for package in SOURCE_PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
                 if path != SEAM
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if pattern.search(line)]
    assert offenders == [], f"only services/eventsourcing_seam.py may use them: {offenders}"
