"""Partition failover on JetStream priority groups (pinned client), with real processes.

Two `ledger consume` processes both ask for every partition. The server pins each partition to
one of them: the other's pull requests wait unserved. When the pinned process is killed with
SIGKILL mid-stream, the server unpins it after the consumer's `priority_timeout`
(`LEDGER_USAGE_PIN_TTL_SECONDS`) and pins the survivor, which resumes every partition; whatever
the dead one held unacknowledged comes again after `ack_wait` and is answered "duplicate".
The test measures, per partition, how long after the kill its deliveries resumed, prints it, and
checks every record is charged exactly once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import pytest

from adapters.nats.ingest_settings import IngestSettings
from adapters.nats.streams import recreate_stream
from adapters.nats.usage_publisher import UsagePublisher
from adapters.runtime.composition import open_ledger
from tests.integration.pins import pinned_and_delivered, wait_for_resumption
from tests.integration.support import (
    ConsumerProcess,
    accounts,
    assert_charged_exactly_once,
    make_records,
    wait_until,
)

pytestmark = pytest.mark.slow

PARTITIONS = 4
PIN_TTL_SECONDS = 3.0
ACK_WAIT_SECONDS = 4.0
WARMUP_RECORDS = 400
STREAM_RECORDS = 4000
CHUNK_RECORDS = 50
CHUNK_PAUSE_SECONDS = 0.2  # about 16 s of stream: through the kill and the pin TTL
# The survivor must be idle through one progress report (every 5 s) before the kill, so its
# log proves it was not served while the other one was pinned.
SURVIVOR_IDLE_SECONDS = 6.0
# Resuming takes the pin TTL, then at most one pull cycle (1 s) and a commit; a loaded 2-core
# machine adds a few seconds.
RESUME_SLACK_SECONDS = 6.0
WAIT_SECONDS = 120.0
DEAD_CONNECTION_SECONDS = 0.5


async def pins(client: nats.NATS) -> dict[int, str]:
    return {p: pin for p, (pin, _) in (await pinned_and_delivered(client, PARTITIONS)).items()}


async def publish_paced(publisher: UsagePublisher, records: list) -> None:  # type: ignore[type-arg]
    for start in range(0, len(records), CHUNK_RECORDS):
        await publisher.publish_many(records[start:start + CHUNK_RECORDS])
        await asyncio.sleep(CHUNK_PAUSE_SECONDS)


async def test_a_killed_consumers_partitions_resume_on_the_other_within_the_pin_ttl(
        database_url: str, nats_server_url: str, tmp_path: Path) -> None:
    settings = IngestSettings(partitions=PARTITIONS, batch_size=100,
                              ack_wait_seconds=ACK_WAIT_SECONDS, pin_ttl_seconds=PIN_TTL_SECONDS)
    await recreate_stream(nats_server_url, settings)
    ledger = open_ledger(database_url)
    priced = accounts(ledger, 40)
    warmup = make_records(priced, WARMUP_RECORDS, "warmup")
    stream = make_records(priced, STREAM_RECORDS, "failover", seed=12)
    first, survivor = (ConsumerProcess(database_url, nats_server_url, member=0, members=1,
                                       settings=settings, log_path=tmp_path / f"{name}.log")
                       for name in ("first", "survivor"))
    control = await nats.connect(nats_server_url)

    def recorded() -> int:
        return ledger.keyed.counter_values().get("usage_recorded", 0)

    try:
        first.start()
        async with await UsagePublisher.connect(nats_server_url) as publisher:
            # Alone, the first process is pinned on every partition.
            await publisher.publish_many(warmup)
            await wait_until(lambda: recorded() >= WARMUP_RECORDS, WAIT_SECONDS, "warm-up")
            pinned_before = await pins(control)
            assert len(pinned_before) == PARTITIONS and all(pinned_before.values()), (
                pinned_before)
            survivor.start()
            await wait_until(survivor.serving, WAIT_SECONDS, "the survivor serving")
            streaming = asyncio.create_task(publish_paced(publisher, stream))
            await asyncio.sleep(SURVIVOR_IDLE_SECONDS)
            assert await pins(control) == pinned_before, "a pin moved while its client lived"
            assert "usage:" not in (tmp_path / "survivor.log").read_text(), (
                "the second process was served while the first was pinned")
            assert not streaming.done(), "the stream ended before the kill: publish more"
            first.kill()
            killed = time.monotonic()
            # What the server delivered to the dead process's open requests until it saw the
            # connection close does not count as resuming.
            await asyncio.sleep(DEAD_CONNECTION_SECONDS)
            at_kill = {p: (pinned_before[p], sequence) for p, (_, sequence)
                       in (await pinned_and_delivered(control, PARTITIONS)).items()}
            assert len(at_kill) == PARTITIONS, at_kill
            resumed = await wait_for_resumption(control, PARTITIONS, at_kill, killed,
                                                WAIT_SECONDS)
            await streaming
        assert len(resumed) == PARTITIONS, f"partitions never resumed: {resumed}"
        gap = max(resumed.values())
        each = ", ".join(f"p{p} {seconds:.1f}s" for p, seconds in sorted(resumed.items()))
        print(f"\nfailover: partitions resumed {each} after kill -9 (pin TTL "
              f"{PIN_TTL_SECONDS:.0f}s); gap {gap:.1f}s")
        assert gap <= PIN_TTL_SECONDS + RESUME_SLACK_SECONDS
        assert (await pins(control)) != pinned_before
        total = WARMUP_RECORDS + STREAM_RECORDS
        await wait_until(lambda: recorded() >= total, WAIT_SECONDS, "every record charged")
        assert survivor.alive()
    finally:
        first.stop()
        survivor_exit = survivor.stop()
        await control.close()
    assert survivor_exit == 0
    assert_charged_exactly_once(ledger, priced, warmup + stream)
    ledger.close()
