"""Writing projection batches: staged on one connection while the batch before commits on another.

A batch is written in two steps, each in the same transaction on the same connection (a lane):

1. `stage` (the folding thread): BEGIN, then binary COPY of the batch's usage sums into the
   lane's temporary table. It runs while the previous batch commits on the other lane.
2. `finish` (the committer thread): the tracking compare-and-set, binary COPY of the audit rows,
   the team/account/invoice/top-up upserts, adding the usage sums to `usage_daily`, the batch's
   `ledger.views.*` messages into the outbox (live schema only; `adapters/postgres/view_outbox`),
   COMMIT.

With `WRITE_LANES` connections, batch N+1 is staged on one lane while batch N finishes on the
other. Measured on 2 cores, this overlap did what reader/committer threads around one connection
could not: those threads fought over the interpreter lock (every COPY chunk and every fetched page
hands it back and forth) and were no faster than doing everything in turn. Where the audit rows
are copied was measured both ways (alternating runs): in `finish` the folding thread no longer
waits for PostgreSQL to insert them, which was faster than copying them in `stage` (figures:
BENCHMARKS.md, "Figures moved from code comments").

Why this is still exactly once: nothing a staged batch wrote is visible before its own COMMIT;
batches finish strictly in order, and each one's tracking update only succeeds from the position
the batch before it committed. Usage sums are staged in a temporary table, not added to
`usage_daily` early: adding to a bucket the previous (uncommitted) batch also touched would wait
on its row lock. If a batch fails, it and every batch staged after it are rolled back (`abort`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import astuple, dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.abc import Buffer
from psycopg.copy import LibpqWriter

from adapters.postgres.view_outbox import append_outbox
from adapters.postgres.view_schema import LIVE_SCHEMA, TRACKING_NAME
from projections.audit_chain import GENESIS_HASH
from projections.ports import TrackingConflictError
from projections.view_messages import encoded_view_messages
from projections.views import BatchChanges

# Connections writing batches: one batch commits while the next is staged.
WRITE_LANES = 2
# How long `stage` waits for its lane's previous batch to be finished or aborted. Runners always
# do one or the other; this only turns a bug into an error instead of a hang.
LANE_WAIT_SECONDS_MAX = 600.0

_UPSERT_TEAM = (
    "INSERT INTO {s}.teams VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (team_id) DO UPDATE SET name = EXCLUDED.name, "
    "credit_limit_nanos = EXCLUDED.credit_limit_nanos, "
    "low_balance_threshold_nanos = EXCLUDED.low_balance_threshold_nanos, "
    "suspended = EXCLUDED.suspended, credited_nanos = EXCLUDED.credited_nanos, "
    "refunded_nanos = EXCLUDED.refunded_nanos, adjusted_nanos = EXCLUDED.adjusted_nanos, "
    "spent_nanos = EXCLUDED.spent_nanos, position = EXCLUDED.position"
)
_UPSERT_ACCOUNTS = (
    "INSERT INTO {s}.accounts SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::text[], "
    "%s::text[], %s::text[], %s::bigint[], %s::numeric[], %s::bigint[], %s::text[], "
    "%s::text[]) "
    "ON CONFLICT (account_id) DO UPDATE SET status = EXCLUDED.status, "
    "usage_count = EXCLUDED.usage_count, spent_nanos = EXCLUDED.spent_nanos, "
    "position = EXCLUDED.position, holder_user_id = EXCLUDED.holder_user_id"
)
_INSERT_ASSIGNMENT = (
    "INSERT INTO {s}.package_assignments VALUES (%s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (account_id, effective_from) DO NOTHING"
)
# Usage sums are added, never overwritten: the batch carries deltas, the table the totals. The
# deltas go in by binary COPY into a temporary table first (about twice as fast as binding ten
# arrays of a few thousand values each), and are added in key order (index locality).
_USAGE_DELTA_TABLE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS usage_delta (LIKE {s}.usage_daily) "
    "ON COMMIT DELETE ROWS"
)
_USAGE_DELTA_TYPES = ["uuid", "date", "uuid", "text", "int8", "int8", "int8", "int8", "int8",
                      "numeric"]
_ADD_USAGE = (
    "INSERT INTO {s}.usage_daily AS u SELECT * FROM usage_delta ORDER BY 1, 2, 3, 4 "
    "ON CONFLICT (team_id, local_date, account_id, model) DO UPDATE SET "
    "requests = u.requests + EXCLUDED.requests, successes = u.successes + EXCLUDED.successes, "
    "input_tokens = u.input_tokens + EXCLUDED.input_tokens, "
    "cached_input_tokens = u.cached_input_tokens + EXCLUDED.cached_input_tokens, "
    "output_tokens = u.output_tokens + EXCLUDED.output_tokens, "
    "cost_nanos = u.cost_nanos + EXCLUDED.cost_nanos"
)
_UPSERT_INVOICE = (
    "INSERT INTO {s}.invoices VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (invoice_id) DO UPDATE SET status = EXCLUDED.status, number = EXCLUDED.number, "
    "total_minor = EXCLUDED.total_minor, credited_nanos = EXCLUDED.credited_nanos, "
    "payment_reference = EXCLUDED.payment_reference, position = EXCLUDED.position"
)
_UPSERT_TOP_UP = (
    "INSERT INTO {s}.top_ups VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (team_id, top_up_id) DO UPDATE SET refunded_nanos = EXCLUDED.refunded_nanos, "
    "position = EXCLUDED.position"
)
_UPSERT_PAYMENT = (
    "INSERT INTO {s}.payments VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (payment_id) DO UPDATE SET status = EXCLUDED.status, "
    "stripe_object_id = EXCLUDED.stripe_object_id, failure_code = EXCLUDED.failure_code, "
    "failure_message = EXCLUDED.failure_message, credited_nanos = EXCLUDED.credited_nanos, "
    "reversed_nanos = EXCLUDED.reversed_nanos, position = EXCLUDED.position"
)
_MOVE_TRACKING = ("UPDATE {s}.tracking SET notification_id = %s, audit_head = %s "
                  "WHERE name = %s AND notification_id = %s")
_AUDIT_COLUMNS = ("position, recorded_at, team_id, aggregate_id, aggregate_version, event_type, "
                  "actor, summary, balance_before_nanos, balance_after_nanos, event_digest, hash")
_AUDIT_TYPES = ["int8", "timestamptz", "uuid", "uuid", "int8", "text", "text", "text", "numeric",
                "numeric", "bytea", "bytea"]


class WholeCopyWriter(LibpqWriter):
    """Sends a COPY's data in one piece when it finishes, instead of every 32 KiB: each send
    releases the interpreter lock and must win it back from the folding thread. A batch's COPY
    data is a few MiB at most (rows of a few hundred bytes), so holding it is cheap."""

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        super().__init__(cursor)
        self._pieces: list[bytes] = []

    def write(self, data: Buffer) -> None:
        self._pieces.append(bytes(data))

    def finish(self, exc: BaseException | None = None) -> None:
        if exc is None and self._pieces:
            super().write(b"".join(self._pieces))
        self._pieces.clear()
        super().finish(exc)


class WriteLane:
    """One write connection with its own temporary table; holds one batch at a time."""

    def __init__(self, conn: psycopg.Connection[Any], schema: str) -> None:
        self.schema = schema
        self.conn = conn  # in autocommit mode: each batch opens its own transaction
        # Created outside any transaction, so that a rolled-back batch cannot take it away.
        self.conn.execute(self.q(_USAGE_DELTA_TABLE))
        self.free = threading.Event()
        self.free.set()

    def q(self, template: str) -> sql.Composed:
        return sql.SQL(template).format(s=sql.Identifier(self.schema))

    def close(self) -> None:
        self.conn.close()

    def release(self, rollback: bool) -> None:
        """End the lane's transaction (rolled back if asked or still open) and free it."""
        try:
            if rollback and not self.conn.closed:
                self.conn.rollback()
        finally:
            self.free.set()


@dataclass
class StagedBatch:
    """A batch whose rows are copied in its lane's open transaction, waiting for `finish`."""

    changes: BatchChanges
    lane: WriteLane
    # The batch's view messages for the outbox (none when the writer keeps no outbox).
    messages: list[tuple[str, bytes]]


class BatchWriter:
    """Writes batches through `WRITE_LANES` lanes, in turn. The live read models keep an outbox
    of view messages; a replay's (`outbox=False` by default for other schemas) does not."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], schema: str,
                 outbox: bool | None = None) -> None:
        self.schema = schema
        self.outbox = schema == LIVE_SCHEMA if outbox is None else outbox
        self.outbox_rows_dropped = 0  # dropped past OUTBOX_ROWS_MAX (a counter for logs)
        self.lanes = [WriteLane(connect(), schema) for _ in range(WRITE_LANES)]
        self._turn = 0

    def close(self) -> None:
        for lane in self.lanes:
            lane.close()

    def reset(self) -> None:
        """Roll back whatever is staged: nothing staged survives a reload of the folder."""
        for lane in self.lanes:
            lane.release(rollback=True)

    def stage(self, changes: BatchChanges) -> StagedBatch:
        lane = self.lanes[self._turn]
        self._turn = (self._turn + 1) % len(self.lanes)
        if not lane.free.wait(LANE_WAIT_SECONDS_MAX):
            raise RuntimeError(f"write lane still busy after {LANE_WAIT_SECONDS_MAX:.0f}s: the "
                               "batch staged on it was neither finished nor aborted")
        lane.free.clear()
        try:
            lane.conn.execute("BEGIN")
            with lane.conn.cursor() as cur:
                if changes.usage:
                    with cur.copy("COPY usage_delta FROM STDIN (FORMAT BINARY)",
                                  writer=WholeCopyWriter(cur)) as copy:
                        copy.set_types(_USAGE_DELTA_TYPES)
                        write = copy.write_row
                        for (team_id, account_id, model, day), sums in changes.usage.items():
                            write((team_id, day, account_id, model, *sums))
            messages = encoded_view_messages(changes) if self.outbox else []
        except BaseException:
            lane.release(rollback=True)
            raise
        return StagedBatch(changes, lane, messages)

    def finish(self, staged: StagedBatch) -> None:
        changes, lane = staged.changes, staged.lane
        try:
            with lane.conn.cursor() as cur:
                _write_rows(cur, lane, changes)
                if staged.messages:
                    self.outbox_rows_dropped += append_outbox(
                        cur, lane.schema, changes.last_position, staged.messages)
            lane.conn.commit()
        except BaseException:
            lane.release(rollback=True)
            raise
        lane.release(rollback=False)

    @staticmethod
    def abort(staged: StagedBatch) -> None:
        staged.lane.release(rollback=True)


def append_audit(cur: psycopg.Cursor[Any], q: Any, changes: BatchChanges) -> None:
    """Binary COPY of the batch's audit rows: the cheapest way to append thousands of rows."""
    statement = q(f"COPY {{s}}.audit ({_AUDIT_COLUMNS}) FROM STDIN (FORMAT BINARY)")
    with cur.copy(statement, writer=WholeCopyWriter(cur)) as copy:
        copy.set_types(_AUDIT_TYPES)
        write = copy.write_row
        for row in changes.audit:
            write(row)


def _write_rows(cur: psycopg.Cursor[Any], lane: WriteLane, changes: BatchChanges) -> None:
    q = lane.q
    cur.execute(q(_MOVE_TRACKING), (changes.last_position, changes.audit[-1].hash
                                    if changes.audit else GENESIS_HASH, TRACKING_NAME,
                                    changes.first_position))
    if cur.rowcount != 1:
        raise _conflict(lane, changes)
    if changes.audit:
        append_audit(cur, q, changes)
    if changes.teams:
        cur.executemany(q(_UPSERT_TEAM), [t.row() for t in changes.teams.values()])
    if changes.accounts:
        rows = [a.row() for a in changes.accounts.values()]
        cur.execute(q(_UPSERT_ACCOUNTS), [list(c) for c in zip(*rows, strict=True)])
    if changes.usage:
        cur.execute(q(_ADD_USAGE))
    if changes.invoices:
        cur.executemany(q(_UPSERT_INVOICE), [
            (i.invoice_id, i.team_id, i.currency, i.period_start, i.period_end, i.status,
             i.subtotal_nanos, i.number, i.total_minor, i.credited_nanos,
             i.payment_reference, i.position) for i in changes.invoices.values()])
    if changes.top_ups:
        cur.executemany(q(_UPSERT_TOP_UP), [
            (t.team_id, t.top_up_id, t.amount_nanos, t.amount_minor, t.currency,
             t.credited_at, t.refunded_nanos, t.position) for t in changes.top_ups.values()])
    if changes.payments:
        cur.executemany(q(_UPSERT_PAYMENT), [astuple(p) for p in changes.payments.values()])
    if changes.assignments:
        cur.executemany(q(_INSERT_ASSIGNMENT),
                        [astuple(a) for a in changes.assignments.values()])


def _conflict(lane: WriteLane, changes: BatchChanges) -> TrackingConflictError:
    return TrackingConflictError(
        f"read models in schema {lane.schema} are no longer at position "
        f"{changes.first_position}: another projection runner is writing them; "
        "run one `ledger project` per database")
