"""`Ledger.save_events` (the usage path's split `save()`) does everything `save()` does after
its insert: the aggregate cache, due snapshots, and the `notify()` hook."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from services.ledger import ACCOUNT_SNAPSHOT_INTERVAL_EVENTS, Ledger
from tests.services.support import team_with_accounts, usage

MEMORY = {"PERSISTENCE_MODULE": "eventsourcing.popo"}


class NotifiedLedger(Ledger):
    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env)
        self.notified: list[Any] = []

    def notify(self, new_events: list[Any]) -> None:
        self.notified.extend(new_events)


def test_recorded_usage_updates_a_configured_aggregate_cache() -> None:
    ledger = Ledger(env={**MEMORY, "AGGREGATE_CACHE_MAXSIZE": "100",
                         "AGGREGATE_CACHE_FASTFORWARD": "n"})
    setup = team_with_accounts(ledger, accounts=1)
    account_id = setup.account_ids[0]
    ledger.record_usage_batch([usage(account_id, "req-1")])
    cache = ledger.repository.cache
    assert cache is not None
    cached = cache.get(account_id)
    assert cached.version == ledger.get_account(account_id).version
    assert cached.spent_nanos > 0


def test_recorded_usage_reaches_the_notify_hook() -> None:
    ledger = NotifiedLedger(MEMORY)
    setup = team_with_accounts(ledger, accounts=1)
    ledger.notified.clear()
    ledger.record_usage_batch([usage(setup.account_ids[0], "req-1"),
                               usage(setup.account_ids[0], "req-2")])
    assert [e.usage_id for e in ledger.notified] == ["req-1", "req-2"]


def test_recorded_usage_takes_the_snapshots_that_are_due() -> None:
    ledger = Ledger(env=MEMORY)
    setup = team_with_accounts(ledger, accounts=1)
    account_id: UUID = setup.account_ids[0]
    version = ledger.get_account(account_id).version
    records = [usage(account_id, f"req-{n}", minutes=n)
               for n in range(ACCOUNT_SNAPSHOT_INTERVAL_EVENTS - version)]
    ledger.record_usage_batch(records)
    assert ledger.snapshots is not None
    snapshots = list(ledger.snapshots.get(account_id))
    assert [s.originator_version for s in snapshots] == [ACCOUNT_SNAPSHOT_INTERVAL_EVENTS]
