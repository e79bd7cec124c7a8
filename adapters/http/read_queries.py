"""Read-model answers for the API, each one SQL statement that also says how fresh it is.

A read answer needs its rows and the log position they reflect (and the log's head), all from
one consistent view. `PostgresViewStore.snapshot()` gets that with a REPEATABLE READ transaction:
BEGIN, SET TRANSACTION, the freshness query, the rows, COMMIT, five round trips. One statement
sees one snapshot by itself (PostgreSQL takes the snapshot per statement under READ COMMITTED),
so here the freshness and the rows come from a single statement:

    SELECT f.position, f.head, q.* FROM (<position>, <head>) f
        LEFT JOIN LATERAL (<the answer's query>) q ON true

on a pooled autocommit connection: one round trip, no transaction. The answers' SQL is the read
models' own (the tables of `adapters.postgres.view_store`); a usage window is summed by
PostgreSQL over the window's local dates (the same days `projections.windows` counts in it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from adapters.postgres.view_schema import EVENTS_TABLE, LIVE_SCHEMA, TRACKING_NAME
from projections.authorization import AuthorizationAnswer, Freshness, decide
from projections.views import AccountView, TeamView
from projections.windows import (
    DateRange,
    UsageTotals,
)

_TEAM_COLUMNS = ("team_id, name, currency, timezone, credit_limit_nanos, "
                 "low_balance_threshold_nanos, suspended, credited_nanos, refunded_nanos, "
                 "adjusted_nanos, spent_nanos, position")
_ACCOUNT_COLUMNS = "account_id, team_id, account_key, name, status, usage_count, spent_nanos, " \
                   "position"


@dataclass(frozen=True)
class Fresh:
    """Rows of one answer and the freshness of the snapshot they were read in."""

    freshness: Freshness
    rows: list[tuple[Any, ...]]
    columns: list[str]  # the names of the query's columns

    def dicts(self) -> list[dict[str, Any]]:
        """The rows as dicts by column name, `..._nanos` as int (they are numeric)."""
        return [{k: (int(v) if k.endswith("_nanos") and v is not None else v)
                 for k, v in zip(self.columns, row, strict=True)} for row in self.rows]


def fresh_rows(conn: psycopg.Connection[Any], query: str, params: list[Any],
               order_by: str | None = None, schema: str = LIVE_SCHEMA) -> Fresh:
    """Run `query` (with `{s}` for the read models' schema) and read the freshness in the same
    statement. `order_by` names columns of the query's result (its order is not kept by the
    join)."""
    order = f" ORDER BY {order_by}" if order_by else ""
    statement = sql.SQL(
        "SELECT f.position, f.head, q.* FROM (SELECT "
        "coalesce((SELECT notification_id FROM {s}.tracking WHERE name = %s), 0) AS position, "
        "(SELECT coalesce(max(notification_id), 0) FROM public.{events}) AS head) f "
        "LEFT JOIN LATERAL (SELECT true AS found__, inner__.* FROM (" + query + ") inner__) q "
        "ON true" + order
    ).format(s=sql.Identifier(schema), events=sql.Identifier(EVENTS_TABLE))
    cursor = conn.execute(statement, [TRACKING_NAME, *params])
    rows = cursor.fetchall()
    columns = [d.name for d in cursor.description or ()][3:]
    freshness = Freshness(int(rows[0][0]), int(rows[0][1]))
    return Fresh(freshness, [tuple(r[3:]) for r in rows if r[2] is not None], columns)


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


def _team_view(r: tuple[Any, ...]) -> TeamView:
    return TeamView(r[0], r[1], r[2], r[3], _int(r[4]), _int(r[5]), r[6], _int(r[7]),
                    _int(r[8]), _int(r[9]), _int(r[10]), r[11])


def team_view(conn: psycopg.Connection[Any], team_id: UUID) -> tuple[Freshness, TeamView | None]:
    """The team's balance row (None before the projection saw the team)."""
    fresh = fresh_rows(conn, f"SELECT {_TEAM_COLUMNS} FROM {{s}}.teams WHERE team_id = %s",
                       [team_id])
    return fresh.freshness, _team_view(fresh.rows[0]) if fresh.rows else None


def window_rows(conn: psycopg.Connection[Any], team_id: UUID, days: DateRange,
                accounts: set[str] | None) -> tuple[Freshness, list[tuple[str, str, UsageTotals]]]:
    """Usage sums per (account, model) over the local dates of one window (of `accounts` only,
    if given): the one window an API answer shows, summed by PostgreSQL, so the answer folds a
    row per account and model instead of a row per day."""
    where: list[str] = ["team_id = %s"]
    params: list[Any] = [team_id]
    if days.start is not None:
        where.append("local_date >= %s")
        params.append(days.start)
    if days.end is not None:
        where.append("local_date < %s")
        params.append(days.end)
    if accounts is not None:
        where.append("account_id = ANY(%s::uuid[])")
        params.append(sorted(accounts))
    fresh = fresh_rows(conn, (
        "SELECT account_id, model, sum(requests), sum(successes), sum(input_tokens), "
        "sum(cached_input_tokens), sum(output_tokens), sum(cost_nanos) FROM {s}.usage_daily "
        f"WHERE {' AND '.join(where)} GROUP BY 1, 2"), params)
    return fresh.freshness, [(str(r[0]), r[1], UsageTotals(*(_int(v) for v in r[2:])))
                             for r in fresh.rows]


def daily_rows(conn: psycopg.Connection[Any], team_id: UUID, start: date, end: date,
               accounts: set[str] | None) -> Fresh:
    """Usage per local date from `start` to `end` inclusive (of `accounts` only, if given)."""
    where = "team_id = %s AND local_date >= %s AND local_date < %s"
    params: list[Any] = [team_id, start, end + timedelta(days=1)]
    if accounts is not None:
        where += " AND account_id = ANY(%s::uuid[])"
        params.append(sorted(accounts))
    return fresh_rows(conn, (
        "SELECT local_date, sum(requests) AS requests, sum(successes), sum(input_tokens), "
        "sum(cached_input_tokens), sum(output_tokens), sum(cost_nanos) FROM {s}.usage_daily "
        f"WHERE {where} GROUP BY local_date"), params, order_by="q.local_date")


def spend_answer(conn: psycopg.Connection[Any], account_id: UUID
                 ) -> tuple[AuthorizationAnswer, str | None]:
    """May this account spend now, and the team's currency: the account's and its team's rows
    in one statement."""
    account_columns = ", ".join(f"a.{c.strip()}" for c in _ACCOUNT_COLUMNS.split(","))
    team_columns = ", ".join(f"t.{c.strip()}" for c in _TEAM_COLUMNS.split(","))
    fresh = fresh_rows(conn, (
        f"SELECT {account_columns}, {team_columns} FROM {{s}}.accounts a "
        "LEFT JOIN {s}.teams t ON t.team_id = a.team_id WHERE a.account_id = %s"), [account_id])
    account = team = None
    if fresh.rows:
        r = fresh.rows[0]
        account = AccountView(r[0], r[1], r[2], r[3], r[4], r[5], _int(r[6]), r[7])
        team = _team_view(r[8:]) if r[8] is not None else None
    return (decide(str(account_id), account, team, fresh.freshness),
            team.currency if team is not None else None)


def held_accounts(conn: psycopg.Connection[Any], team_id: UUID, user_id: str | None
                  ) -> set[str]:
    """The ids of the team's accounts given to `user_id` (none for a service: no user), from
    the read models (version 5 keeps holders: no Account aggregate is loaded)."""
    rows = conn.execute(sql.SQL("SELECT account_id FROM {s}.accounts WHERE team_id = %s AND "
                                "holder_user_id = %s").format(s=sql.Identifier(LIVE_SCHEMA)),
                        (team_id, user_id)).fetchall()
    return {str(row[0]) for row in rows}


def table_rows(conn: psycopg.Connection[Any], table: str, team_id: UUID, order_by: str
               ) -> tuple[Freshness, list[dict[str, Any]]]:
    """Every row of a team's `table` (invoices, top_ups) as dicts, nanos as int."""
    fresh = fresh_rows(conn, f"SELECT * FROM {{s}}.{table} WHERE team_id = %s", [team_id],
                       order_by=order_by)
    return fresh.freshness, fresh.dicts()
