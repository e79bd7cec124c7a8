"""The usage consumer as a `ledger up` runner, with a periodic one-line progress report."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from rich.console import Console

from adapters.runtime_services import Runtime
from adapters.usage_consumer import UsageConsumer
from adapters.wiring import open_ledger

REPORT_INTERVAL_SECONDS = 5.0


async def consume(runtime: Runtime, stop: asyncio.Event, partitions: Sequence[int],
                  console: Console | None = None) -> None:
    ledger = open_ledger(runtime.database_url)
    consumer = UsageConsumer(ledger, runtime.nats_url, partitions=partitions,
                             settings=runtime.ingest)
    reporter = asyncio.create_task(_report(consumer, console or Console(stderr=True)))
    try:
        await consumer.run(stop)
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        ledger.close()


async def run_usage_consumer(runtime: Runtime, stop: asyncio.Event) -> None:
    """All partitions in this process (the single-machine `ledger up`)."""
    await consume(runtime, stop, range(runtime.ingest.partitions))


async def _report(consumer: UsageConsumer, console: Console) -> None:
    last = -1
    while True:
        await asyncio.sleep(REPORT_INTERVAL_SECONDS)
        stats = consumer.stats
        if stats.messages != last:
            last = stats.messages
            console.log(f"usage: {stats.messages} messages, {stats.recorded} recorded, "
                        f"{stats.duplicates} duplicates, {stats.rejected} rejected "
                        f"{stats.rejected_by_code or ''}, {stats.commit_failures} commit failures")
