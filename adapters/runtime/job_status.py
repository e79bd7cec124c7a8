"""The status file of a periodic `ledger up` job (the Stripe reconciliation, the invoicing):
its last pass as JSON in the data folder, for operators and monitoring."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any


def write_job_status(path: Path, report: Any) -> Path:
    """`report` (a dataclass with a `clean` property) as JSON at `path`, replaced whole, so a
    reader never sees half a file."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({**asdict(report), "clean": report.clean}, indent=2))
    temporary.replace(path)
    return path
