"""The auditor's tools on PostgreSQL: the algorithms of `projections/` wired to their stores.

`replay` rebuilds into the `ledger_replay` schema and compares with the live read models;
`verify` checks the audit chain of the live read models against the log; `balance_as_of` folds
the log into memory up to a moment. Each opens what it needs and closes it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from adapters.memory.view_store import MemoryViewStore
from adapters.postgres.notification_log import PostgresNotificationLog
from adapters.postgres.view_schema import LIVE_SCHEMA, REPLAY_SCHEMA
from adapters.postgres.view_store import PostgresViewStore
from adapters.runtime.projection_process import ledger_decoder
from projections.as_of import balance_as_of as fold_balance_as_of
from projections.audit_verify import VerifyReport, verify_audit
from projections.decoding import EventDecoder
from projections.replay import ReplayReport, replay_and_compare


def replay(database_url: str, on_start: Callable[[int], None] | None = None,
           on_batch: Callable[[int], None] | None = None) -> ReplayReport:
    """`ledger replay`: works while `ledger project` runs (the live side is a snapshot)."""
    decoder = ledger_decoder(database_url)
    log = PostgresNotificationLog(database_url)
    try:
        with PostgresViewStore(database_url, LIVE_SCHEMA) as live:
            return replay_and_compare(
                live, lambda: PostgresViewStore.recreated(database_url, REPLAY_SCHEMA), log,
                decoder, on_start, on_batch)
    finally:
        log.close()


def verify(database_url: str, decoder: EventDecoder,
           on_progress: Callable[[int], None] | None = None) -> VerifyReport:
    """`ledger audit verify` on the live read models."""
    log = PostgresNotificationLog(database_url)
    try:
        with PostgresViewStore(database_url, LIVE_SCHEMA) as live, live.snapshot():
            return verify_audit(log, live, decoder, on_progress)
    finally:
        log.close()


def balance_as_of(database_url: str, decoder: EventDecoder, team_id: UUID, as_of: datetime,
                  on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """`ledger balance --as-of`: the log folded into memory up to `as_of`."""
    log = PostgresNotificationLog(database_url)
    try:
        return fold_balance_as_of(log, decoder, team_id, as_of, MemoryViewStore, on_batch)
    finally:
        log.close()
