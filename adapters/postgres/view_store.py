"""The read models in PostgreSQL: `PostgresViewStore`, written by one runner, read by anyone.

The tables and how they are created are in `view_schema`, the status row in `view_status`, the
two-step batch writes in `view_writes`. `commit()` writes a batch and moves the tracking row in
ONE transaction, and only if the tracking row still holds the batch's starting position
(compare-and-set), so a batch is counted once or not at all. Answers (balance, authorization) are
put together by `projections.answers`, from one REPEATABLE READ snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from adapters.postgres import view_status
from adapters.postgres.view_schema import (
    EVENTS_TABLE,
    LIVE_SCHEMA,
    TABLE_KEYS,
    TRACKING_NAME,
    connect,
    create_tables,
    drop_schema,
    q,
)
from adapters.postgres.view_writes import BatchWriter, StagedBatch
from projections.answers import account_authorization, team_balance
from projections.audit_chain import AuditRow
from projections.authorization import AuthorizationAnswer
from projections.fold import ViewFolder
from projections.ports import FailureKind, ProjectionFailure, TrackingConflictError
from projections.views import (
    AccountView,
    BatchChanges,
    InvoiceView,
    PackageAssignmentView,
    PaymentView,
    TeamView,
    TopUpView,
)
from projections.windows import BucketKey, UsageTotals, series_range, window_ranges

# Rows fetched per round trip when a whole table is streamed (replay, audit verify).
TABLE_FETCH_ROWS = 20_000
AUDIT_COLUMNS = ("position", "recorded_at", "team_id", "aggregate_id", "aggregate_version",
                 "event_type", "actor", "summary", "balance_before_nanos",
                 "balance_after_nanos", "event_digest", "hash")


def _int(value: Any) -> int:
    """numeric columns come back as Decimal; money is int nanos in Python."""
    return int(value)


class PostgresViewStore:
    """The read-model tables in one schema."""

    def __init__(self, database_url: str, schema: str = LIVE_SCHEMA) -> None:
        self.database_url = database_url
        self.schema = schema
        self.conn = connect(database_url)
        create_tables(self.conn, schema)
        self.writer = BatchWriter(lambda: connect(database_url), schema)

    @classmethod
    def recreated(cls, database_url: str, schema: str) -> PostgresViewStore:
        """A store on an empty schema: whatever was there is dropped first (without opening it:
        tables left by another ledger version would be refused, and they are thrown away)."""
        with connect(database_url) as conn:
            drop_schema(conn, schema)
        return cls(database_url, schema)

    def close(self) -> None:
        self.writer.close()
        self.conn.close()

    def __enter__(self) -> PostgresViewStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def q(self, template: str) -> sql.Composed:
        return q(template, self.schema)

    def drop(self) -> None:
        drop_schema(self.conn, self.schema)

    # Status -------------------------------------------------------------------------------

    def failure(self) -> ProjectionFailure | None:
        """The failure recorded by the runner, if the projections are stopped on one."""
        return view_status.read_failure(self.conn, self.schema)

    def record_failure(self, failure: ProjectionFailure) -> None:
        view_status.record_failure(self.conn, self.schema, failure)

    def clear_failure(self) -> None:
        view_status.clear_failure(self.conn, self.schema)

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
            payments = {r[0]: _payment_view(r)
                        for r in conn.execute(self.q("SELECT * FROM {s}.payments"))}
        return ViewFolder(position=row[0], audit_head=bytes(row[1]), teams=teams,
                          accounts=accounts, invoices=invoices, top_ups=top_ups,
                          payments=payments)

    def stage(self, changes: BatchChanges) -> StagedBatch:
        """Copy a batch's rows in an open transaction (see `view_writes`)."""
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

    def assignments_of(self, team_id: UUID) -> list[PackageAssignmentView]:
        rows = self.conn.execute(self.q(
            "SELECT * FROM {s}.package_assignments WHERE team_id = %s "
            "ORDER BY account_id::text, effective_from"), (team_id,)).fetchall()
        return [PackageAssignmentView(*r) for r in rows]

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

    def payments_of(self, team_id: UUID) -> list[dict[str, Any]]:
        cur = self.conn.execute(self.q("SELECT * FROM {s}.payments WHERE team_id = %s "
                                       "ORDER BY started_at, payment_id"), (team_id,))
        return _dicts(cur)

    def balance(self, team_id: UUID, now: datetime) -> dict[str, Any] | None:
        """A team's balance, accounts, usage windows, invoices and top-ups, from one snapshot."""
        return team_balance(self, team_id, now)

    def authorize(self, account_id: UUID) -> AuthorizationAnswer:
        """May this account spend now? From the read models, with the position they reflect."""
        return account_authorization(self, account_id)

    # For the auditor's tools (inside `snapshot()`: named cursors need its transaction) ------

    def table_rows(self, table: str) -> Iterator[str]:
        """A table's rows as PostgreSQL's text form of the row, in key order."""
        with self.conn.cursor(name=f"canonical_{table}") as cur:
            cur.itersize = TABLE_FETCH_ROWS
            cur.execute(self.q(f"SELECT t::text FROM {{s}}.{table} t "
                               f"ORDER BY {TABLE_KEYS[table]}"))
            for (text,) in cur:
                yield text

    def audited(self) -> tuple[int, bytes]:
        row = self.conn.execute(self.q("SELECT notification_id, audit_head FROM {s}.tracking "
                                       "WHERE name = %s"), (TRACKING_NAME,)).fetchone()
        assert row is not None, "tracking row is created with the tables"
        return int(row[0]), bytes(row[1])

    def audit_rows(self, up_to: int) -> Iterator[AuditRow]:
        with self.conn.cursor(name="audit_rows", binary=True) as cur:
            cur.itersize = TABLE_FETCH_ROWS
            cur.execute(self.q(f"SELECT {', '.join(AUDIT_COLUMNS)} FROM {{s}}.audit "
                               "WHERE position <= %s ORDER BY position"), (up_to,))
            for r in cur:
                yield AuditRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7],
                               None if r[8] is None else _int(r[8]),
                               None if r[9] is None else _int(r[9]), bytes(r[10]), bytes(r[11]))


def _team_view(r: Any) -> TeamView:
    return TeamView(r[0], r[1], r[2], r[3], _int(r[4]), _int(r[5]), r[6], _int(r[7]),
                    _int(r[8]), _int(r[9]), _int(r[10]), r[11])


def _account_view(r: Any) -> AccountView:
    return AccountView(r[0], r[1], r[2], r[3], r[4], r[5], _int(r[6]), r[7], r[8], r[9])


def _payment_view(r: Any) -> PaymentView:
    return PaymentView(r[0], r[1], r[2], _int(r[3]), r[4], r[5], r[6], r[7], r[8], r[9], r[10],
                       _int(r[11]), _int(r[12]), r[13])


def _dicts(cur: psycopg.Cursor[Any]) -> list[dict[str, Any]]:
    names = [d.name for d in cur.description or ()]
    return [{k: (int(v) if k.endswith("_nanos") and v is not None else v)
             for k, v in zip(names, row, strict=True)} for row in cur.fetchall()]
