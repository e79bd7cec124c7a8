"""Exactly once across real consumer processes: a duplicate storm, and kill -9 at random moments.

Real NATS JetStream, real PostgreSQL, real `ledger consume` processes started with subprocess.
What the ledger holds is checked against what the publisher sent: counts, and the exact sum of
costs per account computed from the package's price terms.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from adapters.nats.ingest_settings import PIN_TTL_SECONDS_MIN as PIN_TTL_MIN_SECONDS
from adapters.nats.ingest_settings import IngestSettings
from adapters.nats.streams import recreate_stream
from adapters.nats.usage_publisher import PublishReport, UsagePublisher
from adapters.runtime.composition import open_ledger
from domain.usage import UsageRecord
from tests.integration.support import (
    ConsumerProcess,
    accounts,
    assert_charged_exactly_once,
    expected_spent,
    make_records,
    processed,
    spent_by_account,
    wait_until,
)

pytestmark = pytest.mark.slow

STORM_RECORDS = 20_000
STORM_COPIES = 3
STORM_ACCOUNTS = 300
KILL_RECORDS = 30_000
KILLS_MIN = 20
# A restarted process needs its start-up (seconds on a loaded machine) plus the pin TTL.
KILL_PROGRESS_WAIT_SECONDS = 12.0
KILL_DELAY_SECONDS = (0.0, 0.3)  # a kill lands this long after charges were seen flowing
# The records are published in chunks, one chunk before each kill, so that charges flow at every
# kill however fast or slow the machine is (a consumer that keeps up finishes a single burst long
# before 20 kills; paced by the clock, a loaded machine killed after the last chunk was charged).
KILL_CHUNK_RECORDS = KILL_RECORDS // KILLS_MIN
DRAIN_TIMEOUT_SECONDS = 180.0
FEED_STEP_RECORDS = 50
FEED_STEP_PAUSE_SECONDS = 0.02


async def feed(publisher: UsagePublisher, records: list[UsageRecord]) -> PublishReport:
    for start in range(0, len(records), FEED_STEP_RECORDS):
        await publisher.publish_many(records[start:start + FEED_STEP_RECORDS], window=500)
        await asyncio.sleep(FEED_STEP_PAUSE_SECONDS)
    return publisher.report


async def test_duplicate_storm_charges_each_record_once(database_url: str, nats_server_url: str,
                                                        tmp_path: Path) -> None:
    settings = IngestSettings(partitions=8)
    await recreate_stream(nats_server_url, settings)
    ledger = open_ledger(database_url)
    priced = accounts(ledger, STORM_ACCOUNTS)
    records = make_records(priced, STORM_RECORDS, "storm")
    # Each record three times, shuffled: two copies carry Nats-Msg-Id (the broker drops the
    # later one inside its window), one does not (as from a producer that never sets it), so
    # the ledger itself must catch at least one duplicate of every record.
    copies = [(r, True) for r in records] * 2 + [(r, False) for r in records]
    random.Random(3).shuffle(copies)
    consumers = [ConsumerProcess(database_url, nats_server_url, member=m, members=2,
                                 settings=settings, log_path=tmp_path / f"consumer-{m}.log")
                 .start() for m in range(2)]
    try:
        async with await UsagePublisher.connect(nats_server_url) as publisher:
            report = await publisher.publish_many([r for r, _ in copies],
                                                  message_ids=[flag for _, flag in copies])
        assert report.published == STORM_RECORDS * STORM_COPIES
        delivered = report.published - report.broker_duplicates
        await wait_until(lambda: processed(ledger) >= delivered, DRAIN_TIMEOUT_SECONDS,
                         "the ledger answering every delivered copy")
        assert all(c.alive() for c in consumers)
    finally:
        exit_codes = [c.stop() for c in consumers]
    assert exit_codes == [0, 0]
    counters = ledger.keyed.counter_values()
    assert counters["usage_recorded"] == STORM_RECORDS
    assert counters.get("usage_rejected", 0) == counters.get("usage_conflicts", 0) == 0
    # Every copy is accounted for: dropped by the broker, or counted as a duplicate by the ledger.
    assert report.broker_duplicates + counters["usage_duplicates"] == (
        STORM_RECORDS * (STORM_COPIES - 1))
    assert counters["usage_duplicates"] >= STORM_RECORDS
    assert spent_by_account(ledger, priced) == expected_spent(records)
    assert sum(ledger.get_account(a.account_id).usage_count for a in priced) == STORM_RECORDS
    ledger.close()


async def test_consumers_killed_at_random_moments_lose_nothing_and_charge_nothing_twice(
        database_url: str, nats_server_url: str, tmp_path: Path) -> None:
    # A short ack wait brings a killed process's unacknowledged messages back quickly, and a
    # short pin TTL lets the restarted process take its partitions back from its dead self soon
    # (until the TTL runs out, the server keeps them pinned to the dead connection).
    settings = IngestSettings(partitions=4, batch_size=500, ack_wait_seconds=2.0,
                              pin_ttl_seconds=PIN_TTL_MIN_SECONDS)
    await recreate_stream(nats_server_url, settings)
    ledger = open_ledger(database_url)
    priced = accounts(ledger, 100)
    records = make_records(priced, KILL_RECORDS, "kill")
    consumers = [ConsumerProcess(database_url, nats_server_url, member=m, members=2,
                                 settings=settings, log_path=tmp_path / f"consumer-{m}.log")
                 .start() for m in range(2)]
    rng = random.Random()
    kills = 0
    kills_mid_work = 0

    def recorded() -> int:
        return ledger.keyed.counter_values().get("usage_recorded", 0)

    try:
        async with await UsagePublisher.connect(nats_server_url) as publisher:
            published = 0
            while kills < KILLS_MIN:
                # Publish the next chunk, then kill the consumers in turn, each a random moment
                # after charges were seen flowing again (or after a bound, if they do not).
                chunk = records[published:published + KILL_CHUNK_RECORDS]
                target = published + len(chunk)
                # Fed in small steps, so that charges flow for a while (one burst would be
                # committed by one group commit, leaving no moment "mid-work" to kill in).
                feeding = asyncio.create_task(feed(publisher, chunk))
                victim = consumers[kills % len(consumers)]
                before = recorded()
                deadline = time.monotonic() + KILL_PROGRESS_WAIT_SECONDS
                while recorded() == before and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                await asyncio.sleep(rng.uniform(*KILL_DELAY_SECONDS))
                at_kill = recorded()
                victim.kill()
                kills += 1
                kills_mid_work += before < at_kill < target
                victim.start()
                # The publisher's report counts every chunk so far.
                published = (await feeding).published
        assert published == KILL_RECORDS
        await wait_until(lambda: recorded() >= KILL_RECORDS, DRAIN_TIMEOUT_SECONDS,
                         "every record charged after the kills")
        # Let redeliveries of batches in flight at the last kill come back and be answered.
        await asyncio.sleep(settings.ack_wait_seconds * 2)
    finally:
        for consumer in consumers:
            consumer.stop()
    assert kills >= KILLS_MIN
    # Most kills landed while charges were being committed, not before or after the run.
    assert kills_mid_work >= KILLS_MIN // 2, kills_mid_work
    assert_charged_exactly_once(ledger, priced, records)
    assert sum(ledger.get_account(a.account_id).usage_count for a in priced) == KILL_RECORDS
    ledger.close()
