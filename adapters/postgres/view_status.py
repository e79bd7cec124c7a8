"""The projections' status row in PostgreSQL: a recorded failure, and what health says.

The runner records a failure (the event, its position, the error, a count) in
`<schema>.status` and clears it once a batch commits past it; `ledger health` reads it through
`projection_health` and is red while it is there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from adapters.postgres.view_schema import (
    EVENTS_TABLE,
    LIVE_SCHEMA,
    TRACKING_NAME,
    connect,
    q,
)
from projections.ports import ProjectionFailure

# A failure's error text is cut to this many characters before it is stored.
FAILURE_ERROR_LENGTH_MAX = 2000
STATUS_OK = "ok"
STATUS_FAILED = "failed"


def read_failure(conn: psycopg.Connection[Any], schema: str) -> ProjectionFailure | None:
    row = conn.execute(q("SELECT position, aggregate_id, aggregate_version, event_type, error, "
                          "failures FROM {s}.status WHERE name = %s AND state = %s", schema),
                       (TRACKING_NAME, STATUS_FAILED)).fetchone()
    if row is None:
        return None
    return ProjectionFailure(position=row[0], aggregate_id=row[1], aggregate_version=row[2],
                             event_type=row[3], error=row[4], failures=row[5])


def record_failure(conn: psycopg.Connection[Any], schema: str, failure: ProjectionFailure) -> None:
    """Record (and count) a failure, in its own transaction: the batch it broke is gone."""
    conn.execute(q(
        "INSERT INTO {s}.status AS s VALUES (%s, %s, %s, %s, %s, %s, %s, 1, now()) "
        "ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state, "
        "position = EXCLUDED.position, aggregate_id = EXCLUDED.aggregate_id, "
        "aggregate_version = EXCLUDED.aggregate_version, event_type = EXCLUDED.event_type, "
        "error = EXCLUDED.error, failures = s.failures + 1, updated_at = now()", schema),
        (TRACKING_NAME, STATUS_FAILED, failure.position, failure.aggregate_id,
         failure.aggregate_version, failure.event_type,
         failure.error[:FAILURE_ERROR_LENGTH_MAX]))


def clear_failure(conn: psycopg.Connection[Any], schema: str) -> None:
    """The runner moved past what failed: green again (the count of failures stays)."""
    conn.execute(q("UPDATE {s}.status SET state = %s, updated_at = now() WHERE name = %s "
                   "AND state <> %s", schema), (STATUS_OK, TRACKING_NAME, STATUS_OK))


@dataclass(frozen=True)
class ProjectionHealth:
    ok: bool
    message: str


def projection_health(database_url: str, schema: str = LIVE_SCHEMA) -> ProjectionHealth:
    """What `ledger health` says about the projections: red while they are stopped on a failure
    (or the database cannot be reached), green with how far behind the log they are."""
    try:
        with connect(database_url) as conn:
            present = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                                   (f'"{schema}".status',)).fetchone()
            if not present or not present[0]:
                return ProjectionHealth(True, "projections have not started yet")
            failure = read_failure(conn, schema)
            row = conn.execute(q(
                "SELECT (SELECT notification_id FROM {s}.tracking WHERE name = %s), "
                f"(SELECT coalesce(max(notification_id), 0) FROM public.{EVENTS_TABLE})",
                schema), (TRACKING_NAME,)).fetchone()
    except psycopg.Error as error:
        return ProjectionHealth(False, f"read-model database unreachable: {error}".strip())
    if failure is not None:
        return ProjectionHealth(False, failure.describe())
    position, head = (int(row[0]), int(row[1])) if row else (0, 0)
    return ProjectionHealth(True, f"projections at log position {position} of {head}")


