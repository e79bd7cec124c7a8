"""Benchmark: the usage consumer's bus path alone (no database), taken apart in one run.

    uv run python bench/bus_path.py [--records 100000] [--rounds 3]

What `ledger consume` spends per record besides the ledger's own work, in four layers, each
draining the same backlog from every partition at once (as the consumer drains one):

- client:       nats-py alone, used as the feed uses it: one core subscription on an inbox per
                partition, pull requests published on it (with the priority group), each
                delivery's headers read and `+ACK` published to its reply subject in the
                callback. The floor any consumer on nats-py pays.
- feed:         our pull feed (`NatsUsageBus.open_feed`: `NatsPullFeed.take`, `Delivery`,
                `settle`), nothing decoded.
- feed+decode:  the consumer's whole bus path: the feed, `decode_usage` with the `Nats-Msg-Id`
                check (as `UsageConsumer` does), acks.
- ... on uvloop: the last again on uvloop's event loop instead of asyncio's.
- ..., default collector: the last again with CPython's default collector settings instead of
                the consumer's (`adapters.runtime.collector`, which the other layers run with).

Each round: a fresh usage stream, a backlog of --records records published through
`UsagePublisher` (not timed: with its headers, as producers send them), then the drain, timed
in this process's CPU time (other processes' load disturbs it less than wall time) and wall
time. Layers alternate round by round; the best and the median round of each are printed, with
the best's ratio to the `client` layer of the same run (this machine's CPU time per record moves
by +-15% between rounds minutes apart: read layers against each other, over several rounds).
Embedded NATS (file storage) on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import uvloop
from nats.aio.msg import Msg
from rich.console import Console
from rich.table import Table

from adapters.nats.connection import close_nats, connect_nats
from adapters.nats.ingest_settings import STREAM_NAME, IngestSettings
from adapters.nats.pull_feed import ACK_PAYLOAD, PIN_ID_HEADER, NatsPullFeed
from adapters.nats.streams import PRIORITY_GROUP, consumer_name, recreate_stream
from adapters.nats.usage_bus import NatsUsageBus
from adapters.nats.usage_contract import BusRejection, decode_usage
from adapters.nats.usage_publisher import UsagePublisher
from adapters.runtime.collector import tune_collector
from adapters.runtime.demo import PricedAccount, realistic_record
from bench.ingest_common import TERMS, bench_servers, machine
from domain.usage import UsageRecord

console = Console()
ACCOUNTS = 500
# A pull request with nothing to deliver ends after this long (the consumer's own figure).
IDLE_SECONDS = 1.0
DRAIN_TIMEOUT_SECONDS = 600.0
# CPython 3.11's own, read before anything changes them.
DEFAULT_COLLECTOR_THRESHOLDS = gc.get_threshold()

Drain = Callable[[str, IngestSettings, int], Awaitable[None]]
Runner = Callable[[Coroutine[Any, Any, tuple[float, float]]], tuple[float, float]]


def make_records(count: int) -> list[UsageRecord]:
    rng = random.Random(7)
    accounts = [PricedAccount(uuid4(), TERMS) for _ in range(ACCOUNTS)]
    start = datetime.now(UTC) - timedelta(hours=1)
    return [realistic_record(rng, accounts[i % ACCOUNTS], f"bus-{i}",
                             start + timedelta(microseconds=i))
            for i in range(count)]


async def publish_backlog(nats_url: str, settings: IngestSettings,
                          records: list[UsageRecord]) -> None:
    await recreate_stream(nats_url, settings)
    async with await UsagePublisher.connect(nats_url) as publisher:
        report = await publisher.publish_many(records)
    assert report.published == len(records), report


async def drain_client(nats_url: str, settings: IngestSettings, count: int) -> None:
    """nats-py alone: per partition, pull requests on an inbox, each delivery acked at once."""
    client = await connect_nats(nats_url, "bench-bus-path")
    left = [count]
    done = asyncio.Event()
    try:
        async def serve(partition: int) -> None:
            inbox = client.new_inbox()
            subject = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM_NAME}.{consumer_name(partition)}"
            pending = [0]
            pin = [""]  # the priority group's pin id, asked for again with each request

            async def ask() -> None:
                pending[0] = settings.batch_size
                request = {"batch": settings.batch_size, "group": PRIORITY_GROUP,
                           "expires": int(IDLE_SECONDS * 1e9), "id": pin[0]}
                await client.publish(subject, json.dumps(request).encode(), reply=inbox)

            async def on_message(msg: Msg) -> None:
                if msg.reply:
                    assert msg.headers  # parsed, as the feed reads them
                    pin[0] = msg.headers.get(PIN_ID_HEADER, pin[0])
                    await client.publish(msg.reply, ACK_PAYLOAD)
                    left[0] -= 1
                    pending[0] -= 1
                    if left[0] <= 0:
                        done.set()
                    elif pending[0] == 0:
                        await ask()
                elif left[0] > 0:  # the request ended (a status): ask again
                    await ask()

            await client.subscribe(inbox, cb=on_message)
            await ask()

        for partition in range(settings.partitions):
            await serve(partition)
        await asyncio.wait_for(done.wait(), DRAIN_TIMEOUT_SECONDS)
        await client.flush()
    finally:
        await close_nats(client)


async def drain_feeds(nats_url: str, settings: IngestSettings, count: int, *,
                      decode: bool) -> None:
    bus = await NatsUsageBus.open(nats_url, settings, create_stream=False)
    left = [count]

    async def serve(feed: NatsPullFeed) -> None:
        while left[0] > 0:
            deliveries = await feed.take(settings.wait_ms / 1000, IDLE_SECONDS)
            if decode:
                now = datetime.now(UTC)
                for delivery in deliveries:
                    decoded = decode_usage(delivery.data, delivery.subject.rsplit(".", 1)[-1],
                                           msg_id=delivery.msg_id, now=now)
                    assert not isinstance(decoded, BusRejection), decoded
            await feed.settle(deliveries, [], [])
            left[0] -= len(deliveries)

    try:
        feeds = [await bus.open_feed(p, settings.batch_size) for p in range(settings.partitions)]
        await asyncio.wait_for(asyncio.gather(*(serve(feed) for feed in feeds)),
                               DRAIN_TIMEOUT_SECONDS)
        for feed in feeds:
            await feed.close()
    finally:
        await bus.close()


async def drain_feed(nats_url: str, settings: IngestSettings, count: int) -> None:
    await drain_feeds(nats_url, settings, count, decode=False)


async def drain_feed_decode(nats_url: str, settings: IngestSettings, count: int) -> None:
    await drain_feeds(nats_url, settings, count, decode=True)


def on_default_collector(coroutine: Coroutine[Any, Any, tuple[float, float]]
                         ) -> tuple[float, float]:
    """asyncio's loop with CPython's default collector settings instead of the consumer's
    (`adapters.runtime.collector`), put back after."""
    gc.unfreeze()
    gc.set_threshold(*DEFAULT_COLLECTOR_THRESHOLDS)
    try:
        return asyncio.run(coroutine)
    finally:
        tune_collector()  # what the other layers run with


LAYERS: dict[str, tuple[Drain, Runner]] = {
    "client": (drain_client, asyncio.run),
    "feed": (drain_feed, asyncio.run),
    "feed+decode": (drain_feed_decode, asyncio.run),
    "feed+decode on uvloop": (drain_feed_decode, uvloop.run),
    "feed+decode, default collector": (drain_feed_decode, on_default_collector),
}


async def timed(drain: Drain, nats_url: str, settings: IngestSettings,
                count: int) -> tuple[float, float]:
    """CPU and wall seconds of the drain (connecting and set-up included: a few ms)."""
    cpu, wall = time.process_time(), time.perf_counter()
    await drain(nats_url, settings, count)
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    # The collector settings of `ledger consume` (adapters.runtime.collector), so the
    # service-layer baseline runs as the consumer process does.
    tune_collector()
    console.print(f"machine: {machine()}")
    settings = IngestSettings.from_env()
    records = make_records(args.records)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in LAYERS}
    with bench_servers() as servers:
        for round_number in range(args.rounds):
            for name, (drain, run) in LAYERS.items():
                asyncio.run(publish_backlog(servers.nats_url, settings, records))
                cpu, wall = run(timed(drain, servers.nats_url, settings, args.records))
                results[name].append((cpu, wall))
                console.print(f"round {round_number + 1} {name}: "
                              f"{cpu / args.records * 1e6:.1f} us CPU/record, "
                              f"{args.records / wall:,.0f} records/s")
    table = Table(title=f"the consumer's bus path alone, {args.records:,} records, "
                        f"{settings.partitions} partitions, best of {args.rounds} rounds")
    for column in ("layer", "CPU per record, best", "median", "records/s (wall, best)",
                   "best CPU ratio to client"):
        table.add_column(column)
    floor = min(cpu for cpu, _ in results["client"])
    for name, rounds in results.items():
        cpu = min(c for c, _ in rounds)
        median = statistics.median(c for c, _ in rounds)
        wall = min(w for _, w in rounds)
        table.add_row(name, f"{cpu / args.records * 1e6:.1f} us",
                      f"{median / args.records * 1e6:.1f} us", f"{args.records / wall:,.0f}",
                      f"{cpu / floor:.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
