"""The read-model schema in PostgreSQL: its tables, its version, and how it is created once.

Read models live in their own schema (`ledger_views` for the live ones; `ledger replay` builds
into `ledger_replay` and compares), one table per model:

    tracking     one row: the last notification id folded in, and the audit chain's head
    status       one row: the runner's state; a projection failure with its event and position
    schema_version  the version of these tables (created once, under an advisory lock)
    teams        balance components per team (balance and available are derived: views.py)
    accounts     status, spend, holder and kind per account
    package_assignments  the package versions assigned to each account, from a moment on
    usage_daily  sums per (team, local date, account, model): windows are derived at query time
    audit        one row per event, hash-chained
    invoices, top_ups   the lists per team
    payments     the Stripe payments the ledger started, failed and canceled ones too
    outbox       the `ledger.views.*` messages of committed batches, until the relay has
                 published them (written in the batch's transaction; docs/projections.md)

Money columns are `numeric` (sums can outgrow bigint); Python sees `int`.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from projections.audit_chain import GENESIS_HASH
from projections.views import READ_MODEL_TABLES

LIVE_SCHEMA = "ledger_views"
REPLAY_SCHEMA = "ledger_replay"
# Version 2: the audit chain hashes every column, and the status table records failures.
# Version 3: the payments table. Version 2 tables are brought up to 3 by creating it (nothing
# before version 3 could start a payment, so no folded event is missing from it).
# Version 4: the outbox of view messages. Older tables gain it empty: the messages of batches
# committed before it were published (or lost) on core NATS; the next change of each view
# goes through the outbox.
# Version 5: holders and kinds in `accounts`, and the `package_assignments` table, so that the
# admin page and a member's reads need no Account aggregate. Version 2-4 tables gain them, and
# the projection runner fills them from the log up to its position before it folds on
# (`adapters.postgres.view_backfill`): the rows folded before had no place for them.
VIEWS_SCHEMA_VERSION = 5
EVENTS_TABLE = "ledger_events"
TRACKING_NAME = "ledger_views"
CONNECT_TIMEOUT_SECONDS = 10

# Each table's key: the canonical order for hashing (replay) and reading.
TABLE_KEYS: dict[str, str] = {
    "teams": "team_id",
    "accounts": "account_id",
    "usage_daily": "team_id, local_date, account_id, model",
    "audit": "position",
    "invoices": "invoice_id",
    "top_ups": "team_id, top_up_id",
    "payments": "payment_id",
    "package_assignments": "account_id, effective_from",
}
assert tuple(TABLE_KEYS) == READ_MODEL_TABLES, "every read-model table has a key"

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
    "position bigint NOT NULL, holder_user_id text, kind text NOT NULL)",
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
_PAYMENTS_DDL = [
    "CREATE TABLE IF NOT EXISTS {s}.payments (payment_id uuid PRIMARY KEY, "
    "team_id uuid NOT NULL, status text NOT NULL, amount_nanos numeric NOT NULL, "
    "amount_minor bigint NOT NULL, currency text NOT NULL, started_at timestamptz NOT NULL, "
    "started_by text NOT NULL, stripe_object_id text, failure_code text, failure_message text, "
    "credited_nanos numeric NOT NULL, reversed_nanos numeric NOT NULL, position bigint NOT NULL)",
    "CREATE INDEX IF NOT EXISTS payments_by_team ON {s}.payments (team_id, started_at)",
]
# `seq` is the order of commits (batches finish one at a time); the relay deletes what it
# published, so the table holds only what is waiting (bounded: view_messages.OUTBOX_ROWS_MAX).
_OUTBOX_DDL = [
    "CREATE TABLE IF NOT EXISTS {s}.outbox (seq bigserial PRIMARY KEY, "
    "position bigint NOT NULL, subject text NOT NULL, payload bytea NOT NULL)",
]
_ASSIGNMENTS_DDL = [
    "CREATE TABLE IF NOT EXISTS {s}.package_assignments (account_id uuid NOT NULL, "
    "effective_from timestamptz NOT NULL, team_id uuid NOT NULL, package_id uuid NOT NULL, "
    "package_version integer NOT NULL, package_name text NOT NULL, position bigint NOT NULL, "
    "PRIMARY KEY (account_id, effective_from))",
    "CREATE INDEX IF NOT EXISTS package_assignments_by_team ON {s}.package_assignments "
    "(team_id)",
    "CREATE INDEX IF NOT EXISTS accounts_by_holder ON {s}.accounts (team_id, holder_user_id)",
]
# The marker the projection runner removes once it has filled holders, kinds and assignments
# of the accounts folded before version 5 (`adapters.postgres.view_backfill`).
BACKFILL_TABLE = "backfill"
HOLDERS_BACKFILL = "holders_and_packages"
_TO_VERSION_5 = [
    "ALTER TABLE {s}.accounts ADD COLUMN IF NOT EXISTS holder_user_id text, "
    "ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT ''",
    "ALTER TABLE {s}.accounts ALTER COLUMN kind DROP DEFAULT",
    *_ASSIGNMENTS_DDL,
    f"CREATE TABLE IF NOT EXISTS {{s}}.{BACKFILL_TABLE} (name text PRIMARY KEY)",
    f"INSERT INTO {{s}}.{BACKFILL_TABLE} VALUES ('{HOLDERS_BACKFILL}') ON CONFLICT DO NOTHING",
]
_DDL += _PAYMENTS_DDL + _OUTBOX_DDL + _ASSIGNMENTS_DDL + [
    f"CREATE TABLE IF NOT EXISTS {{s}}.{BACKFILL_TABLE} (name text PRIMARY KEY)"]
# From an older version, the statements that bring its tables up to this one.
ADDITIVE_UPGRADES: dict[int, list[str]] = {2: _PAYMENTS_DDL + _OUTBOX_DDL + _TO_VERSION_5,
                                           3: _OUTBOX_DDL + _TO_VERSION_5, 4: _TO_VERSION_5}



def q(template: str, schema: str) -> sql.Composed:
    """A statement with `{s}` replaced by the quoted schema name."""
    return sql.SQL(template).format(s=sql.Identifier(schema))


def connect(database_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(database_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS)


class ReadModelSchemaError(RuntimeError):
    """The read-model tables exist in a version this code does not build."""


def create_tables(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create the read-model tables once; an ordinary open only reads their version."""
    if _schema_version(conn, schema) == VIEWS_SCHEMA_VERSION:
        return
    with conn.transaction():
        # Two processes creating the schema at once would race on the catalogue.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema,))
        found = _schema_version(conn, schema)
        if found == VIEWS_SCHEMA_VERSION:
            return
        if found in ADDITIVE_UPGRADES:
            for statement in ADDITIVE_UPGRADES[found]:
                conn.execute(q(statement, schema))
            conn.execute(q("UPDATE {s}.schema_version SET version = %s", schema),
                         (VIEWS_SCHEMA_VERSION,))
            return
        if found is not None or _exists(conn, schema, "tracking"):
            raise ReadModelSchemaError(
                f"the read models in schema {schema} were built by another ledger "
                f"version ({found or 1}, this one builds {VIEWS_SCHEMA_VERSION}); rebuild "
                f"them from the log: DROP SCHEMA {schema} CASCADE, then start the "
                "projections again")
        for statement in _DDL:
            conn.execute(q(statement, schema))
        conn.execute(q("INSERT INTO {s}.tracking VALUES (%s, 0, %s) ON CONFLICT DO NOTHING",
                       schema), (TRACKING_NAME, GENESIS_HASH))
        conn.execute(q("CREATE TABLE {s}.schema_version (version integer NOT NULL)", schema))
        conn.execute(q("INSERT INTO {s}.schema_version VALUES (%s)", schema),
                     (VIEWS_SCHEMA_VERSION,))


def drop_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    conn.execute(q("DROP SCHEMA IF EXISTS {s} CASCADE", schema))


def _exists(conn: psycopg.Connection[Any], schema: str, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                       (f'"{schema}".{table}',)).fetchone()
    return bool(row and row[0])


def _schema_version(conn: psycopg.Connection[Any], schema: str) -> int | None:
    if not _exists(conn, schema, "schema_version"):
        return None
    row = conn.execute(q("SELECT max(version) FROM {s}.schema_version", schema)).fetchone()
    return None if row is None or row[0] is None else int(row[0])
