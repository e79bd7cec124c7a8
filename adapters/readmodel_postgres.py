"""The read models in PostgreSQL, and the notification log as the projections read it.

Read models live in their own schema (`ledger_views` for the live ones; `ledger replay` builds
into another schema and compares), one table per model:

    tracking     one row: the last notification id folded in, and the audit chain's head
    teams        balance components per team (balance and available are derived, see fold.py)
    accounts     status and spend per account
    usage_daily  sums per (team, local date, account, model): windows are derived at query time
    audit        one row per event, hash-chained
    invoices, top_ups   the lists per team

`commit()` writes a batch and moves the tracking row in ONE transaction, and only if the tracking
row still holds the batch's starting position (compare-and-set), so a batch is counted once or
not at all. Money columns are `numeric` (sums can outgrow bigint); Python sees `int`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from adapters.readmodel_writes import (
    TRACKING_NAME,
    BatchWriter,
    StagedBatch,
)
from projections.answers import balance_answer
from projections.authorization import AuthorizationAnswer, Freshness, decide
from projections.decoding import LogEntry
from projections.fold import (
    GENESIS_HASH,
    AccountView,
    BatchChanges,
    InvoiceView,
    TeamView,
    TopUpView,
    ViewFolder,
)
from projections.windows import BucketKey, UsageTotals, series_range, window_ranges

LIVE_SCHEMA = "ledger_views"
REPLAY_SCHEMA = "ledger_replay"
EVENTS_TABLE = "ledger_events"
CONNECT_TIMEOUT_SECONDS = 10

# Tables in the order they are created, each with its key (the canonical order for hashing).
TABLE_KEYS: dict[str, str] = {
    "teams": "team_id",
    "accounts": "account_id",
    "usage_daily": "team_id, local_date, account_id, model",
    "audit": "position",
    "invoices": "invoice_id",
    "top_ups": "team_id, top_up_id",
}

_DDL = [
    "CREATE SCHEMA IF NOT EXISTS {s}",
    "CREATE TABLE IF NOT EXISTS {s}.tracking (name text PRIMARY KEY, "
    "notification_id bigint NOT NULL, audit_head bytea NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {s}.teams (team_id uuid PRIMARY KEY, name text NOT NULL, "
    "currency text NOT NULL, timezone text NOT NULL, credit_limit_nanos numeric NOT NULL, "
    "low_balance_threshold_nanos numeric NOT NULL, suspended boolean NOT NULL, "
    "credited_nanos numeric NOT NULL, refunded_nanos numeric NOT NULL, "
    "adjusted_nanos numeric NOT NULL, spent_nanos numeric NOT NULL, position bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {s}.accounts (account_id uuid PRIMARY KEY, "
    "team_id uuid NOT NULL, account_key text NOT NULL, name text NOT NULL, "
    "status text NOT NULL, usage_count bigint NOT NULL, spent_nanos numeric NOT NULL, "
    "position bigint NOT NULL)",
    "CREATE INDEX IF NOT EXISTS accounts_by_team ON {s}.accounts (team_id)",
    "CREATE TABLE IF NOT EXISTS {s}.usage_daily (team_id uuid NOT NULL, local_date date NOT NULL, "
    "account_id uuid NOT NULL, model text NOT NULL, requests bigint NOT NULL, "
    "successes bigint NOT NULL, input_tokens bigint NOT NULL, "
    "cached_input_tokens bigint NOT NULL, output_tokens bigint NOT NULL, "
    "cost_nanos numeric NOT NULL, PRIMARY KEY (team_id, local_date, account_id, model)) "
    "WITH (fillfactor = 70)",
    "CREATE TABLE IF NOT EXISTS {s}.audit (position bigint PRIMARY KEY, "
    "recorded_at timestamptz NOT NULL, team_id uuid, aggregate_id uuid NOT NULL, "
    "aggregate_version bigint NOT NULL, event_type text NOT NULL, actor text, "
    "summary text NOT NULL, balance_before_nanos numeric, balance_after_nanos numeric, "
    "event_digest bytea NOT NULL, hash bytea NOT NULL)",
    "CREATE INDEX IF NOT EXISTS audit_by_team ON {s}.audit (team_id, position)",
    "CREATE TABLE IF NOT EXISTS {s}.invoices (invoice_id uuid PRIMARY KEY, team_id uuid NOT NULL, "
    "currency text NOT NULL, period_start text NOT NULL, period_end text NOT NULL, "
    "status text NOT NULL, subtotal_nanos numeric NOT NULL, number text, total_minor bigint, "
    "credited_nanos numeric NOT NULL, payment_reference text, position bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {s}.top_ups (team_id uuid NOT NULL, top_up_id text NOT NULL, "
    "amount_nanos numeric NOT NULL, amount_minor bigint NOT NULL, currency text NOT NULL, "
    "credited_at timestamptz NOT NULL, refunded_nanos numeric NOT NULL, "
    "position bigint NOT NULL, PRIMARY KEY (team_id, top_up_id))",
]

def _q(template: str, schema: str) -> sql.Composed:
    return sql.SQL(template).format(s=sql.Identifier(schema))


def _int(value: Any) -> int:
    """numeric columns come back as Decimal; money is int nanos in Python."""
    return int(value)


def connect(database_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(database_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS)


class PostgresViewStore:
    """The read-model tables in one schema, written by one runner, read by anyone."""

    def __init__(self, database_url: str, schema: str = LIVE_SCHEMA) -> None:
        self.database_url = database_url
        self.schema = schema
        self.conn = connect(database_url)
        self.create_tables()
        self.writer = BatchWriter(lambda: connect(database_url), schema)

    def close(self) -> None:
        self.writer.close()
        self.conn.close()

    def __enter__(self) -> PostgresViewStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def q(self, template: str) -> sql.Composed:
        return _q(template, self.schema)

    def create_tables(self) -> None:
        with self.conn.transaction():
            # Two processes creating the schema at once would race on the catalogue.
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.schema,))
            for statement in _DDL:
                self.conn.execute(self.q(statement))
            self.conn.execute(
                self.q("INSERT INTO {s}.tracking VALUES (%s, 0, %s) ON CONFLICT DO NOTHING"),
                (TRACKING_NAME, GENESIS_HASH))

    def drop(self) -> None:
        self.conn.execute(self.q("DROP SCHEMA IF EXISTS {s} CASCADE"))

    # Writing -------------------------------------------------------------------------------

    def load_folder(self) -> ViewFolder:
        self.writer.reset()
        conn = self.conn
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            row = conn.execute(self.q("SELECT notification_id, audit_head FROM {s}.tracking "
                                      "WHERE name = %s"), (TRACKING_NAME,)).fetchone()
            assert row is not None, "tracking row is created with the tables"
            teams = {r[0]: _team_view(r) for r in conn.execute(self.q("SELECT * FROM {s}.teams"))}
            accounts = {r[0]: _account_view(r)
                        for r in conn.execute(self.q("SELECT * FROM {s}.accounts"))}
            invoices = {r[0]: InvoiceView(r[0], r[1], r[2], r[3], r[4], r[5], _int(r[6]), r[7],
                                          r[8], _int(r[9]), r[10], r[11])
                        for r in conn.execute(self.q("SELECT * FROM {s}.invoices"))}
            top_ups = {(r[0], r[1]): TopUpView(r[0], r[1], _int(r[2]), r[3], r[4], r[5],
                                               _int(r[6]), r[7])
                       for r in conn.execute(self.q("SELECT * FROM {s}.top_ups"))}
        return ViewFolder(position=row[0], audit_head=bytes(row[1]), teams=teams,
                          accounts=accounts, invoices=invoices, top_ups=top_ups)

    def stage(self, changes: BatchChanges) -> StagedBatch:
        """Copy a batch's rows in an open transaction (see `readmodel_writes`)."""
        return self.writer.stage(changes)

    def finish(self, staged: StagedBatch) -> None:
        """Write the rest of a staged batch and commit it with its tracking position."""
        self.writer.finish(staged)

    def abort(self, staged: StagedBatch) -> None:
        self.writer.abort(staged)

    def commit(self, changes: BatchChanges) -> None:
        """Write one batch and its tracking position in one transaction, or nothing."""
        self.finish(self.stage(changes))

    # Reading -------------------------------------------------------------------------------

    def freshness(self) -> tuple[int, int]:
        """(position the read models reflect, head of the log)."""
        row = self.conn.execute(
            self.q("SELECT (SELECT notification_id FROM {s}.tracking WHERE name = %s), "
                   f"(SELECT coalesce(max(notification_id), 0) FROM public.{EVENTS_TABLE})"),
            (TRACKING_NAME,)).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def team(self, team_id: UUID) -> TeamView | None:
        row = self.conn.execute(self.q("SELECT * FROM {s}.teams WHERE team_id = %s"),
                                (team_id,)).fetchone()
        return _team_view(row) if row else None

    def account(self, account_id: UUID) -> AccountView | None:
        r = self.conn.execute(self.q("SELECT * FROM {s}.accounts WHERE account_id = %s"),
                              (account_id,)).fetchone()
        return _account_view(r) if r else None

    def accounts_of(self, team_id: UUID) -> list[AccountView]:
        rows = self.conn.execute(self.q("SELECT * FROM {s}.accounts WHERE team_id = %s "
                                        "ORDER BY account_key"), (team_id,)).fetchall()
        return [_account_view(r) for r in rows]

    def usage_buckets(self, team: TeamView, now: datetime) -> dict[BucketKey, UsageTotals]:
        """The team's daily buckets, with days before every window folded into one bucket.

        Days older than the month, the week and the chart series count only in the total, so
        they are summed in SQL into one bucket dated the day before the oldest window: the
        answer is the same as from every bucket, and its size stays bounded.
        """
        ranges = window_ranges(now, team.timezone)
        starts = [r.start for r in (*ranges.values(), series_range(now, team.timezone))
                  if r.start is not None]
        oldest_needed = min(starts)
        older = oldest_needed - timedelta(days=1)
        rows = self.conn.execute(self.q(
            "SELECT account_id, model, CASE WHEN local_date < %s THEN %s ELSE local_date END, "
            "sum(requests), sum(successes), sum(input_tokens), sum(cached_input_tokens), "
            "sum(output_tokens), sum(cost_nanos) FROM {s}.usage_daily WHERE team_id = %s "
            "GROUP BY 1, 2, 3"), (oldest_needed, older, team.team_id)).fetchall()
        return {(str(r[0]), r[1], r[2]): UsageTotals(*(_int(v) for v in r[3:])) for r in rows}

    def invoices_of(self, team_id: UUID) -> list[dict[str, Any]]:
        cur = self.conn.execute(self.q("SELECT * FROM {s}.invoices WHERE team_id = %s "
                                       "ORDER BY period_start, invoice_id"), (team_id,))
        return _dicts(cur)

    def top_ups_of(self, team_id: UUID) -> list[dict[str, Any]]:
        cur = self.conn.execute(self.q("SELECT * FROM {s}.top_ups WHERE team_id = %s "
                                       "ORDER BY credited_at, top_up_id"), (team_id,))
        return _dicts(cur)

    def balance(self, team_id: UUID, now: datetime) -> dict[str, Any] | None:
        """A team's balance, accounts, usage windows, invoices and top-ups, from one snapshot."""
        with self.conn.transaction():
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            position, head = self.freshness()
            team = self.team(team_id)
            if team is None:
                return None
            answer = balance_answer(team, self.accounts_of(team_id),
                                    self.usage_buckets(team, now), now, Freshness(position, head))
            answer["invoices"] = self.invoices_of(team_id)
            answer["top_ups"] = self.top_ups_of(team_id)
        return answer

    def authorize(self, account_id: UUID) -> AuthorizationAnswer:
        """May this account spend now? From the read models, with the position they reflect."""
        with self.conn.transaction():
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            position, head = self.freshness()
            account = self.account(account_id)
            team = self.team(account.team_id) if account is not None else None
        return decide(str(account_id), account, team, Freshness(position, head))

    def canonical_rows(self, conn: psycopg.Connection[Any], table: str,
                       fetch_rows: int = 20000) -> Iterator[str]:
        """A table's rows as PostgreSQL's text form of the row, in key order."""
        with conn.cursor(name=f"canonical_{table}") as cur:
            cur.itersize = fetch_rows
            cur.execute(self.q(f"SELECT t::text FROM {{s}}.{table} t "
                               f"ORDER BY {TABLE_KEYS[table]}"))
            for (text,) in cur:
                yield text


class PostgresNotificationLog:
    """The Ledger application's notification log, read in pages, with LISTEN for new events.

    Reads go straight to the events table with a binary cursor (the same rows as the library's
    `select_notifications`, about three times faster to fetch); the table and the NOTIFY channel
    are the ones the Ledger application's recorder uses.
    """

    def __init__(self, database_url: str, table: str = EVENTS_TABLE,
                 channel: str | None = None) -> None:
        self.database_url = database_url
        self.table = table
        self.channel = channel or table
        self.conn = connect(database_url)
        self._listener: psycopg.Connection[Any] | None = None
        self._select = sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM public.{t} WHERE notification_id > %s AND notification_id <= %s "
            "ORDER BY notification_id LIMIT %s").format(t=sql.Identifier(table))

    def close(self) -> None:
        self.conn.close()
        if self._listener is not None:
            self._listener.close()

    def read_after(self, position: int, limit: int, stop: int | None = None) -> list[LogEntry]:
        upper = stop if stop is not None else 2**63 - 1
        with self.conn.cursor(binary=True) as cur:
            cur.execute(self._select, (position, upper, limit), prepare=True)
            return list(map(LogEntry._make, cur.fetchall()))

    def head_position(self) -> int:
        row = self.conn.execute(sql.SQL("SELECT coalesce(max(notification_id), 0) FROM "
                                        "public.{t}").format(t=sql.Identifier(self.table))
                                ).fetchone()
        return int(row[0]) if row else 0

    def wait_for_new(self, timeout_seconds: float) -> None:
        """Block until the recorder NOTIFYs (an insert committed) or the timeout passes."""
        if self._listener is None:
            self._listener = connect(self.database_url)
            self._listener.execute(sql.SQL("LISTEN {c}").format(c=sql.Identifier(self.channel)))
            return  # a notify may have been missed before LISTEN: let the caller read again
        # Consume at most one notification; which insert it announces does not matter.
        list(self._listener.notifies(timeout=timeout_seconds, stop_after=1))


def _team_view(r: Any) -> TeamView:
    return TeamView(r[0], r[1], r[2], r[3], _int(r[4]), _int(r[5]), r[6], _int(r[7]),
                    _int(r[8]), _int(r[9]), _int(r[10]), r[11])


def _account_view(r: Any) -> AccountView:
    return AccountView(r[0], r[1], r[2], r[3], r[4], r[5], _int(r[6]), r[7])


def _dicts(cur: psycopg.Cursor[Any]) -> list[dict[str, Any]]:
    names = [d.name for d in cur.description or ()]
    return [{k: (int(v) if k.endswith("_nanos") and v is not None else v)
             for k, v in zip(names, row, strict=True)} for row in cur.fetchall()]
