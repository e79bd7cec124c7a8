"""`ledger balance --as-of TIME`: the read models as they were at a moment, from history.

The log is folded in memory, in log order, up to the last event stamped at or before TIME: the
fold stops at the first event whose timestamp is later (event timestamps are taken when the
command ran, just before the commit, so the log prefix is the history as it stood then). The
answer is built by the same code as the live one, with windows relative to TIME.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from adapters.postgres.view_store import PostgresNotificationLog
from projections.answers import MemoryViewStore, balance_answer
from projections.authorization import Freshness
from projections.decoding import EventDecoder
from projections.runner import BATCH_SIZE_EVENTS


class TeamNotInHistoryError(LookupError):
    """The team has no events at or before the moment asked for."""


def fold_history(log: PostgresNotificationLog, decoder: EventDecoder, as_of: datetime,
                 on_batch: Callable[[int], None] | None = None) -> MemoryViewStore:
    store = MemoryViewStore()
    folder = store.folder
    while True:
        entries = log.read_after(folder.position, BATCH_SIZE_EVENTS)
        if not entries:
            return store
        batch = []
        for entry in entries:
            event = decoder.decode(entry)
            if event.timestamp > as_of:
                break
            batch.append((entry, event))
        if batch:
            store.commit(folder.fold(batch))
            if on_batch is not None:
                on_batch(len(batch))
        if len(batch) < len(entries):
            return store


def balance_as_of(database_url: str, decoder: EventDecoder, team_id: UUID, as_of: datetime,
                  on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    if as_of.utcoffset() is None:
        raise ValueError("--as-of needs a time with a UTC offset, e.g. 2026-11-24T18:00:00Z")
    log = PostgresNotificationLog(database_url)
    try:
        store = fold_history(log, decoder, as_of, on_batch)
        head = log.head_position()
    finally:
        log.close()
    team = store.folder.teams.get(team_id)
    if team is None:
        raise TeamNotInHistoryError(f"team {team_id} was not registered at {as_of.isoformat()}")
    freshness = Freshness(store.folder.position, head)
    return balance_answer(team, store.accounts_of(team), store.team_buckets(team), as_of,
                          freshness)
