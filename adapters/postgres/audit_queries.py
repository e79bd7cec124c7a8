"""The audit trail for auditors: a team's rows from PostgreSQL, written as CSV or JSON lines.

`ledger audit export` and the HTTP and dashboard exports write this format. Verifying the chain
is `projections.audit_verify`, on the store's `audit_rows` (`PostgresViewStore`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import IO, Any
from uuid import UUID

import psycopg

from adapters.postgres.view_schema import LIVE_SCHEMA
from adapters.postgres.view_store import AUDIT_COLUMNS, TABLE_FETCH_ROWS

EXPORT_COLUMNS = AUDIT_COLUMNS


def team_audit_rows(database_url: str, team_id: UUID) -> Iterator[dict[str, Any]]:
    with psycopg.connect(database_url) as conn, conn.cursor(name="audit_export") as cur:
        cur.itersize = TABLE_FETCH_ROWS
        cur.execute(f"SELECT {', '.join(EXPORT_COLUMNS)} FROM {LIVE_SCHEMA}.audit "
                    "WHERE team_id = %s ORDER BY position", (team_id,))
        for row in cur:
            yield dict(zip(EXPORT_COLUMNS, row, strict=True))


def _plain(value: Any) -> Any:
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if value is None or isinstance(value, bool | int | str):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "as_integer_ratio") and not isinstance(value, float):
        return int(value)  # numeric money columns: Decimal with no fraction
    return str(value)


def export(rows: Iterator[dict[str, Any]], out: IO[str], fmt: str) -> int:
    count = 0
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(EXPORT_COLUMNS)
        for row in rows:
            writer.writerow(["" if v is None else _plain(v) for v in row.values()])
            count += 1
    elif fmt == "jsonl":
        for row in rows:
            out.write(json.dumps({k: _plain(v) for k, v in row.items()}) + "\n")
            count += 1
    else:
        raise ValueError(f"export format must be csv or jsonl, not {fmt!r}")
    return count
