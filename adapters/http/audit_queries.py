"""The audit trail's queries, for the API (`routes_audit`) and the dashboard's audit page alike.

The audit trail is the projections' `audit` table (one hash-chained row per event). Filters are
bounded and passed as parameters (one `AuditFilters.where` for every reader); the API pages
forwards by log position with its freshness in the same statement (`api_page`), the dashboard
backwards, newest first (`audit_page`); both cursors are stable while new rows arrive. Export
streams the filtered rows in log order (`export_rows`) as CSV or JSON lines (`export_lines`),
with the columns `ledger audit export` writes and money as decimal strings.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from adapters.http.read_queries import Fresh, fresh_rows
from adapters.postgres.audit_queries import EXPORT_COLUMNS
from adapters.postgres.view_schema import LIVE_SCHEMA

AUDIT_PAGE_ROWS = 50
EXPORT_ROWS_MAX = 1_000_000
EXPORT_FETCH_ROWS = 5000
FILTER_TEXT_LENGTH_MAX = 200
ACTORS_LISTED_MAX = 500
EVENT_TYPE_PATTERN = re.compile(r"^[A-Za-z]{1,40}(\.[A-Za-z]{1,60})?$")

API_COLUMNS = ("position", "recorded_at", "aggregate_id", "aggregate_version", "event_type",
               "actor", "summary", "balance_before_nanos", "balance_after_nanos", "hash")
PAGE_COLUMNS = ("position", "recorded_at", "event_type", "actor", "summary",
                "balance_before_nanos", "balance_after_nanos")


class FilterError(ValueError):
    """A filter the user typed is not acceptable; the message says what to fix."""


@dataclass(frozen=True)
class AuditFilters:
    event_type: str = ""
    actor: str = ""
    text: str = ""
    since: datetime | None = None
    until: datetime | None = None
    aggregate_id: UUID | None = None

    @classmethod
    def parse(cls, event_type: str | None, actor: str | None, text: str | None,
              since: str | None, until: str | None) -> AuditFilters:
        event_type, actor, text = (v.strip() if v else "" for v in (event_type, actor, text))
        for name, value in (("event type", event_type), ("actor", actor), ("text", text)):
            if len(value) > FILTER_TEXT_LENGTH_MAX:
                raise FilterError(f"{name} filter must be at most {FILTER_TEXT_LENGTH_MAX} "
                                  "characters")
        if event_type and not EVENT_TYPE_PATTERN.match(event_type):
            raise FilterError("event type must look like Team.AdjustmentRecorded or "
                              "AdjustmentRecorded (letters and one dot)")
        return cls(event_type, actor, text, _moment("from", since), _moment("to", until))

    def as_query(self) -> dict[str, str]:
        pairs = {"event_type": self.event_type, "actor": self.actor, "q": self.text,
                 "since": self.since.isoformat() if self.since else "",
                 "until": self.until.isoformat() if self.until else ""}
        return {k: v for k, v in pairs.items() if v}

    def where(self, team_id: UUID) -> tuple[sql.Composable, list[Any]]:
        clauses: list[sql.Composable] = [sql.SQL("team_id = %s")]
        params: list[Any] = [team_id]
        if self.event_type:
            column = "event_type" if "." in self.event_type else "split_part(event_type, '.', 2)"
            clauses.append(sql.SQL(f"{column} = %s"))
            params.append(self.event_type)
        if self.actor:
            clauses.append(sql.SQL("actor = %s"))
            params.append(self.actor)
        if self.aggregate_id is not None:
            clauses.append(sql.SQL("aggregate_id = %s"))
            params.append(self.aggregate_id)
        if self.text:
            clauses.append(sql.SQL("summary ILIKE %s"))
            params.append("%" + self.text.replace("\\", "\\\\").replace("%", "\\%")
                          .replace("_", "\\_") + "%")
        if self.since:
            clauses.append(sql.SQL("recorded_at >= %s"))
            params.append(self.since)
        if self.until:
            clauses.append(sql.SQL("recorded_at < %s"))
            params.append(self.until)
        return sql.SQL(" AND ").join(clauses), params


def _moment(name: str, value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise FilterError(f"{name} must be a date or time like 2026-11-24 or "
                          f"2026-11-24T17:00:00+00:00, got {value[:40]!r}") from None
    if moment.tzinfo is None:
        # A plain date (what the date picker sends) is read as midnight UTC.
        moment = moment.replace(tzinfo=UTC)
    return moment


def audit_page(conn: psycopg.Connection[Any], team_id: UUID, filters: AuditFilters,
               before_position: int | None) -> tuple[list[dict[str, Any]], int | None]:
    """Up to `AUDIT_PAGE_ROWS` rows before the cursor, newest first, and the next cursor."""
    where, params = filters.where(team_id)
    if before_position is not None:
        where = sql.SQL(" AND ").join([where, sql.SQL("position < %s")])
        params.append(before_position)
    query = sql.SQL(
        "SELECT {cols} FROM {s}.audit WHERE {w} ORDER BY position DESC LIMIT %s").format(
        cols=sql.SQL(", ").join(map(sql.Identifier, PAGE_COLUMNS)),
        s=sql.Identifier(LIVE_SCHEMA), w=where)
    rows = conn.execute(query, [*params, AUDIT_PAGE_ROWS + 1]).fetchall()
    page = [dict(zip(PAGE_COLUMNS, row, strict=True)) for row in rows[:AUDIT_PAGE_ROWS]]
    next_cursor = page[-1]["position"] if len(rows) > AUDIT_PAGE_ROWS else None
    return page, next_cursor


def api_page(conn: psycopg.Connection[Any], team_id: UUID, filters: AuditFilters,
             after_position: int, limit: int) -> Fresh:
    """Up to `limit` + 1 rows after the cursor, in log order (`API_COLUMNS`), with the
    freshness of the snapshot they were read in (one statement)."""
    where, params = filters.where(team_id)
    query = sql.SQL("SELECT {cols} FROM {{s}}.audit WHERE {w} AND position > %s "
                    "ORDER BY position LIMIT %s").format(
        cols=sql.SQL(", ").join(map(sql.Identifier, API_COLUMNS)), w=where)
    return fresh_rows(conn, query.as_string(conn), [*params, after_position, limit + 1],
                      order_by="q.position")


def audit_row(conn: psycopg.Connection[Any], team_id: UUID,
              position: int) -> dict[str, Any] | None:
    query = sql.SQL("SELECT {cols} FROM {s}.audit WHERE team_id = %s AND position = %s").format(
        cols=sql.SQL(", ").join(map(sql.Identifier, PAGE_COLUMNS)), s=sql.Identifier(LIVE_SCHEMA))
    row = conn.execute(query, (team_id, position)).fetchone()
    return dict(zip(PAGE_COLUMNS, row, strict=True)) if row else None


def first_row_after(conn: psycopg.Connection[Any], team_id: UUID, after_position: int,
                    actor: str) -> int | None:
    """The position of the first audit row of this team and actor after a position."""
    row = conn.execute(sql.SQL("SELECT min(position) FROM {s}.audit WHERE team_id = %s AND "
                               "position > %s AND actor = %s").format(
        s=sql.Identifier(LIVE_SCHEMA)), (team_id, after_position, actor)).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def event_types(conn: psycopg.Connection[Any], team_id: UUID) -> list[str]:
    rows = conn.execute(sql.SQL("SELECT DISTINCT event_type FROM {s}.audit WHERE team_id = %s "
                                "ORDER BY 1").format(s=sql.Identifier(LIVE_SCHEMA)),
                        (team_id,)).fetchall()
    return [r[0] for r in rows]


def actors(conn: psycopg.Connection[Any], team_id: UUID) -> list[str]:
    """Who acted in this team (people, accounts, systems), for the actor filter."""
    rows = conn.execute(sql.SQL("SELECT DISTINCT actor FROM {s}.audit WHERE team_id = %s AND "
                                "actor IS NOT NULL ORDER BY 1 LIMIT %s").format(
        s=sql.Identifier(LIVE_SCHEMA)), (team_id, ACTORS_LISTED_MAX)).fetchall()
    return [r[0] for r in rows]


def export_rows(database_url: str, team_id: UUID,
                filters: AuditFilters) -> Iterator[dict[str, Any]]:
    """The filtered rows in log order, streamed with a server-side cursor, at most the limit."""
    where, params = filters.where(team_id)
    query = sql.SQL("SELECT {cols} FROM {s}.audit WHERE {w} ORDER BY position LIMIT %s").format(
        cols=sql.SQL(", ").join(map(sql.Identifier, EXPORT_COLUMNS)),
        s=sql.Identifier(LIVE_SCHEMA), w=where)
    with psycopg.connect(database_url) as conn, conn.cursor(name="dashboard_export") as cur:
        cur.itersize = EXPORT_FETCH_ROWS
        cur.execute(query, [*params, EXPORT_ROWS_MAX])
        for row in cur:
            yield dict(zip(EXPORT_COLUMNS, row, strict=True))


def _plain(value: Any) -> Any:
    """A column's value in an export: hex for digests, ISO 8601 for moments, money (numeric)
    as a decimal string of integer nanos."""
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(int(value)) if hasattr(value, "as_integer_ratio") else str(value)


def export_lines(rows: Iterator[dict[str, Any]], fmt: str) -> Iterator[str]:
    """The rows as CSV (with a header) or JSON lines, one chunk per row, for streaming."""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(EXPORT_COLUMNS)
        for row in rows:
            writer.writerow(["" if v is None else _plain(v) for v in row.values()])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue()
    else:
        for row in rows:
            yield json.dumps({k: _plain(v) for k, v in row.items()}) + "\n"
