"""The read models in PostgreSQL, and the notification log as the projections read it.

Read models live in their own schema (`ledger_views` for the live ones; `ledger replay` builds
into another schema and compares), one table per model:

    tracking     one row: the last notification id folded in, and the audit chain's head
    status       one row: the runner's state; a projection failure with its event and position
    schema_version  the version of these tables (created once, under an advisory lock)
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
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from adapters.postgres.view_writes import (
    TRACKING_NAME,
    BatchWriter,
    StagedBatch,
    TrackingConflictError,
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
from projections.runner import FailureKind, ProjectionFailure
from projections.windows import BucketKey, UsageTotals, series_range, window_ranges

LIVE_SCHEMA = "ledger_views"
# Version 2: the audit chain hashes every column, and the status table records failures.
VIEWS_SCHEMA_VERSION = 2
# A failure's error text is cut to this many characters before it is stored.
FAILURE_ERROR_LENGTH_MAX = 2000
STATUS_OK = "ok"
STATUS_FAILED = "failed"
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
    "CREATE TABLE IF NOT EXISTS {s}.status (name text PRIMARY KEY, state text NOT NULL, "
    "position bigint, aggregate_id uuid, aggregate_version bigint, event_type text, "
    "error text, failures bigint NOT NULL, updated_at timestamptz NOT NULL)",
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


class ReadModelSchemaError(RuntimeError):
    """The read-model tables exist in a version this code does not build."""


def read_failure(conn: psycopg.Connection[Any], schema: str) -> ProjectionFailure | None:
    row = conn.execute(_q("SELECT position, aggregate_id, aggregate_version, event_type, error, "
                          "failures FROM {s}.status WHERE name = %s AND state = %s", schema),
                       (TRACKING_NAME, STATUS_FAILED)).fetchone()
    if row is None:
        return None
    return ProjectionFailure(position=row[0], aggregate_id=row[1], aggregate_version=row[2],
                             event_type=row[3], error=row[4], failures=row[5])


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
            row = conn.execute(_q(
                "SELECT (SELECT notification_id FROM {s}.tracking WHERE name = %s), "
                f"(SELECT coalesce(max(notification_id), 0) FROM public.{EVENTS_TABLE})",
                schema), (TRACKING_NAME,)).fetchone()
    except psycopg.Error as error:
        return ProjectionHealth(False, f"read-model database unreachable: {error}".strip())
    if failure is not None:
        return ProjectionHealth(False, failure.describe())
    position, head = (int(row[0]), int(row[1])) if row else (0, 0)
    return ProjectionHealth(True, f"projections at log position {position} of {head}")


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
        """Create the read-model tables once; an ordinary open only reads their version."""
        if self._schema_version() == VIEWS_SCHEMA_VERSION:
            return
        with self.conn.transaction():
            # Two processes creating the schema at once would race on the catalogue.
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.schema,))
            found = self._schema_version()
            if found == VIEWS_SCHEMA_VERSION:
                return
            if found is not None or self._exists("tracking"):
                raise ReadModelSchemaError(
                    f"the read models in schema {self.schema} were built by another ledger "
                    f"version ({found or 1}, this one builds {VIEWS_SCHEMA_VERSION}); rebuild "
                    f"them from the log: DROP SCHEMA {self.schema} CASCADE, then start the "
                    "projections again")
            for statement in _DDL:
                self.conn.execute(self.q(statement))
            self.conn.execute(
                self.q("INSERT INTO {s}.tracking VALUES (%s, 0, %s) ON CONFLICT DO NOTHING"),
                (TRACKING_NAME, GENESIS_HASH))
            self.conn.execute(self.q("CREATE TABLE {s}.schema_version (version integer NOT NULL)"))
            self.conn.execute(self.q("INSERT INTO {s}.schema_version VALUES (%s)"),
                              (VIEWS_SCHEMA_VERSION,))

    def _exists(self, table: str) -> bool:
        row = self.conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                                (f'"{self.schema}".{table}',)).fetchone()
        return bool(row and row[0])

    def _schema_version(self) -> int | None:
        if not self._exists("schema_version"):
            return None
        row = self.conn.execute(self.q("SELECT max(version) FROM {s}.schema_version")).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    # Status -------------------------------------------------------------------------------

    def failure(self) -> ProjectionFailure | None:
        """The failure recorded by the runner, if the projections are stopped on one."""
        return read_failure(self.conn, self.schema)

    def record_failure(self, failure: ProjectionFailure) -> None:
        """Record (and count) a failure, in its own transaction: the batch it broke is gone."""
        self.conn.execute(self.q(
            "INSERT INTO {s}.status AS s VALUES (%s, %s, %s, %s, %s, %s, %s, 1, now()) "
            "ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state, "
            "position = EXCLUDED.position, aggregate_id = EXCLUDED.aggregate_id, "
            "aggregate_version = EXCLUDED.aggregate_version, event_type = EXCLUDED.event_type, "
            "error = EXCLUDED.error, failures = s.failures + 1, updated_at = now()"),
            (TRACKING_NAME, STATUS_FAILED, failure.position, failure.aggregate_id,
             failure.aggregate_version, failure.event_type,
             failure.error[:FAILURE_ERROR_LENGTH_MAX]))

    def clear_failure(self) -> None:
        """The runner moved past what failed: green again (the count of failures stays)."""
        self.conn.execute(self.q(
            "UPDATE {s}.status SET state = %s, updated_at = now() WHERE name = %s "
            "AND state <> %s"), (STATUS_OK, TRACKING_NAME, STATUS_OK))

    @staticmethod
    def failure_kind(error: BaseException) -> FailureKind:
        if isinstance(error, TrackingConflictError):
            return FailureKind.RUNNER
        if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
            return FailureKind.TRANSIENT  # connection lost, server restarting, lock timeout
        return FailureKind.EVENT

    def reconnect(self) -> None:
        """After a lost connection: new connections for reading and for the write lanes."""
        if self.conn.broken or self.conn.closed:
            self.conn.close()
            self.conn = connect(self.database_url)
        self.writer.close()
        self.writer = BatchWriter(lambda: connect(self.database_url), self.schema)

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

    @contextmanager
    def snapshot(self) -> Iterator[tuple[int, int]]:
        """One consistent view of every read model for the `with` block (a REPEATABLE READ
        transaction), and the (position, head) it reflects."""
        with self.conn.transaction():
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield self.freshness()

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
        with self.snapshot() as (position, head):
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
        with self.snapshot() as (position, head):
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

    def reconnect(self) -> None:
        """After a lost connection: a new one for reading (the listener is made again lazily)."""
        self.conn.close()
        self.conn = connect(self.database_url)
        if self._listener is not None:
            self._listener.close()
            self._listener = None

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
