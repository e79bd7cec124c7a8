"""`ledger balance --as-of TIME`: the read models as they were at a moment, from history.

The log is folded into a fresh store (the caller's factory: memory), in log order, up to the last
event stamped at or before TIME: the fold stops at the first event whose timestamp is later
(event timestamps are taken when the command ran, just before the commit, so the log prefix is
the history as it stood then). The answer is built by the same code as the live one
(`answers.balance_answer`), with windows relative to TIME.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from projections.answers import balance_answer
from projections.authorization import Freshness
from projections.ports import Decoder, LogReader, ViewReader, ViewStore
from projections.runner import BATCH_SIZE_EVENTS


class HistoryStore(ViewStore, ViewReader, Protocol):
    """A store history is folded into and then read from."""


class TeamNotInHistoryError(LookupError):
    """The team has no events at or before the moment asked for."""


def fold_history(log: LogReader, decoder: Decoder, as_of: datetime, store: HistoryStore,
                 on_batch: Callable[[int], None] | None = None) -> None:
    """Fold every event stamped at or before `as_of` into `store`, batch by batch."""
    folder = store.load_folder()
    while True:
        entries = log.read_after(folder.position, BATCH_SIZE_EVENTS)
        if not entries:
            return
        batch = []
        for entry in entries:
            event = decoder.decode(entry)
            if event.timestamp > as_of:
                break
            batch.append((entry, event))
        if batch:
            store.finish(store.stage(folder.fold(batch)))
            if on_batch is not None:
                on_batch(len(batch))
        if len(batch) < len(entries):
            return


def balance_as_of(log: LogReader, decoder: Decoder, team_id: UUID, as_of: datetime,
                  new_store: Callable[[], HistoryStore],
                  on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """A team's balance and windows as they were at `as_of`, folded into `new_store()`."""
    if as_of.utcoffset() is None:
        raise ValueError("--as-of needs a time with a UTC offset, e.g. 2026-11-24T18:00:00Z")
    store = new_store()
    fold_history(log, decoder, as_of, store, on_batch)
    head = log.head_position()
    with store.snapshot() as (position, _):
        team = store.team(team_id)
        if team is None:
            raise TeamNotInHistoryError(
                f"team {team_id} was not registered at {as_of.isoformat()}")
        return balance_answer(team, store.accounts_of(team_id), store.usage_buckets(team, as_of),
                              as_of, Freshness(position, head))
