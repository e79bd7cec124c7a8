"""Fixtures of the browser tests: Debian's chromium for Playwright, and a running app.

Playwright's own browser download does not work here, so the tests drive Debian's `chromium`
package through pytest-playwright's `browser_type_launch_args` (its `executable_path`). On a
fresh machine the session installs the package first (as root, about 20 s), so CI runs these
tests without a separate step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_PATH = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
APT_TIMEOUT_SECONDS = 600
# Another apt run (another engineer, unattended upgrades) may hold dpkg's lock for a while.
APT_LOCK_WAIT_SECONDS = 300


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the browser tests after every other test.

    Playwright's sync API keeps an event loop running on the main thread for the rest of the
    session once its (session-scoped) fixture has started, and async tests after it could not
    start their own. The sort is stable: the order within each group is unchanged.
    """
    here = Path(__file__).resolve().parent
    items.sort(key=lambda item: item.path.resolve().is_relative_to(here))


def install_chromium() -> None:
    if os.geteuid() != 0:
        pytest.fail(f"{CHROMIUM_PATH} is missing and the tests are not root: install Debian's "
                    "chromium first (sudo apt-get install -y chromium)")
    if shutil.which("apt-get") is None:
        pytest.fail(f"{CHROMIUM_PATH} is missing and there is no apt-get to install it with")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = f"DPkg::Lock::Timeout={APT_LOCK_WAIT_SECONDS}"
    subprocess.run(["apt-get", "-o", lock, "update"], check=True, env=env,
                   timeout=APT_TIMEOUT_SECONDS, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "-o", lock, "install", "-y",
                    "chromium"], check=True, env=env, timeout=APT_TIMEOUT_SECONDS,
                   stdout=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    if not CHROMIUM_PATH.exists():
        install_chromium()
    assert CHROMIUM_PATH.exists(), f"installing chromium did not give {CHROMIUM_PATH}"
    return str(CHROMIUM_PATH)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any],
                             chromium_executable: str) -> dict[str, Any]:
    return {**browser_type_launch_args, "executable_path": chromium_executable,
            "args": CHROMIUM_ARGS}
