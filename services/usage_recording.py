"""Batch usage recording: price each record, charge it exactly once, refuse what cannot stand.

A batch is prepared in three steps and committed in one transaction:

1. One query asks which of the batch's ids were recorded before (in any process, at any time).
   An id's reference content is its stored content if it has one, else its first copy in the
   batch (which becomes the candidate to charge).
2. Every record is compared with its id's reference: same fingerprint -> duplicate, different
   -> conflict. (Comparing with the stored content first matters: an exact repeat of a charged
   record is a duplicate even when a conflicting copy precedes it in the batch.)
3. Each remaining record is priced on its account by the package in force at `occurred_at`.
   Unknown and closed accounts, and moments with no package in force, are rejections.
4. Commit: one transaction writes every new event, every new idempotency key, the rejections and
   the counter increments. If another writer got there first (a key or an account version
   already taken) the transaction fails as a whole, the touched accounts are dropped from the
   cache and the batch is prepared again from what is stored, so nothing is charged twice and
   nothing valid is lost.

`record_batches` pipelines a stream of batches: while batch N commits on a second thread, batch
N+1 is prepared on top of N's (not yet committed) account state, with N's keys counted as already
recorded. The database and Python then work at the same time, which on a 2-core machine nearly
doubles throughput. If N fails to commit, N+1 was prepared on a state that never existed: both
are dropped and recorded again one at a time, so the pipeline changes speed, never results.
A long-lived caller (the bus consumer) puts `None` in the stream when it has nothing more for
now: the batch in flight is then finished and its outcome yielded at once, instead of waiting
for a next batch that may be a while coming.

Accounts stay in a bounded in-process cache between batches; the event store's version check is
what keeps the cache honest, not the cache itself.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, StoredEvent

from domain.account import Account
from domain.errors import AccountClosedError, InvalidInputError, NoPackageInForceError
from domain.usage import UsageRecord
from services.keyed_recording import USAGE_SCOPE, KeyRow, RejectionRow
from services.outcomes import (
    RecordedUsage,
    RejectionCode,
    UsageBatchOutcome,
    UsageRejection,
)

if TYPE_CHECKING:
    from services.ledger import Ledger

USAGE_BATCH_SIZE_MAX = 10_000
USAGE_SAVE_ATTEMPTS_MAX = 5
ACCOUNT_CACHE_SIZE_MAX = 20_000
PIPELINE_SWITCH_INTERVAL_SECONDS = 0.0005

# Rejections are keyed in their own scope, so that each distinct one is stored and counted once.
REJECTION_SCOPE = "usage_rejection"

COUNTER_RECORDED = "usage_recorded"
COUNTER_DUPLICATES = "usage_duplicates"
COUNTER_CONFLICTS = "usage_conflicts"
COUNTER_REJECTED = "usage_rejected"


def rejection_key(row: RejectionRow) -> str:
    """Reason, content and id: the code and the hex fingerprint hold no ':', so it is unique."""
    return f"{row.code}:{row.fingerprint}:{row.usage_id}"


@dataclass
class PreparedBatch:
    """A priced batch whose events are collected but not yet stored."""

    outcome: UsageBatchOutcome
    accounts: dict[UUID, Account]
    events: list[Any]
    stored_events: list[StoredEvent]
    save_kwargs: dict[str, Any]
    fingerprints: dict[str, str] = field(default_factory=dict)  # recorded usage_id -> fp


class UsageRecording:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._accounts: OrderedDict[UUID, Account] = OrderedDict()
        # Batches prepare on cached Account objects, so two threads of one process (the HTTP
        # API's workers) must not prepare at once: they would fold into the same objects and
        # lose to each other on every save. One batch at a time per process; other processes
        # are still met by the version check and the retry below. `record_batches` (the bus
        # consumer's pipeline) is one writer on its own thread and does not take this lock: a
        # process uses one or the other on one Ledger.
        self._one_batch_at_a_time = threading.Lock()

    def forget(self, account_id: UUID) -> None:
        """Drop a cached account (after an admin command changed it in this process)."""
        self._accounts.pop(account_id, None)

    # One batch ---------------------------------------------------------------------------------

    def record_batch(self, records: list[UsageRecord]) -> UsageBatchOutcome:
        with self._one_batch_at_a_time:
            return self._record_batch(records)

    def _record_batch(self, records: list[UsageRecord]) -> UsageBatchOutcome:
        for attempt in range(1, USAGE_SAVE_ATTEMPTS_MAX + 1):
            prepared = self._prepare(records, in_flight=None)
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
        # The committing thread mostly waits on the database. When a reply arrives it needs
        # the GIL back from the preparing thread, which by default gives it up only every 5 ms;
        # a shorter interval lets the commit thread run as soon as it can.
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(PIPELINE_SWITCH_INTERVAL_SECONDS)
        try:
            yield from self._pipeline(batches)
        finally:
            sys.setswitchinterval(switch_interval)

    def _pipeline(self, batches: Iterable[list[UsageRecord] | None]
                  ) -> Iterator[UsageBatchOutcome]:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-commit") as committer:
            in_flight: tuple[list[UsageRecord], PreparedBatch, Future[None]] | None = None
            for records in batches:
                if records is None:
                    if in_flight is not None:
                        if self._committed(in_flight):
                            yield in_flight[1].outcome
                        else:
                            yield self.record_batch(in_flight[0])
                        in_flight = None
                    continue
                previous = in_flight[1] if in_flight else None
                prepared = self._prepare(records, in_flight=previous)
                if in_flight is not None:
                    if not self._committed(in_flight):
                        # The previous batch failed: this one was built on its state.
                        self._drop(prepared)
                        yield self.record_batch(in_flight[0])
                        prepared = self._prepare(records, in_flight=None)
                    else:
                        yield in_flight[1].outcome
                in_flight = (records, prepared, committer.submit(self._commit, prepared))
            if in_flight is not None:
                if self._committed(in_flight):
                    yield in_flight[1].outcome
                else:
                    yield self.record_batch(in_flight[0])

    def _committed(self, in_flight: tuple[list[UsageRecord], PreparedBatch, Future[None]]
                   ) -> bool:
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

    # Steps -------------------------------------------------------------------------------------

    def _prepare(self, records: list[UsageRecord], in_flight: PreparedBatch | None
                 ) -> PreparedBatch:
        if len(records) > USAGE_BATCH_SIZE_MAX:
            raise InvalidInputError(
                f"a usage batch holds at most {USAGE_BATCH_SIZE_MAX} records, got {len(records)}"
            )
        outcome = UsageBatchOutcome()
        rejected_rows: list[RejectionRow] = []
        now = self.ledger.clock()

        def reject(record: UsageRecord, fingerprint: str, code: str, message: str) -> None:
            outcome.rejections.append(UsageRejection(record.usage_id, record.account_id,
                                                     code, message))
            rejected_rows.append(RejectionRow(record.usage_id, str(record.account_id), code,
                                              message, fingerprint, now))

        # 1. What each usage_id already stands for: its stored content (recorded before, in any
        #    process, or in the batch still committing), else its first copy in this batch.
        fingerprinted = [(record, record.fingerprint()) for record in records]
        ids = list(dict.fromkeys(record.usage_id for record in records))
        reference = {key: row.fingerprint for key, row in
                     self.ledger.keyed.select_keys(USAGE_SCOPE, ids).items()}
        if in_flight is not None:
            for key in ids:
                committing = in_flight.fingerprints.get(key)
                if committing is not None:
                    reference.setdefault(key, committing)
        stored_ids = set(reference)

        # 2. Each record against that: new, duplicate or conflict.
        to_price: list[tuple[UsageRecord, str]] = []
        for record, fingerprint in fingerprinted:
            known = reference.get(record.usage_id)
            if known is None:
                reference[record.usage_id] = fingerprint
                to_price.append((record, fingerprint))
            elif known == fingerprint:
                outcome.duplicates.append(record.usage_id)
            elif record.usage_id in stored_ids:
                reject(record, fingerprint, RejectionCode.CONFLICT,
                       f"usage_id {record.usage_id!r} was already recorded with different "
                       "content; a new request needs a new usage_id")
            else:
                reject(record, fingerprint, RejectionCode.CONFLICT,
                       f"usage_id {record.usage_id!r} appears twice in the batch with "
                       "different content")

        # 3. Price on the accounts.
        touched: dict[UUID, Account] = {}
        fingerprints: dict[str, str] = {}
        try:
            for record, fingerprint in to_price:
                account = touched.get(record.account_id) or self._load(record.account_id)
                if account is None:
                    reject(record, fingerprint, RejectionCode.UNKNOWN_ACCOUNT,
                           f"account {record.account_id} does not exist")
                    continue
                try:
                    cost_nanos = account.record_usage(record, now)
                except AccountClosedError as error:
                    reject(record, fingerprint, RejectionCode.ACCOUNT_CLOSED, error.message)
                    continue
                except NoPackageInForceError as error:
                    reject(record, fingerprint, RejectionCode.NO_PACKAGE_IN_FORCE,
                           error.message)
                    continue
                touched[account.id] = account
                fingerprints[record.usage_id] = fingerprint
                outcome.recorded.append(RecordedUsage(record.usage_id, account.id,
                                                      account.team_id, cost_nanos))
            # Collect here, on the preparing thread: the next batch appends to these accounts
            # while this one commits.
            events = [e for account in touched.values() for e in account.collect_events()]
            to_stored_event = self.ledger.mapper.to_stored_event
            stored_events = [to_stored_event(e) for e in events]
        except BaseException:
            for account_id in touched:
                self._accounts.pop(account_id, None)
            raise

        # A rejection is stored and counted once per distinct record and reason: the same bad
        # record delivered again (a consumer crashed before letting it go) is reported again,
        # but is not a second rejection.
        new_rejections = self._first_rejections(rejected_rows)
        conflicts = sum(1 for r in new_rejections if r.code == RejectionCode.CONFLICT)
        counters = {
            COUNTER_RECORDED: len(outcome.recorded),
            COUNTER_DUPLICATES: len(outcome.duplicates),
            COUNTER_CONFLICTS: conflicts,
            COUNTER_REJECTED: len(new_rejections) - conflicts,
        }
        key_rows = [KeyRow(USAGE_SCOPE, usage_id, fp, "") for usage_id, fp in fingerprints.items()]
        key_rows += [KeyRow(REJECTION_SCOPE, rejection_key(r), r.fingerprint, r.code)
                     for r in new_rejections]
        return PreparedBatch(
            outcome=outcome,
            accounts=touched,
            events=events,
            stored_events=stored_events,
            save_kwargs={
                "idempotency_keys": key_rows,
                "usage_rejections": new_rejections,
                "counters": {k: v for k, v in counters.items() if v},
            },
            fingerprints=fingerprints,
        )

    def _first_rejections(self, rejected_rows: list[RejectionRow]) -> list[RejectionRow]:
        """The rejections not stored before (nor twice in this batch)."""
        if not rejected_rows:
            return []
        by_key = {rejection_key(r): r for r in rejected_rows}
        stored = self.ledger.keyed.select_keys(REJECTION_SCOPE, list(by_key))
        return [row for key, row in by_key.items() if key not in stored]

    def _commit(self, prepared: PreparedBatch) -> None:
        self.ledger.save_events(prepared.events, prepared.stored_events, prepared.accounts,
                                **prepared.save_kwargs)

    def _drop(self, prepared: PreparedBatch) -> None:
        """Forget accounts whose in-memory state may hold events that were never stored."""
        for account_id in prepared.accounts:
            self._accounts.pop(account_id, None)

    # The account cache -------------------------------------------------------------------------

    def _load(self, account_id: UUID) -> Account | None:
        cached = self._accounts.get(account_id)
        if cached is not None:
            self._accounts.move_to_end(account_id)
            return cached
        try:
            aggregate: object = self.ledger.repository.get(account_id)
        except AggregateNotFoundError:
            return None
        if not isinstance(aggregate, Account):
            return None
        self._remember(account_id, aggregate)
        return aggregate

    def _remember(self, account_id: UUID, account: Account) -> None:
        self._accounts[account_id] = account
        self._accounts.move_to_end(account_id)
        while len(self._accounts) > ACCOUNT_CACHE_SIZE_MAX:
            self._accounts.popitem(last=False)
