"""`ledger replay`: rebuild every read model from the full log and prove it equals the live one.

1. Open a REPEATABLE READ transaction on the live read models and read their tracking position
   P: every later read in that transaction sees the live tables exactly as they were at P, even
   while `ledger project` keeps writing.
2. Rebuild into a fresh schema (`ledger_replay`, dropped first) with the same runner, from
   position 0 up to exactly P.
3. Stream both sides table by table in key order, as PostgreSQL's text form of each row, into a
   SHA-256 per table (the canonical hash), and keep the first differing rows to show.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Any

import psycopg
from psycopg import sql

from adapters.postgres.view_store import (
    LIVE_SCHEMA,
    REPLAY_SCHEMA,
    TABLE_KEYS,
    PostgresViewStore,
)
from adapters.postgres.view_writes import TRACKING_NAME
from adapters.runtime.projection_process import open_runner

DIFFERENCES_SHOWN_MAX = 5


@dataclass
class TableComparison:
    table: str
    live_rows: int = 0
    replay_rows: int = 0
    live_hash: str = ""
    replay_hash: str = ""
    differences: list[tuple[str | None, str | None]] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return self.live_hash == self.replay_hash and self.live_rows == self.replay_rows


@dataclass
class ReplayReport:
    position: int
    tables: list[TableComparison]

    @property
    def equal(self) -> bool:
        return all(t.equal for t in self.tables)

    def canonical_hash(self, side: str) -> str:
        digest = hashlib.sha256()
        for table in self.tables:
            digest.update(f"{table.table}:{getattr(table, side + '_hash')}\n".encode())
        return digest.hexdigest()


def compare_tables(live_rows: Iterator[str], replay_rows: Iterator[str],
                   table: str) -> TableComparison:
    result = TableComparison(table)
    live_digest, replay_digest = hashlib.sha256(), hashlib.sha256()
    for live, replay in zip_longest(live_rows, replay_rows):
        if live is not None:
            result.live_rows += 1
            live_digest.update(live.encode() + b"\n")
        if replay is not None:
            result.replay_rows += 1
            replay_digest.update(replay.encode() + b"\n")
        if live != replay and len(result.differences) < DIFFERENCES_SHOWN_MAX:
            result.differences.append((live, replay))
    result.live_hash, result.replay_hash = live_digest.hexdigest(), replay_digest.hexdigest()
    return result


def replay(database_url: str, on_start: Callable[[int], None] | None = None,
           on_batch: Callable[[int], None] | None = None) -> ReplayReport:
    live = PostgresViewStore(database_url, LIVE_SCHEMA)
    try:
        with psycopg.connect(database_url) as snapshot:
            snapshot.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            row: Any = snapshot.execute(
                f"SELECT notification_id FROM {LIVE_SCHEMA}.tracking WHERE name = %s",
                (TRACKING_NAME,)).fetchone()
            position = int(row[0])
            # Dropped without opening it: a replay schema left by another ledger version
            # would be refused by the store, and it is thrown away anyway.
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(REPLAY_SCHEMA)))
            if on_start is not None:
                on_start(position)
            with open_runner(database_url, schema=REPLAY_SCHEMA) as runner:
                runner.catch_up(stop_position=position, on_batch=on_batch)
                rebuilt = runner.position
            if rebuilt != position:
                raise RuntimeError(f"replay reached position {rebuilt}, not the live {position}: "
                                   "the log ends before the live read models do")
            replayed = PostgresViewStore(database_url, REPLAY_SCHEMA)
            try:
                with psycopg.connect(database_url) as replay_conn:
                    tables = [compare_tables(live.canonical_rows(snapshot, table),
                                             replayed.canonical_rows(replay_conn, table), table)
                              for table in TABLE_KEYS]
            finally:
                replayed.close()
        return ReplayReport(position, tables)
    finally:
        live.close()
