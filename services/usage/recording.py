"""Batch usage recording: price each record, charge it exactly once, refuse what cannot stand.

A batch is prepared (`services.usage.preparing`: which ids are known, duplicates and conflicts,
pricing on the accounts) and committed in one transaction: every new event, every new
idempotency key, the rejections and the counter increments. If another writer got there first (a
key or an account version already taken) the transaction fails as a whole, the touched accounts
are dropped from the cache and the batch is prepared again from what is stored, so nothing is
charged twice and nothing valid is lost.

`record_batches` pipelines a stream of batches: while batch N commits on a second thread, batch
N+1 is prepared on top of N's (not yet committed) account state, with N's keys counted as already
recorded. The database and Python then work at the same time, which on a 2-core machine nearly
doubles throughput. If N fails to commit, N+1 was prepared on a state that never existed: both
are dropped and recorded again one at a time, so the pipeline changes speed, never results.
Whatever ends the pipeline early (a commit that failed outright, the caller closing the stream),
every batch not known to be committed leaves the account cache: a cached account must never hold
an event that was not stored, or the account's next event would be stored after a gap in its
versions (its history could not be loaded again).
A long-lived caller (the bus consumer) puts `None` in the stream when it has nothing more for
now: the batch in flight is then finished and its outcome yielded at once, instead of waiting
for a next batch that may be a while coming.

This package knows nothing of the `Ledger` application: it is given the narrow things it uses
(`UsagePorts`), so the application imports it and never the other way round.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, StoredEvent

from domain.usage import UsageRecord
from services.keyed_recording import KeyedRecorder
from services.thread_switching import switch_interval_at_most
from services.usage.account_cache import AccountCache
from services.usage.outcomes import UsageBatchOutcome
from services.usage.preparing import BatchPreparer, PreparedBatch

USAGE_SAVE_ATTEMPTS_MAX = 5
# The committing thread mostly waits on the database; when a reply arrives it needs the GIL
# back from the preparing thread (see `services.thread_switching`).
PIPELINE_SWITCH_INTERVAL = timedelta(microseconds=500)


class SaveEvents(Protocol):
    """Stores collected, mapped events with extras in one transaction (`Ledger.save_events`)."""

    def __call__(self, events: list[Any], stored_events: list[StoredEvent],
                 aggregates: Mapping[UUID, Aggregate], **kwargs: Any) -> None: ...


@dataclass(frozen=True)
class UsagePorts:
    """What usage recording needs from the application, and nothing more."""

    keys: KeyedRecorder  # which usage ids and rejections are stored
    load: Callable[[UUID], object]  # the repository's get (raises AggregateNotFoundError)
    to_stored_event: Callable[[Any], StoredEvent]  # the application's mapper
    save_events: SaveEvents
    clock: Callable[[], datetime]


InFlight = tuple[list[UsageRecord], PreparedBatch, Future[None]]


class UsageRecording:
    def __init__(self, ports: UsagePorts) -> None:
        self._save_events = ports.save_events
        self._accounts = AccountCache(ports.load)
        self._preparer = BatchPreparer(ports.keys, self._accounts, ports.to_stored_event,
                                       ports.clock)
        # Batches prepare on cached Account objects, so two threads of one process (the HTTP
        # API's workers) must not prepare at once: they would fold into the same objects and
        # lose to each other on every save. One batch at a time per process; other processes
        # are still met by the version check and the retry below. `record_batches` (the bus
        # consumer's pipeline) is one writer on its own thread and does not take this lock: a
        # process uses one or the other on one Ledger.
        self._one_batch_at_a_time = threading.Lock()

    def forget(self, account_id: UUID) -> None:
        """Drop a cached account (after an admin command changed it in this process)."""
        self._accounts.forget(account_id)

    # One batch ---------------------------------------------------------------------------------

    def record_batch(self, records: list[UsageRecord]) -> UsageBatchOutcome:
        with self._one_batch_at_a_time:
            return self._record_batch(records)

    def _record_batch(self, records: list[UsageRecord]) -> UsageBatchOutcome:
        for attempt in range(1, USAGE_SAVE_ATTEMPTS_MAX + 1):
            prepared = self._preparer.prepare(records, in_flight=None)
            try:
                self._commit(prepared)
            except IntegrityError:
                self._drop(prepared)
                if attempt == USAGE_SAVE_ATTEMPTS_MAX:
                    raise
            except BaseException:
                self._drop(prepared)
                raise
            else:
                return prepared.outcome
        raise AssertionError("unreachable")

    # A stream of batches, pipelined ----------------------------------------------------------

    def record_batches(self, batches: Iterable[list[UsageRecord] | None]
                       ) -> Iterator[UsageBatchOutcome]:
        """Record batches in order, yielding each outcome once its batch is committed; a `None`
        in `batches` finishes the batch in flight (one outcome per batch, none for a None)."""
        with switch_interval_at_most(PIPELINE_SWITCH_INTERVAL):
            yield from self._pipeline(batches)

    def _pipeline(self, batches: Iterable[list[UsageRecord] | None]
                  ) -> Iterator[UsageBatchOutcome]:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-commit") as committer:
            in_flight: InFlight | None = None
            unsent: PreparedBatch | None = None  # prepared on the cached accounts, not committing
            try:
                for records in batches:
                    if records is None:
                        if in_flight is not None:
                            yield self._finish(in_flight)
                            in_flight = None
                        continue
                    previous = in_flight[1] if in_flight else None
                    unsent = self._preparer.prepare(records, in_flight=previous)
                    if in_flight is not None:
                        if not self._committed(in_flight):
                            # The previous batch failed: this one was built on its state.
                            self._drop(unsent)
                            unsent = None
                            yield self.record_batch(in_flight[0])
                            unsent = self._preparer.prepare(records, in_flight=None)
                        else:
                            yield in_flight[1].outcome
                    in_flight = (records, unsent, committer.submit(self._commit, unsent))
                    unsent = None
                if in_flight is not None:
                    yield self._finish(in_flight)
                    in_flight = None
            except BaseException:
                # Leaving early (a failed commit, a database gone, the caller closing the
                # stream): no cached account may keep events that were never stored, or a
                # later batch would store its events after a gap in the account's versions.
                if unsent is not None:
                    self._drop(unsent)
                if in_flight is not None:
                    self._drop_unless_committed(in_flight)
                raise

    def _drop_unless_committed(self, in_flight: InFlight) -> None:
        try:
            in_flight[2].result()
        except BaseException:
            self._drop(in_flight[1])

    def _finish(self, in_flight: InFlight) -> UsageBatchOutcome:
        """The outcome of the batch in flight once committed, or of recording it again."""
        if self._committed(in_flight):
            return in_flight[1].outcome
        return self.record_batch(in_flight[0])

    def _committed(self, in_flight: InFlight) -> bool:
        """Wait for a batch's commit: True if it committed, False if it must be redone."""
        _records, prepared, future = in_flight
        try:
            future.result()
        except IntegrityError:
            self._drop(prepared)
            return False
        except BaseException:
            self._drop(prepared)
            raise
        return True

    def _commit(self, prepared: PreparedBatch) -> None:
        self._save_events(prepared.events, prepared.stored_events, prepared.accounts,
                          **prepared.save_kwargs)

    def _drop(self, prepared: PreparedBatch) -> None:
        """Forget accounts whose in-memory state may hold events that were never stored."""
        self._accounts.forget_all(prepared.accounts)
