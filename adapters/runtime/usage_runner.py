"""The usage consumer as a `ledger up` runner, with a periodic one-line progress report."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from adapters.nats.usage_consumer import UsageConsumer
from adapters.runtime.composition import open_ledger
from adapters.runtime.processes import Runtime

REPORT_INTERVAL_SECONDS = 5.0
HEARTBEAT_INTERVAL_SECONDS = 1.0


async def consume(runtime: Runtime, stop: asyncio.Event, partitions: Sequence[int],
                  console: Console | None = None) -> None:
    ledger = open_ledger(runtime.database_url)
    consumer = UsageConsumer(ledger, runtime.nats_url, partitions=partitions,
                             settings=runtime.ingest)
    helpers = [asyncio.create_task(_report(consumer, console or Console(stderr=True)))]
    if runtime.ingest.health_file:
        helpers.append(asyncio.create_task(_heartbeat(consumer,
                                                      Path(runtime.ingest.health_file))))
    try:
        await consumer.run(stop)
    finally:
        for helper in helpers:
            helper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await helper
        ledger.close()


async def run_usage_consumer(runtime: Runtime, stop: asyncio.Event) -> None:
    """All partitions in this process (the single-machine `ledger up`)."""
    await consume(runtime, stop, range(runtime.ingest.partitions))


async def _heartbeat(consumer: UsageConsumer, path: Path) -> None:
    """Touch `path` while the consumer is healthy; a stale file tells `ledger health` it is not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        if consumer.is_healthy():
            path.touch()
        await asyncio.sleep(HEARTBEAT_INTERVAL_SECONDS)


async def _report(consumer: UsageConsumer, console: Console) -> None:
    last = 0  # nothing to say before the first message
    while True:
        await asyncio.sleep(REPORT_INTERVAL_SECONDS)
        stats = consumer.stats
        if stats.messages != last:
            last = stats.messages
            console.log(f"usage: {stats.messages} messages, {stats.recorded} recorded, "
                        f"{stats.duplicates} duplicates, {stats.rejected} rejected "
                        f"{stats.rejected_by_code or ''}, {stats.commit_failures} commit failures")
