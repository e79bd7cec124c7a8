"""The PostgreSQL application recorder with the ledger's keyed extras in the same transaction.

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

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
)
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from services.keyed_recording import KeyRow, RejectionRow


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
        self.insert_keys_statement = SQL(
            "INSERT INTO {} (scope, key, fingerprint, result) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])"
        ).format(self.keys_table)
        self.insert_rejections_statement = SQL(
            "INSERT INTO {} (usage_id, account_id, code, message, fingerprint, rejected_at) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], "
            "%s::timestamptz[])"
        ).format(self.rejections_table)
        self.add_counters_statement = SQL(
            "INSERT INTO {0} AS c (name, value) SELECT * FROM unnest(%s::text[], %s::bigint[]) "
            "ON CONFLICT (name) DO UPDATE SET value = c.value + EXCLUDED.value"
        ).format(self.counters_table)

    def _insert_events(self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        if not stored_events:
            # No events means no table lock and no events insert: the extras go alone.
            self._insert_extras(curs, **kwargs)

    def _insert_stored_events(self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent],
                              **kwargs: Any) -> None:
        self._lock_table(curs)
        self._notify_channel(curs)
        self._insert_extras(curs, **kwargs)
        # The events insert runs last on this cursor: the library reads its RETURNING rows.
        PostgresAggregateRecorder._insert_stored_events(self, curs, stored_events, **kwargs)

    def _insert_extras(self, curs: Cursor[DictRow], **kwargs: Any) -> None:
        keys: Sequence[KeyRow] = kwargs.get("idempotency_keys") or ()
        if keys:
            curs.execute(self.insert_keys_statement, (
                [k.scope for k in keys], [k.key for k in keys],
                [k.fingerprint for k in keys], [k.result for k in keys],
            ))
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
        statement = SQL("SELECT key, fingerprint, result FROM {} "
                        "WHERE scope = %s AND key = ANY(%s)").format(self.keys_table)
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (scope, list(keys)), prepare=True)
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
