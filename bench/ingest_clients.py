"""Benchmark: the usage consumer's NATS side, nats-py pull loop against faststream, end to end.

    uv run python bench/ingest_clients.py [--records 150000] [--accounts 1000]
                                          [--baseline-records 100000] [--rounds 1]

One machine, everything on it (embedded PostgreSQL with fsync on, embedded NATS with file
storage, the publisher in this process, one consumer process at a time). In one run:

1. service:    `Ledger.record_usage_batch` straight into PostgreSQL, batches of 1000, in a fresh
               database: the ceiling for the bus path.
2. nats-py:    a consumer process running `UsageConsumer` on its default bus
               (`adapters.nats.usage_bus`: one core subscription on an inbox, pull requests
               published by us, `Msg.ack()/nak()/term()`), as `ledger consume` runs it.
3. faststream: the same `UsageConsumer` logic through the same port, on a faststream 0.7 batch
               pull subscriber per partition (`PullSub(batch=True)`, `AckPolicy.MANUAL`, each
               raw message settled on its own), as `FaststreamUsageBus` below. Its consumers
               have no priority group: faststream cannot pull from one (see
               `consumers_without_priority_group`), so it could not do failover at all.

For 2 and 3: publish --records records as fast as the publisher can, and measure the rate at
which the ledger commits them (first publish to `usage_recorded` = --records), and the consumer
process's CPU time per record. Prints the rates, the ratios to the service layer, and CPU.
With --rounds > 1 the two clients alternate and the best round of each is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
from faststream import AckPolicy, Context
from faststream.nats import JStream, NatsBroker, PullSub
from ingest_common import REPO_ROOT, bench_servers, machine, priced_accounts
from ingest_sustained import bench_service, make_records
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig
from rich.console import Console
from rich.table import Table

from adapters.nats.connection import connect_nats
from adapters.nats.ingest_settings import (
    REJECTED_STREAM_NAME,
    REJECTED_SUBJECT,
    STREAM_NAME,
    IngestSettings,
)
from adapters.nats.pull_feed import stream_sequence
from adapters.nats.streams import (
    consumer_config,
    consumer_name,
    partition_filter,
    recreate_stream,
)
from adapters.nats.usage_consumer import UsageConsumer
from adapters.nats.usage_port import Delivery, RejectionRefused, UsageBus
from adapters.nats.usage_publisher import UsagePublisher
from adapters.runtime.composition import open_ledger

console = Console()
CLIENTS = ("nats-py", "faststream")
POLL_INTERVAL_SECONDS = 0.1
INGEST_TIMEOUT_SECONDS = 600.0
READY_TIMEOUT_SECONDS = 60.0
# A partition's handler hands its batch over and returns; one more batch may wait (read-ahead,
# as the nats-py feed has).
FASTSTREAM_BATCHES_WAITING_MAX = 1
# faststream's documented way to reach the message being handled (its raw nats-py messages).
THE_MESSAGE = Context("message")


class FaststreamFeed:
    """One partition's batches from a faststream batch pull subscriber (a `DeliveryFeed`)."""

    def __init__(self, broker: NatsBroker, partition: int, settings: IngestSettings) -> None:
        self.batches: asyncio.Queue[list[Msg]] = asyncio.Queue(FASTSTREAM_BATCHES_WAITING_MAX)
        subscriber = broker.subscriber(
            partition_filter(partition), stream=JStream(STREAM_NAME, declare=False),
            durable=consumer_name(partition), ack_policy=AckPolicy.MANUAL,
            pull_sub=PullSub(batch_size=settings.batch_size, timeout=settings.wait_ms / 1000,
                             batch=True))

        @subscriber
        async def take_batch(body: Any, message: Any = THE_MESSAGE) -> None:
            await self.batches.put(list(message.raw_message))

    async def take(self, wait_seconds: float, idle_seconds: float) -> list[Delivery]:
        try:
            msgs = await asyncio.wait_for(self.batches.get(), idle_seconds)
        except TimeoutError:
            return []
        return [Delivery(m.subject, m.data, m.headers, stream_sequence(m.reply), m)
                for m in msgs]

    async def settle(self, ack: Sequence[Delivery], term: Sequence[Delivery],
                     nak: Sequence[tuple[Delivery, float]]) -> None:
        for delivery in ack:
            await _raw(delivery).ack()
        for delivery in term:
            await _raw(delivery).term()
        for delivery, delay in nak:
            await _raw(delivery).nak(delay=delay)

    async def close(self) -> None:
        return None


def _raw(delivery: Delivery) -> Msg:
    assert isinstance(delivery.handle, Msg)
    return delivery.handle


class FaststreamUsageBus:
    """The usage consumer's bus on faststream (a `UsageBus`): one subscriber per partition."""

    def __init__(self, nats_url: str, settings: IngestSettings) -> None:
        # One log line per batch would cost the handler more than its work.
        self.broker = NatsBroker(nats_url.split(","), log_level=logging.WARNING)
        self.feeds = {p: FaststreamFeed(self.broker, p, settings)
                      for p in range(settings.partitions)}
        self.stream_epoch = "faststream-bench"

    async def start(self) -> FaststreamUsageBus:
        await self.broker.start()
        return self

    async def open_feed(self, partition: int, batch_size: int) -> FaststreamFeed:
        return self.feeds[partition]

    async def publish_rejection(self, headers: dict[str, str], body: bytes) -> None:
        try:
            await self.broker.publish(body, REJECTED_SUBJECT, headers=headers,
                                      stream=REJECTED_STREAM_NAME)
        except Exception as error:
            raise RejectionRefused(repr(error)) from None

    def is_connected(self) -> bool:
        return True

    async def close(self) -> None:
        await self.broker.stop()


async def serve(client: str, ready_file: Path) -> None:
    """The consumer process: consume every partition with `client` until SIGTERM."""
    settings = IngestSettings.from_env()
    ledger = open_ledger(os.environ["LEDGER_DATABASE_URL"])
    nats_url = os.environ["LEDGER_NATS_URL"]

    async def faststream_bus() -> UsageBus:
        return await FaststreamUsageBus(nats_url, settings).start()

    consumer = UsageConsumer(ledger, nats_url, partitions=range(settings.partitions),
                             settings=settings, create_stream=False,
                             open_bus=faststream_bus if client == "faststream" else None)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    running = asyncio.create_task(consumer.run(stop))
    while not consumer.is_healthy():
        await asyncio.sleep(POLL_INTERVAL_SECONDS)
    ready_file.touch()
    await running
    ledger.close()


async def consumers_without_priority_group(nats_url: str, settings: IngestSettings) -> None:
    """faststream pulls through nats-py's `fetch()`, which cannot name a priority group, and
    the server refuses a pull without one on a consumer that has groups ("400 Bad Request -
    Priority Group missing"): for the faststream round the consumers are plain ones."""
    client = await connect_nats(nats_url, "bench-consumers")
    js = client.jetstream()
    try:
        for partition in range(settings.partitions):
            pinned = consumer_config(partition, settings)
            plain = ConsumerConfig(**{field.name: getattr(pinned, field.name)
                                      for field in dataclasses.fields(ConsumerConfig)})
            await js.delete_consumer(STREAM_NAME, consumer_name(partition))
            await js.add_consumer(STREAM_NAME, plain)
    finally:
        await client.close()


def bench_client(client: str, database_url: str, nats_url: str, args: argparse.Namespace,
                 folder: Path) -> dict[str, float]:
    settings = IngestSettings.from_env()
    asyncio.run(recreate_stream(nats_url, settings))
    if client == "faststream":
        asyncio.run(consumers_without_priority_group(nats_url, settings))
    ledger = open_ledger(database_url)
    accounts = priced_accounts(ledger, args.accounts)
    records = make_records(accounts, args.records, f"{client}-{time.time_ns()}")
    ready = folder / f"{client}.ready"
    ready.unlink(missing_ok=True)
    env = {**os.environ, "LEDGER_DATABASE_URL": database_url, "LEDGER_NATS_URL": nats_url}
    with (folder / f"{client}.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, __file__, "--serve", client, str(ready)],
                                   env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not ready.exists():
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the {client} consumer did not start; see {folder}")
            time.sleep(POLL_INTERVAL_SECONDS)
        cpu_before = psutil.Process(process.pid).cpu_times()
        committed = threading.Event()
        started = time.perf_counter()

        async def publish() -> None:
            async with await UsagePublisher.connect(nats_url) as publisher:
                await publisher.publish_many(records)

        publisher = threading.Thread(target=asyncio.run, args=(publish(),), daemon=True)
        publisher.start()
        while time.perf_counter() - started < INGEST_TIMEOUT_SECONDS:
            if ledger.keyed.counter_values().get("usage_recorded", 0) >= args.records:
                committed.set()
                break
            time.sleep(POLL_INTERVAL_SECONDS)
        seconds = time.perf_counter() - started
        cpu_after = psutil.Process(process.pid).cpu_times()
        publisher.join()
        if not committed.is_set():
            raise RuntimeError(f"{client}: not every record committed in "
                               f"{INGEST_TIMEOUT_SECONDS}s")
        assert ledger.keyed.counter_values()["usage_recorded"] == args.records
        cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
        return {"rate": args.records / seconds, "cpu_us": cpu / args.records * 1e6}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        ledger.close()


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        asyncio.run(serve(sys.argv[2], Path(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=150_000)
    parser.add_argument("--baseline-records", type=int, default=100_000)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    console.print(f"machine: {machine()}")
    console.print(f"settings: {IngestSettings.from_env()}")
    best: dict[str, dict[str, float]] = {}
    with bench_servers() as servers:
        # Cold, like this benchmark's end-to-end rounds (ingest_sustained.py warms both up).
        service_rate = bench_service(servers.database("bench_service"), args.accounts,
                                     args.baseline_records, warm=False).rate
        console.print(f"service layer: {service_rate:,.0f} records/s")
        for round_number in range(args.rounds):
            for client in CLIENTS:
                result = bench_client(client, servers.database(f"bench_{client.replace('-', '')}"
                                                                f"_{round_number}"),
                                      servers.nats_url, args, servers.folder)
                console.print(f"round {round_number + 1} {client}: {result['rate']:,.0f} "
                              f"records/s, consumer CPU {result['cpu_us']:.0f} us/record")
                if client not in best or result["rate"] > best[client]["rate"]:
                    best[client] = result
    table = Table(title=f"usage consumer clients, {args.records:,} records end to end, one "
                        f"consumer process, best of {args.rounds}")
    for column in ("path", "records/s", "vs service layer", "consumer CPU us/record"):
        table.add_column(column)
    table.add_row("service layer (record_usage_batch)", f"{service_rate:,.0f}", "1.00", "")
    for client in CLIENTS:
        table.add_row(f"end to end, {client}", f"{best[client]['rate']:,.0f}",
                      f"{best[client]['rate'] / service_rate:.2f}",
                      f"{best[client]['cpu_us']:.0f}")
    console.print(table)


if __name__ == "__main__":
    main()
