"""Batch usage recording: price each record, charge it exactly once, refuse what cannot stand.

A batch goes through four steps, and one database transaction at the end:

1. Within the batch, the first record with a `usage_id` is the candidate; a later copy with the
   same fingerprint is a duplicate, one with a different fingerprint a conflict.
2. One query asks which candidate ids were recorded before (in any process, at any time): same
   fingerprint -> duplicate, different -> conflict.
3. Each remaining record is priced on its account by the package in force at `occurred_at`.
   Unknown and closed accounts, and moments with no package in force, are rejections.
4. One `save()` writes every new event, every new idempotency key, the rejections and the counter
   increments atomically. If another writer got there first (a key or an account version already
   taken), the transaction fails as a whole, the touched accounts are reloaded and the batch is
   classified again, so nothing is charged twice and nothing valid is lost.

Accounts stay in a bounded in-process cache between batches; the event store's version check is
what keeps the cache honest, not the cache itself.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

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

COUNTER_RECORDED = "usage_recorded"
COUNTER_DUPLICATES = "usage_duplicates"
COUNTER_CONFLICTS = "usage_conflicts"
COUNTER_REJECTED = "usage_rejected"


class UsageRecording:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._accounts: OrderedDict[UUID, Account] = OrderedDict()

    def forget(self, account_id: UUID) -> None:
        """Drop a cached account (after an admin command changed it in this process)."""
        self._accounts.pop(account_id, None)

    def record_batch(self, records: list[UsageRecord]) -> UsageBatchOutcome:
        if len(records) > USAGE_BATCH_SIZE_MAX:
            raise InvalidInputError(
                f"a usage batch holds at most {USAGE_BATCH_SIZE_MAX} records, got {len(records)}"
            )
        for attempt in range(1, USAGE_SAVE_ATTEMPTS_MAX + 1):
            try:
                return self._attempt(records)
            except IntegrityError:
                if attempt == USAGE_SAVE_ATTEMPTS_MAX:
                    raise
        raise AssertionError("unreachable")

    def _attempt(self, records: list[UsageRecord]) -> UsageBatchOutcome:
        outcome = UsageBatchOutcome()
        rejected_rows: list[RejectionRow] = []
        now = self.ledger.clock()

        def reject(record: UsageRecord, fingerprint: str, code: str, message: str) -> None:
            outcome.rejections.append(UsageRejection(record.usage_id, record.account_id,
                                                     code, message))
            rejected_rows.append(RejectionRow(record.usage_id, str(record.account_id), code,
                                              message, fingerprint, now))

        # 1. Duplicates and conflicts inside the batch.
        candidates: dict[str, tuple[UsageRecord, str]] = {}
        for record in records:
            fingerprint = record.fingerprint()
            first = candidates.get(record.usage_id)
            if first is None:
                candidates[record.usage_id] = (record, fingerprint)
            elif first[1] == fingerprint:
                outcome.duplicates.append(record.usage_id)
            else:
                reject(record, fingerprint, RejectionCode.CONFLICT,
                       f"usage_id {record.usage_id!r} appears twice in the batch with "
                       "different content")

        # 2. Duplicates and conflicts against everything recorded before.
        stored = self.ledger.keyed.select_keys(USAGE_SCOPE, list(candidates))
        to_price: list[tuple[UsageRecord, str]] = []
        for usage_id, (record, fingerprint) in candidates.items():
            earlier = stored.get(usage_id)
            if earlier is None:
                to_price.append((record, fingerprint))
            elif earlier.fingerprint == fingerprint:
                outcome.duplicates.append(usage_id)
            else:
                reject(record, fingerprint, RejectionCode.CONFLICT,
                       f"usage_id {usage_id!r} was already recorded with different content; "
                       "a new request needs a new usage_id")

        # 3. Price on the accounts.
        touched: dict[UUID, Account] = {}
        key_rows: list[KeyRow] = []
        try:
            for record, fingerprint in to_price:
                account = touched.get(record.account_id) or self._load(record.account_id)
                if account is None:
                    reject(record, fingerprint, RejectionCode.UNKNOWN_ACCOUNT,
                           f"account {record.account_id} does not exist")
                    continue
                try:
                    cost_nanos = account.record_usage(record)
                except AccountClosedError as error:
                    reject(record, fingerprint, RejectionCode.ACCOUNT_CLOSED, error.message)
                    continue
                except NoPackageInForceError as error:
                    reject(record, fingerprint, RejectionCode.NO_PACKAGE_IN_FORCE,
                           error.message)
                    continue
                touched[account.id] = account
                key_rows.append(KeyRow(USAGE_SCOPE, record.usage_id, fingerprint,
                                       str(account.id)))
                outcome.recorded.append(RecordedUsage(record.usage_id, account.id,
                                                      account.team_id, cost_nanos))

            # 4. One transaction for all of it.
            conflicts = sum(1 for r in rejected_rows if r.code == RejectionCode.CONFLICT)
            counters = {
                COUNTER_RECORDED: len(outcome.recorded),
                COUNTER_DUPLICATES: len(outcome.duplicates),
                COUNTER_CONFLICTS: conflicts,
                COUNTER_REJECTED: len(rejected_rows) - conflicts,
            }
            self.ledger.save(*touched.values(), idempotency_keys=key_rows,
                             usage_rejections=rejected_rows,
                             counters={k: v for k, v in counters.items() if v})
        except BaseException:
            # Touched accounts hold state that may not be stored: never reuse them.
            for account_id in touched:
                self._accounts.pop(account_id, None)
            raise
        for account_id, account in touched.items():
            self._remember(account_id, account)
        return outcome

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
