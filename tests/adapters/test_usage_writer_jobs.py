"""The consumer's writer bounds its jobs: however many partitions' batches wait at once, one
transaction takes at most `job_records_max` records, so the next job is prepared while one
commits (a job that took every batch in flight left the pipeline nothing to prepare)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator

import pytest

from adapters.nats.ingest_settings import JOB_BATCHES_MAX, IngestSettings
from adapters.nats.usage_port import Delivery
from adapters.nats.usage_writer import UsageWriter
from domain.usage import UsageRecord
from services.ledger import Ledger
from services.usage.preparing import USAGE_BATCH_SIZE_MAX
from tests.services.support import team_with_accounts, usage

PARTITIONS = 8
BATCH = 50
JOB_RECORDS_MAX = 2 * BATCH


def batches(ledger: Ledger) -> list[list[tuple[Delivery, UsageRecord]]]:
    accounts = team_with_accounts(ledger, accounts=PARTITIONS).account_ids
    return [[(Delivery(f"ledger.usage.v1.{account}", b"{}", None, p * BATCH + n, None),
              usage(account, f"p{p}-{n}", minutes=n))
             for n in range(BATCH)]
            for p, account in enumerate(accounts)]


def test_no_job_takes_more_than_its_bound_and_every_record_is_recorded(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    transactions: list[int] = []
    record_usage_batches = ledger.record_usage_batches

    def counting(stream: Iterable[list[UsageRecord] | None]) -> Iterator[object]:
        def seen() -> Iterator[list[UsageRecord] | None]:
            for batch in stream:
                if batch is not None:
                    transactions.append(len(batch))
                yield batch
        return record_usage_batches(seen())

    monkeypatch.setattr(ledger, "record_usage_batches", counting)
    waiting = batches(ledger)

    async def run() -> list[dict[int, object]]:
        writer = UsageWriter(ledger, lambda d: str(d.stream_sequence),
                             job_records_max=JOB_RECORDS_MAX).start()
        try:
            # Every partition's batch is queued before the writer thread is served.
            return await asyncio.gather(*(writer.submit(batch, []) for batch in waiting))
        finally:
            await writer.stop()

    verdicts = asyncio.run(run())
    assert all(answer[id(delivery)] is True
               for answer, batch in zip(verdicts, waiting, strict=True)
               for delivery, _ in batch)
    assert sum(transactions) == PARTITIONS * BATCH
    assert max(transactions) <= JOB_RECORDS_MAX, transactions
    assert len(transactions) >= PARTITIONS * BATCH // JOB_RECORDS_MAX


def test_the_consumers_bound_is_a_few_batches_within_the_services_limit() -> None:
    settings = IngestSettings.from_env({"LEDGER_INGEST_BATCH_SIZE": "1000"})
    assert settings.job_records_max == JOB_BATCHES_MAX * 1000
    # Two jobs of the bound fit in what may be in flight by default: one commits, one prepares.
    assert 2 * settings.job_records_max <= settings.in_flight_max * settings.batch_size
    ledger = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    try:
        writer = UsageWriter(ledger, str, job_records_max=10**9)
        assert writer.job_records_max == USAGE_BATCH_SIZE_MAX  # never above the service's
    finally:
        ledger.close()
