"""Preparing a usage batch: decide each record's fate, price the new ones, collect what to store.

Three steps, none of which writes anything (the commit is `services.usage.recording`'s job):

1. `reference_fingerprints`: one query asks which of the batch's ids were recorded before (in any
   process, at any time, or in the batch still committing). An id's reference content is its
   stored content if it has one, else its first copy in the batch (the candidate to charge).
2. `classify`: every record is compared with its id's reference: same fingerprint -> duplicate,
   different -> conflict. (Comparing with the stored content first matters: an exact repeat of a
   charged record is a duplicate even when a conflicting copy precedes it in the batch.)
3. `price`: each remaining record is priced on its account by the package in force at
   `occurred_at`. Unknown and closed accounts, and moments with no package in force, are
   rejections. The events are collected and mapped to stored form here, on the preparing thread.

Then `bookkeeping` turns the rejections into rows stored and counted once per distinct record and
reason, and the batch's counter increments and idempotency keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from domain.account import Account
from domain.errors import AccountClosedError, InvalidInputError, NoPackageInForceError
from domain.usage import UsageRecord
from services.keyed_recording import USAGE_SCOPE, KeyedRecorder, KeyRow, RejectionRow
from services.usage.account_cache import AccountCache
from services.usage.outcomes import (
    COUNTER_CONFLICTS,
    COUNTER_DUPLICATES,
    COUNTER_RECORDED,
    COUNTER_REJECTED,
    RecordedUsage,
    RejectionCode,
    UsageBatchOutcome,
    UsageRejection,
)

USAGE_BATCH_SIZE_MAX = 10_000
# Rejections are keyed in their own scope, so that each distinct one is stored and counted once.
REJECTION_SCOPE = "usage_rejection"


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


@dataclass
class _Verdicts:
    """What preparing decided so far: the outcome and the rejections to store."""

    now: datetime
    outcome: UsageBatchOutcome = field(default_factory=UsageBatchOutcome)
    rejected_rows: list[RejectionRow] = field(default_factory=list)

    def reject(self, record: UsageRecord, fingerprint: str, code: str, message: str) -> None:
        self.outcome.rejections.append(UsageRejection(record.usage_id, record.account_id,
                                                      code, message))
        self.rejected_rows.append(RejectionRow(record.usage_id, str(record.account_id), code,
                                               message, fingerprint, self.now))


class BatchPreparer:
    """Prepares batches against the stored keys, the account cache, the mapper and the clock."""

    def __init__(self, keys: KeyedRecorder, accounts: AccountCache,
                 to_stored_event: Callable[[Any], StoredEvent],
                 clock: Callable[[], datetime]) -> None:
        self.keys = keys
        self.accounts = accounts
        self.to_stored_event = to_stored_event
        self.clock = clock

    def prepare(self, records: list[UsageRecord], in_flight: PreparedBatch | None
                ) -> PreparedBatch:
        """Prepare `records`; `in_flight` is the batch still committing, if any."""
        if len(records) > USAGE_BATCH_SIZE_MAX:
            raise InvalidInputError(
                f"a usage batch holds at most {USAGE_BATCH_SIZE_MAX} records, got {len(records)}"
            )
        verdicts = _Verdicts(now=self.clock())
        fingerprinted = [(record, record.fingerprint()) for record in records]
        reference = self.reference_fingerprints(records, in_flight)
        to_price = self.classify(fingerprinted, reference, verdicts)
        touched, fingerprints, events, stored_events = self.price(to_price, verdicts)
        return PreparedBatch(
            outcome=verdicts.outcome,
            accounts=touched,
            events=events,
            stored_events=stored_events,
            save_kwargs=self.bookkeeping(verdicts, fingerprints),
            fingerprints=fingerprints,
        )

    def reference_fingerprints(self, records: Sequence[UsageRecord],
                               in_flight: PreparedBatch | None) -> dict[str, str]:
        """Step 1: the stored (or still committing) fingerprint of each id recorded before."""
        ids = list(dict.fromkeys(record.usage_id for record in records))
        reference = {key: row.fingerprint for key, row in
                     self.keys.select_keys(USAGE_SCOPE, ids).items()}
        if in_flight is not None:
            for key in ids:
                committing = in_flight.fingerprints.get(key)
                if committing is not None:
                    reference.setdefault(key, committing)
        return reference

    @staticmethod
    def classify(fingerprinted: list[tuple[UsageRecord, str]], reference: dict[str, str],
                 verdicts: _Verdicts) -> list[tuple[UsageRecord, str]]:
        """Step 2: new, duplicate or conflict; returns the new records (first copy of an id)."""
        stored_ids = set(reference)
        to_price: list[tuple[UsageRecord, str]] = []
        for record, fingerprint in fingerprinted:
            known = reference.get(record.usage_id)
            if known is None:
                reference[record.usage_id] = fingerprint
                to_price.append((record, fingerprint))
            elif known == fingerprint:
                verdicts.outcome.duplicates.append(record.usage_id)
            elif record.usage_id in stored_ids:
                verdicts.reject(record, fingerprint, RejectionCode.CONFLICT,
                                f"usage_id {record.usage_id!r} was already recorded with "
                                "different content; a new request needs a new usage_id")
            else:
                verdicts.reject(record, fingerprint, RejectionCode.CONFLICT,
                                f"usage_id {record.usage_id!r} appears twice in the batch with "
                                "different content")
        return to_price

    def price(self, to_price: list[tuple[UsageRecord, str]], verdicts: _Verdicts
              ) -> tuple[dict[UUID, Account], dict[str, str], list[Any], list[StoredEvent]]:
        """Step 3: charge each new record on its account; collect and map the events. On any
        error the touched accounts leave the cache (their state holds unstored events)."""
        touched: dict[UUID, Account] = {}
        fingerprints: dict[str, str] = {}
        try:
            for record, fingerprint in to_price:
                account = touched.get(record.account_id) or self.accounts.get(record.account_id)
                if account is None:
                    verdicts.reject(record, fingerprint, RejectionCode.UNKNOWN_ACCOUNT,
                                    f"account {record.account_id} does not exist")
                    continue
                try:
                    cost_nanos = account.record_usage(record, verdicts.now)
                except AccountClosedError as error:
                    verdicts.reject(record, fingerprint, RejectionCode.ACCOUNT_CLOSED,
                                    error.message)
                    continue
                except NoPackageInForceError as error:
                    verdicts.reject(record, fingerprint, RejectionCode.NO_PACKAGE_IN_FORCE,
                                    error.message)
                    continue
                touched[account.id] = account
                fingerprints[record.usage_id] = fingerprint
                verdicts.outcome.recorded.append(RecordedUsage(record.usage_id, account.id,
                                                               account.team_id, cost_nanos))
            # Collect here, on the preparing thread: the next batch appends to these accounts
            # while this one commits.
            events = [e for account in touched.values() for e in account.collect_events()]
            stored_events = [self.to_stored_event(e) for e in events]
        except BaseException:
            self.accounts.forget_all(touched)
            raise
        return touched, fingerprints, events, stored_events

    def bookkeeping(self, verdicts: _Verdicts, fingerprints: dict[str, str]) -> dict[str, Any]:
        """The extras saved with the events: keys, first-time rejections, counter increments.

        A rejection is stored and counted once per distinct record and reason: the same bad
        record delivered again (a consumer crashed before letting it go) is reported again, but
        is not a second rejection."""
        new_rejections = self.first_rejections(verdicts.rejected_rows)
        conflicts = sum(1 for r in new_rejections if r.code == RejectionCode.CONFLICT)
        counters = {
            COUNTER_RECORDED: len(verdicts.outcome.recorded),
            COUNTER_DUPLICATES: len(verdicts.outcome.duplicates),
            COUNTER_CONFLICTS: conflicts,
            COUNTER_REJECTED: len(new_rejections) - conflicts,
        }
        key_rows = [KeyRow(USAGE_SCOPE, usage_id, fp, "") for usage_id, fp in fingerprints.items()]
        key_rows += [KeyRow(REJECTION_SCOPE, rejection_key(r), r.fingerprint, r.code)
                     for r in new_rejections]
        return {
            "idempotency_keys": key_rows,
            "usage_rejections": new_rejections,
            "counters": {k: v for k, v in counters.items() if v},
        }

    def first_rejections(self, rejected_rows: list[RejectionRow]) -> list[RejectionRow]:
        """The rejections not stored before (nor twice in this batch)."""
        if not rejected_rows:
            return []
        by_key = {rejection_key(r): r for r in rejected_rows}
        stored = self.keys.select_keys(REJECTION_SCOPE, list(by_key))
        return [row for key, row in by_key.items() if key not in stored]
