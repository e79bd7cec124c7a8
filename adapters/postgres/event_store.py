"""The PostgreSQL application recorder with the ledger's keyed extras in the same transaction.

Schema: the tables, indexes, types and functions of the event store are created ONCE, by
`ensure_schema`, under a PostgreSQL advisory lock, and a row in `ledger_schema_version` says which
version of them exists. An ordinary open reads that row and runs no DDL; the first open of a fresh
database (or `ledger init`) creates everything, and opens racing it wait on the lock and then see
the row. (The library runs `CREATE TABLE`/`CREATE OR REPLACE FUNCTION` on every open, and several
processes or threads doing that at once fail with `tuple concurrently updated`.)
`LedgerPostgresFactory` is the persistence module that wires this in.

It extends eventsourcing's `PostgresApplicationRecorder`: after the events table is locked (the
library serialises inserting transactions so that the notification log has no gaps), and before
the events are inserted, it writes the idempotency keys, the usage rejections and the counter
increments that the application passed to `save()`. Everything commits or nothing does.

Keys are written after the table lock on purpose: two writers racing on the same key then queue
on the lock instead of deadlocking on each other's uncommitted key rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from eventsourcing.persistence import (
    ApplicationRecorder,
    InterfaceError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresFactory,
    PostgresRecorder,
)
from eventsourcing.utils import retry, strtobool
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from services.eventsourcing_seam import notify_subscribers
from services.keyed_recording import KeyRow, RejectionRow

# Connection-level failures (not constraint violations) are retried, as the library does.
INSERT_ATTEMPTS_MAX = 10
INSERT_RETRY_WAIT_SECONDS = 0.2
# Joins keys for one lookup parameter; usage ids are printable, so they never contain it.
KEY_SEPARATOR = "\x1f"
# The version of the event store's tables this code writes; bump it with a migration step in
# `ensure_schema` whenever the DDL changes.
EVENT_STORE_SCHEMA_VERSION = 1
SCHEMA_COMPONENT = "event_store"


class SchemaVersionError(RuntimeError):
    """The database holds no event store of this code's version, and may not create one."""


class LedgerPostgresRecorder(PostgresApplicationRecorder):
    def __init__(self, datastore: PostgresDatastore, *,
                 events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        prefix = events_table_name.removesuffix("_events")
        schema = Identifier(self.datastore.schema)
        self.keys_table = SQL("{}.{}").format(schema, Identifier(f"{prefix}_idempotency_keys"))
        self.rejections_table = SQL("{}.{}").format(schema,
                                                     Identifier(f"{prefix}_usage_rejections"))
        self.counters_table = SQL("{}.{}").format(schema, Identifier(f"{prefix}_counters"))
        self.schema_version_table_name = f"{prefix}_schema_version"
        self.schema_version_table = SQL("{}.{}").format(
            schema, Identifier(self.schema_version_table_name))
        self.sql_create_statements += [
            SQL("CREATE TABLE IF NOT EXISTS {} ("
                "scope text NOT NULL, key text NOT NULL, fingerprint text NOT NULL, "
                "result text NOT NULL, PRIMARY KEY (scope, key))").format(self.keys_table),
            SQL("CREATE TABLE IF NOT EXISTS {} ("
                "id bigserial PRIMARY KEY, usage_id text NOT NULL, account_id text NOT NULL, "
                "code text NOT NULL, message text NOT NULL, fingerprint text NOT NULL, "
                "rejected_at timestamptz NOT NULL)").format(self.rejections_table),
            SQL("CREATE TABLE IF NOT EXISTS {} ("
                "name text PRIMARY KEY, value bigint NOT NULL)").format(self.counters_table),
        ]
        # COPY, like the events: a key taken twice still violates the primary key.
        self.copy_keys_statement = SQL(
            "COPY {} (scope, key, fingerprint, result) FROM STDIN (FORMAT BINARY)"
        ).format(self.keys_table)
        self.insert_rejections_statement = SQL(
            "INSERT INTO {} (usage_id, account_id, code, message, fingerprint, rejected_at) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], "
            "%s::timestamptz[])"
        ).format(self.rejections_table)
        self.select_keys_array_statement = SQL(
            "SELECT key, fingerprint, result FROM {} WHERE scope = %s AND key = ANY(%s)"
        ).format(self.keys_table)
        self.select_keys_joined_statement = SQL(
            "SELECT key, fingerprint, result FROM {} "
            "WHERE scope = %s AND key = ANY(string_to_array(%s, E'\\x1f'))"
        ).format(self.keys_table)
        # The events table as other SQL should name it (schema-qualified, quoted): read this and
        # the library's `channel_name` from the recorder instead of assuming `public`.
        self.events_table = SQL("{}.{}").format(schema, Identifier(self.events_table_name))
        self.copy_events_statement = SQL(
            "COPY {} (originator_id, originator_version, topic, state) FROM STDIN "
            "(FORMAT BINARY)").format(self.events_table)
        # currval() is this session's last value from the events' notification id sequence;
        # the table's name is quoted by format('%I.%I'), as the recorder's own names are.
        self.last_notification_id_statement = SQL(
            "SELECT currval(pg_get_serial_sequence(format('%%I.%%I', %s::text, %s::text), "
            "'notification_id')) AS last_value"
        )
        self.add_counters_statement = SQL(
            "INSERT INTO {0} AS c (name, value) SELECT * FROM unnest(%s::text[], %s::bigint[]) "
            "ON CONFLICT (name) DO UPDATE SET value = c.value + EXCLUDED.value"
        ).format(self.counters_table)

    # Schema --------------------------------------------------------------------------------

    def schema_version(self) -> int | None:
        """The event store version recorded in the database, or None if there is none yet."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL "
                         "AS present", (self.datastore.schema, self.schema_version_table_name))
            row = curs.fetchone()
            if row is None or not row["present"]:
                return None
            curs.execute(SQL("SELECT version FROM {} WHERE component = %s").format(
                self.schema_version_table), (SCHEMA_COMPONENT,))
            found = curs.fetchone()
        return None if found is None else int(found["version"])

    def check_schema(self) -> None:
        """Fail with a clear message unless the database holds this code's event store."""
        found = self.schema_version()
        if found != EVENT_STORE_SCHEMA_VERSION:
            raise SchemaVersionError(_version_message(found))

    def ensure_schema(self, others: Sequence[PostgresRecorder] = ()) -> bool:
        """Create the event store (and the tables of `others`, e.g. the snapshots) once.

        Returns whether this call ran the DDL. Concurrent callers queue on a transaction-level
        advisory lock; whoever gets it first creates everything and writes the version row in
        the same transaction, so the others find the row when they get the lock and run nothing.
        """
        found = self.schema_version()
        if found == EVENT_STORE_SCHEMA_VERSION:
            return False
        if found is not None and found > EVENT_STORE_SCHEMA_VERSION:
            raise SchemaVersionError(_version_message(found))
        with self.datastore.transaction(commit=True) as curs:
            curs.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                         (f"{self.datastore.schema}.{self.schema_version_table_name}",))
            curs.execute(SQL("CREATE TABLE IF NOT EXISTS {} (component text PRIMARY KEY, "
                             "version integer NOT NULL, created_at timestamptz NOT NULL "
                             "DEFAULT now())").format(self.schema_version_table))
            curs.execute(SQL("SELECT version FROM {} WHERE component = %s").format(
                self.schema_version_table), (SCHEMA_COMPONENT,))
            row = curs.fetchone()
            if row is not None and int(row["version"]) == EVENT_STORE_SCHEMA_VERSION:
                created_here = False
            else:
                self._create(curs, others)
                created_here = True
        self.datastore.register_type_adapters()
        return created_here

    def _create(self, curs: Cursor[DictRow], others: Sequence[PostgresRecorder]) -> None:
        for recorder in (self, *others):
            for statement in recorder.sql_create_statements:
                text = statement.as_string()
                if "CREATE TYPE" in text and self._type_exists(curs, text):
                    continue  # CREATE TYPE has no IF NOT EXISTS
                curs.execute(statement, prepare=False)
        curs.execute(SQL("INSERT INTO {} (component, version) VALUES (%s, %s) "
                         "ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version, "
                         "created_at = now()").format(self.schema_version_table),
                     (SCHEMA_COMPONENT, EVENT_STORE_SCHEMA_VERSION))

    def _type_exists(self, curs: Cursor[DictRow], create_type: str) -> bool:
        # `CREATE TYPE "schema"."name" AS (...)`: the qualified name is the third word.
        name = create_type.split()[2]
        curs.execute("SELECT to_regtype(%s) IS NOT NULL AS present", (name,))
        row = curs.fetchone()
        return row is not None and bool(row["present"])

    # Writing -------------------------------------------------------------------------------

    @retry((InterfaceError, OperationalError), max_attempts=INSERT_ATTEMPTS_MAX,
           wait=INSERT_RETRY_WAIT_SECONDS)
    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        """Insert events and extras in one transaction; return the events' notification ids.

        Events are written with binary COPY, which formats rows in C; the library's INSERT of
        a composite-typed array formats them in Python. COPY cannot return the ids the sequence
        gave, but the EXCLUSIVE table lock means no other transaction takes ids from the
        sequence while we hold it, so the ids of our rows are the last `n` the sequence issued,
        in row order.
        """
        with self.datastore.transaction(commit=True) as curs:
            # The ledger application is not a process application: it never tracks upstream.
            assert kwargs.get("tracking") is None, "the ledger recorder writes no tracking"
            if not stored_events:
                self._insert_extras(curs, **kwargs)
                return []
            for statement in self.lock_table_statements:
                curs.execute(statement, prepare=True)
            notify_subscribers(self, curs)
            self._insert_extras(curs, **kwargs)
            with curs.copy(self.copy_events_statement) as copy:
                copy.set_types(["uuid", "int8", "text", "bytea"])
                for event in stored_events:
                    copy.write_row((event.originator_id, event.originator_version,
                                    event.topic, event.state))
            curs.execute(self.last_notification_id_statement,
                         (self.datastore.schema, self.events_table_name), prepare=True)
            row = curs.fetchone()
            assert row is not None
            last_id = int(row["last_value"])
            first_id = last_id - len(stored_events) + 1
            return list(range(first_id, last_id + 1))

    def _insert_extras(self, curs: Cursor[DictRow], **kwargs: Any) -> None:
        keys: Sequence[KeyRow] = kwargs.get("idempotency_keys") or ()
        if keys:
            with curs.copy(self.copy_keys_statement) as copy:
                copy.set_types(["text", "text", "text", "text"])
                for k in keys:
                    copy.write_row((k.scope, k.key, k.fingerprint, k.result))
        rejections: Sequence[RejectionRow] = kwargs.get("usage_rejections") or ()
        if rejections:
            curs.execute(self.insert_rejections_statement, (
                [r.usage_id for r in rejections], [r.account_id for r in rejections],
                [r.code for r in rejections], [r.message for r in rejections],
                [r.fingerprint for r in rejections], [r.rejected_at for r in rejections],
            ))
        counters: Mapping[str, int] = kwargs.get("counters") or {}
        if counters:
            curs.execute(self.add_counters_statement, (list(counters), list(counters.values())))

    def select_keys(self, scope: str, keys: Sequence[str]) -> dict[str, KeyRow]:
        if not keys:
            return {}
        if any(KEY_SEPARATOR in key for key in keys):
            statement = self.select_keys_array_statement
            keys_parameter: str | list[str] = list(keys)
        else:
            # One joined string instead of a text array: psycopg dumps arrays element by
            # element in Python, and a usage batch asks for thousands of keys.
            statement = self.select_keys_joined_statement
            keys_parameter = KEY_SEPARATOR.join(keys)
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (scope, keys_parameter), prepare=True)
            return {row["key"]: KeyRow(scope, row["key"], row["fingerprint"], row["result"])
                    for row in curs.fetchall()}

    def counter_values(self) -> dict[str, int]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT name, value FROM {}").format(self.counters_table))
            return {row["name"]: int(row["value"]) for row in curs.fetchall()}

    def select_rejections(self, limit: int) -> list[RejectionRow]:
        statement = SQL("SELECT * FROM {} ORDER BY id DESC LIMIT %s").format(
            self.rejections_table)
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (limit,))
            rows = curs.fetchall()
        return [RejectionRow(r["usage_id"], r["account_id"], r["code"], r["message"],
                             r["fingerprint"], r["rejected_at"]) for r in reversed(rows)]


def _version_message(found: int | None) -> str:
    if found is None:
        return ("the database holds no ledger event store yet: run `ledger init` (or start the "
                "ledger once with table creation on) before opening it")
    return (f"the database's event store is version {found}, this ledger writes version "
            f"{EVENT_STORE_SCHEMA_VERSION}: use a ledger release that matches it")


class LedgerPostgresFactory(PostgresFactory):
    """eventsourcing's PostgreSQL persistence module, with the schema created once.

    The library's factory runs each recorder's DDL on every open when `CREATE_TABLE` is on.
    This one never does; instead the application recorder either ensures the whole schema (the
    events, keys, counters and snapshot tables) under an advisory lock when `CREATE_TABLE` is on,
    or only checks the recorded version when it is off.
    """

    def env_create_table(self) -> bool:
        return False  # the library's per-recorder DDL is replaced by `ensure_schema`

    def may_create_schema(self) -> bool:
        return strtobool(self.env.get(self.CREATE_TABLE) or "yes")

    def application_recorder(self) -> ApplicationRecorder:
        recorder = super().application_recorder()
        if not isinstance(recorder, LedgerPostgresRecorder):
            raise TypeError("set APPLICATION_RECORDER_TOPIC="
                            "adapters.postgres.event_store:LedgerPostgresRecorder")
        if self.may_create_schema():
            prefix = self.env.name.lower() or "stored"
            snapshots = PostgresAggregateRecorder(self.datastore,
                                                  events_table_name=f"{prefix}_snapshots")
            recorder.ensure_schema([snapshots])
        else:
            recorder.check_schema()
        return recorder
