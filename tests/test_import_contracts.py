"""The layering holds: `domain` imports none of ours, `services` and `projections` import no
`adapters`, and nothing shipped imports `tests` or `bench`. The contracts live in pyproject.toml
([tool.importlinter]); import-linter checks them and names the offending import."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LINT_TIMEOUT_SECONDS = 120


def test_the_import_contracts_of_the_layers_are_kept() -> None:
    lint_imports = shutil.which("lint-imports")
    assert lint_imports is not None, "import-linter is a dev dependency: run `uv sync`"
    result = subprocess.run([lint_imports, "--no-cache"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=LINT_TIMEOUT_SECONDS)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout
