"""The views outbox, the same on the in-memory and the PostgreSQL view stores: every committed
batch leaves its `ledger.views.*` messages in order, relayed rows are pruned, and past the limit
the rows superseded on their subject go first, so the latest view of every team stays."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest

import adapters.memory.view_store as memory_view_store
import adapters.postgres.view_outbox as postgres_view_outbox
from adapters.memory.view_store import MemoryViewStore
from adapters.postgres.view_outbox import PostgresViewOutbox
from adapters.postgres.view_store import PostgresViewStore
from projections.decoding import EventDecoder
from projections.fold import ViewFolder
from projections.view_messages import OutboxRow, encoded_view_messages
from projections.views import BatchChanges
from tests.projections.history import ledger_at, memory_ledger, memory_log, mixed_history

BATCH_SIZE_EVENTS = 25  # small, so that the history spans several batches
ROWS_ALL = 1_000  # more than the history leaves in the outbox


@pytest.fixture(scope="module")
def batches() -> list[BatchChanges]:
    with memory_ledger() as ledger:
        mixed_history(ledger)
        log = memory_log(ledger)
        decoder = EventDecoder(ledger.mapper)
        folder = ViewFolder()
        found = []
        while entries := log.read_after(folder.position, BATCH_SIZE_EVENTS):
            found.append(folder.fold_log(entries, decoder))
    assert len(found) > 2
    return found


@pytest.fixture(params=["memory", "postgres"])
def stores(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Any]]:
    """(the view store, the relay's side of its outbox)."""
    if request.param == "memory":
        memory = MemoryViewStore()
        yield memory, memory
        return
    database_url = request.getfixturevalue("database_url")
    with ledger_at(database_url):
        pass  # creates the events table, which answers read the head of the log from
    store = PostgresViewStore(database_url)
    outbox = PostgresViewOutbox(database_url)
    try:
        yield store, outbox
    finally:
        outbox.close()
        store.close()


def _apply(store: Any, batches: list[BatchChanges]) -> None:
    for batch in batches:
        store.finish(store.stage(batch))


def _expected(batches: list[BatchChanges]) -> list[tuple[int, str, bytes]]:
    return [(batch.last_position, subject, payload) for batch in batches
            for subject, payload in encoded_view_messages(batch)]


def _rows(rows: list[OutboxRow]) -> list[tuple[int, str, bytes]]:
    return [(row.position, row.subject, row.payload) for row in rows]


def test_every_committed_batch_leaves_its_view_messages_in_order(
        stores: tuple[Any, Any], batches: list[BatchChanges]) -> None:
    store, outbox = stores
    _apply(store, batches)
    pending = outbox.pending(ROWS_ALL)
    assert _rows(pending) == _expected(batches)
    assert [row.seq for row in pending] == sorted({row.seq for row in pending})
    balance = [r for r in pending if r.subject.startswith("ledger.views.balance.")][-1]
    message = json.loads(balance.payload)
    team = store.team(UUID(message["team_id"]))
    # Nanos travel as decimal strings (they exceed 2**53).
    assert message == {"position": balance.position, **{
        k: str(v) if k.endswith("_nanos") else v for k, v in team.as_dict().items()}}
    assert len({row.message_id for row in pending}) == len(pending)


def test_a_refused_batch_leaves_no_message(stores: tuple[Any, Any],
                                           batches: list[BatchChanges]) -> None:
    store, outbox = stores
    _apply(store, batches[:2])
    with pytest.raises(Exception, match="position"):
        store.finish(store.stage(batches[0]))
    assert _rows(outbox.pending(ROWS_ALL)) == _expected(batches[:2])


def test_relayed_rows_are_pruned_and_the_rest_keep_their_order(
        stores: tuple[Any, Any], batches: list[BatchChanges]) -> None:
    store, outbox = stores
    _apply(store, batches)
    pending = outbox.pending(ROWS_ALL)
    first = outbox.pending(3)
    assert first == pending[:3]
    outbox.mark_relayed(first[-1].seq)
    assert outbox.pending(ROWS_ALL) == pending[3:]
    outbox.mark_relayed(pending[-1].seq)
    assert outbox.pending(ROWS_ALL) == []


def test_past_the_limit_superseded_rows_go_and_every_subjects_latest_stays(
        stores: tuple[Any, Any], batches: list[BatchChanges],
        monkeypatch: pytest.MonkeyPatch) -> None:
    store, outbox = stores
    expected = _expected(batches)
    latest = {subject: (position, subject, payload) for position, subject, payload in expected}
    assert len(latest) < len(expected), "the history must repeat some subjects"
    for module in (memory_view_store, postgres_view_outbox):
        monkeypatch.setattr(module, "OUTBOX_ROWS_MAX", len(latest))
    _apply(store, batches)
    assert sorted(_rows(outbox.pending(ROWS_ALL))) == sorted(latest.values())
