"""The audit page's queries: a team's audit rows with filters, newest first, in pages.

The audit trail is the projections' `audit` table (one hash-chained row per event). Filters are
bounded and passed as parameters; pages go backwards by log position (a cursor, stable while new
rows arrive). Export streams the same filtered rows through
`adapters.postgres.audit_queries.export`, the format `ledger audit export` writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from adapters.postgres.audit_queries import EXPORT_COLUMNS
from adapters.postgres.view_schema import LIVE_SCHEMA

AUDIT_PAGE_ROWS = 50
EXPORT_ROWS_MAX = 1_000_000
EXPORT_FETCH_ROWS = 5000
FILTER_TEXT_LENGTH_MAX = 200
ACTORS_LISTED_MAX = 500
EVENT_TYPE_PATTERN = re.compile(r"^[A-Za-z]{1,40}(\.[A-Za-z]{1,60})?$")

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
