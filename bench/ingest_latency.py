"""Benchmark: latency from publish to committed at a steady rate, and consumer memory in a burst.

    uv run python bench/ingest_latency.py [--rate 1000] [--seconds 30] [--warmup-seconds 5]
                                          [--burst-factor 10] [--burst-seconds 10]

Phase 1 (latency): after a --warmup-seconds warm-up at the same rate (reported apart: the first
record of each account loads it from PostgreSQL), the publisher sends --rate records/s, evenly
paced in 10 ms ticks, for --seconds, each publish awaited until the stream stored it. The
consumer runs in this process (all partitions), and reports each committed batch through its
`on_commit` hook; latency of a record = commit returned - publish started, on one monotonic
clock. Prints p50, p90, p99, max. The baseline, measured in the same run on the same records:
publish -> stored (the stream's acknowledgement of each publish): the part of the latency that
is NATS and the machine, not the ledger; the ledger's own share is the difference.

Phase 2 (memory): a `ledger consume` process (the real thing, not this one) takes a steady
--rate, then --burst-factor times that for --burst-seconds, then the steady rate again; its RSS
is sampled every 100 ms and the peak reported against the steady level.

Everything (embedded PostgreSQL with fsync on, embedded NATS, publisher, consumer) runs on this
machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
from ingest_common import ConsumerProcesses, bench_servers, machine, priced_accounts
from rich.console import Console
from rich.table import Table

from adapters.nats.ingest_settings import IngestSettings
from adapters.nats.streams import recreate_stream
from adapters.nats.usage_consumer import UsageConsumer
from adapters.nats.usage_publisher import UsagePublisher
from adapters.runtime.collector import tune_collector
from adapters.runtime.composition import open_ledger
from adapters.runtime.demo import PricedAccount, realistic_record
from domain.usage import UsageRecord

console = Console()
TICK_SECONDS = 0.01
RSS_SAMPLE_SECONDS = 0.1
DRAIN_TIMEOUT_SECONDS = 300.0
ACCOUNTS = 500


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def paced_publish(publisher: UsagePublisher, accounts: list[PricedAccount], prefix: str,
                        rate: int, seconds: float, sent_at: dict[str, float] | None,
                        stored_at: dict[str, float] | None = None) -> int:
    """Publish `rate` records/s in TICK_SECONDS ticks (each tick's records concurrently)."""
    rng = random.Random(prefix)
    per_tick = rate * TICK_SECONDS
    started = time.monotonic()
    sent = 0
    owed = 0.0
    tick = 0
    while time.monotonic() - started < seconds:
        owed += per_tick
        count = int(owed)
        owed -= count
        records: list[UsageRecord] = []
        for _ in range(count):
            records.append(realistic_record(rng, rng.choice(accounts), f"{prefix}-{sent}",
                                            datetime.now(UTC)))
            sent += 1
        now = time.monotonic()
        if sent_at is not None:
            for record in records:
                sent_at[record.usage_id] = now

        async def publish(record: UsageRecord) -> None:
            await publisher.publish_usage(record)
            if stored_at is not None:
                stored_at[record.usage_id] = time.monotonic()

        await asyncio.gather(*(publish(r) for r in records))
        tick += 1
        await asyncio.sleep(max(0.0, started + tick * TICK_SECONDS - time.monotonic()))
    return sent


async def measure_latency(database_url: str, nats_url: str, rate: int, seconds: float,
                          warmup_seconds: float) -> dict[str, float]:
    settings = IngestSettings.from_env()
    await recreate_stream(nats_url, settings)
    ledger = open_ledger(database_url)
    accounts = priced_accounts(ledger, ACCOUNTS)
    committed_at: dict[str, float] = {}

    def on_commit(records: list[UsageRecord]) -> None:
        now = time.monotonic()
        for record in records:
            committed_at[record.usage_id] = now

    consumer_ledger = open_ledger(database_url)
    consumer = UsageConsumer(consumer_ledger, nats_url, partitions=range(settings.partitions),
                             settings=settings, on_commit=on_commit)
    task = asyncio.create_task(consumer.run())
    sent_at: dict[str, float] = {}
    stored_at: dict[str, float] = {}
    try:
        await asyncio.sleep(1.0)  # connected and pulling
        async with await UsagePublisher.connect(nats_url) as publisher:
            # Warm-up at the same rate, not measured: the consumer's account cache fills (the
            # first record of each account loads it from PostgreSQL) as in a running service.
            with console.status(f"warm-up {rate} records/s for {warmup_seconds:.0f}s"):
                warm_sent_at: dict[str, float] = {}
                warm = await paced_publish(publisher, accounts, "warmup", rate, warmup_seconds,
                                           warm_sent_at)
                while len(committed_at) < warm:
                    await asyncio.sleep(0.05)
                cold = [(committed_at[k] - warm_sent_at[k]) * 1000 for k in warm_sent_at]
            with console.status(f"steady {rate} records/s for {seconds:.0f}s"):
                sent = await paced_publish(publisher, accounts, "latency", rate, seconds,
                                           sent_at, stored_at)
        deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
        while len(committed_at) < warm + sent and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        consumer.stop()
        await task
        consumer_ledger.close()
        ledger.close()
    latencies = [(committed_at[k] - sent_at[k]) * 1000 for k in sent_at if k in committed_at]
    assert len(latencies) == sent, f"only {len(latencies)} of {sent} committed"
    stored = [(stored_at[k] - sent_at[k]) * 1000 for k in sent_at]
    return {"records": sent, "achieved_rate": sent / seconds,
            "stored_p50": percentile(stored, 0.50), "stored_p99": percentile(stored, 0.99),
            "p50": percentile(latencies, 0.50), "p90": percentile(latencies, 0.90),
            "p99": percentile(latencies, 0.99), "max": max(latencies),
            "mean": statistics.fmean(latencies), "cold_p99": percentile(cold, 0.99),
            "cold_max": max(cold)}


async def measure_burst_memory(database_url: str, nats_url: str, folder: Path, rate: int,
                               factor: int, burst_seconds: float) -> dict[str, float]:
    settings = IngestSettings.from_env()
    await recreate_stream(nats_url, settings)
    ledger = open_ledger(database_url)
    accounts = priced_accounts(ledger, ACCOUNTS)
    consumers = ConsumerProcesses(database_url, nats_url, settings, 1, folder)
    samples: dict[str, list[int]] = {"steady": [], "burst": [], "after": []}
    phase = ["steady"]
    stop = threading.Event()

    def sample() -> None:
        process = psutil.Process(consumers.processes[0].pid)
        while not stop.is_set():
            try:
                samples[phase[0]].append(process.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            time.sleep(RSS_SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        consumers.wait_ready()
        sampler.start()
        async with await UsagePublisher.connect(nats_url) as publisher:
            with console.status("burst: steady, then 10x, then steady"):
                sent = await paced_publish(publisher, accounts, "steady", rate, burst_seconds,
                                           None)
                phase[0] = "burst"
                burst_records = [realistic_record(random.Random(1), accounts[i % ACCOUNTS],
                                                  f"burst-{i}", datetime.now(UTC))
                                 for i in range(int(rate * factor * burst_seconds))]
                burst_started = time.monotonic()
                # The burst is paced too, at factor x rate, in one-second slices.
                slice_size = rate * factor
                for offset in range(0, len(burst_records), slice_size):
                    await publisher.publish_many(burst_records[offset:offset + slice_size])
                    await asyncio.sleep(max(0.0, burst_started + (offset // slice_size + 1)
                                            - time.monotonic()))
                burst_rate = len(burst_records) / (time.monotonic() - burst_started)
                sent += len(burst_records)
                # Steady again while the backlog drains: memory stays bounded in both.
                sent += await paced_publish(publisher, accounts, "after", rate, burst_seconds,
                                            None)
                phase[0] = "after"
        deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
        while (ledger.keyed.counter_values().get("usage_recorded", 0) < sent
               and time.monotonic() < deadline):
            await asyncio.sleep(0.2)
        drained = ledger.keyed.counter_values().get("usage_recorded", 0)
    finally:
        stop.set()
        consumers.stop()
        ledger.close()
    mib = 2**20
    return {"steady_mib": max(samples["steady"]) / mib,
            "peak_mib": max(samples["steady"] + samples["burst"] + samples["after"]) / mib,
            "burst_rate": burst_rate, "sent": sent, "recorded": drained}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    parser.add_argument("--burst-factor", type=int, default=10)
    parser.add_argument("--burst-seconds", type=float, default=10.0)
    args = parser.parse_args()
    # The consumer in this process runs with `ledger consume`'s collector settings.
    tune_collector()
    console.print(f"machine: {machine()}")
    console.print(f"settings: {IngestSettings.from_env()}")
    console.print(f"load average at start: {os.getloadavg()[0]:.1f}")
    with bench_servers() as servers:
        latency = asyncio.run(measure_latency(servers.database("bench_latency"),
                                              servers.nats_url, args.rate, args.seconds,
                                              args.warmup_seconds))
        memory = asyncio.run(measure_burst_memory(servers.database("bench_burst"),
                                                  servers.nats_url, servers.folder, args.rate,
                                                  args.burst_factor, args.burst_seconds))
    table = Table(title="ingest latency and memory")
    table.add_column("measure")
    table.add_column("value")
    table.add_row("steady rate achieved", f"{latency['achieved_rate']:,.0f} records/s "
                  f"({latency['records']:,.0f} records)")
    for name in ("p50", "p90", "p99", "max", "mean"):
        table.add_row(f"publish -> committed {name}", f"{latency[name]:.1f} ms")
    table.add_row("baseline: publish -> stored p50 / p99",
                  f"{latency['stored_p50']:.1f} / {latency['stored_p99']:.1f} ms")
    table.add_row("warm-up (cold consumer cache) p99 / max",
                  f"{latency['cold_p99']:.1f} / {latency['cold_max']:.1f} ms")
    table.add_row("burst publish rate", f"{memory['burst_rate']:,.0f} records/s "
                  f"({args.burst_factor}x for {args.burst_seconds:.0f}s)")
    table.add_row("consumer RSS, steady", f"{memory['steady_mib']:.0f} MiB")
    table.add_row("consumer RSS, peak (burst and drain)", f"{memory['peak_mib']:.0f} MiB")
    table.add_row("recorded / sent", f"{memory['recorded']:,.0f} / {memory['sent']:,.0f}")
    console.print(table)


if __name__ == "__main__":
    main()
