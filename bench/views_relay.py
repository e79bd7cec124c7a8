"""Benchmark: relaying view messages to `LEDGER_VIEWS`, one acknowledgement at a time (as the
relay did) against waves (`adapters.nats.relay_waves`, as it does now), in the same run.

    uv run python bench/views_relay.py [--rows 5000] [--subjects 1000] [--rounds 3]

One embedded NATS (file storage); the relay's own connection (a faststream `NatsBroker`) and
publish call (`NatsViewsRelay._publish`: subject, `Nats-Msg-Id`, stream, timeout); rows in
rounds of `RELAY_BATCH_ROWS` as the relay reads them. Each round of the benchmark recreates the
stream so that no publish is dropped as a duplicate. Prints rows/s and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from faststream.nats import NatsBroker
from ingest_common import machine
from rich.console import Console
from rich.table import Table

from adapters.nats.relay_waves import publish_in_waves
from adapters.nats.views_relay import (
    RELAY_BATCH_ROWS,
    VIEWS_STREAM_NAME,
    NatsViewsRelay,
    ensure_views_stream,
)
from adapters.runtime.embedded_nats import EmbeddedNats
from projections.view_messages import OutboxRow

console = Console()
PAYLOAD = b'{"team_id":"t","balance":{"nanos":"123456789000"},"position":1}'

Strategy = Callable[[Sequence[OutboxRow], Callable[[OutboxRow], Awaitable[None]]],
                    Awaitable[None]]


async def one_at_a_time(rows: Sequence[OutboxRow],
                        publish: Callable[[OutboxRow], Awaitable[None]]) -> None:
    for row in rows:
        await publish(row)


async def in_waves(rows: Sequence[OutboxRow],
                   publish: Callable[[OutboxRow], Awaitable[None]]) -> None:
    stored, failure = await publish_in_waves(rows, publish)
    assert failure is None and stored == len(rows), failure


async def relay_rate(url: str, rows: list[OutboxRow], strategy: Strategy) -> float:
    broker = NatsBroker(servers=[url])
    client = await broker.connect()
    try:
        js = client.jetstream()
        await js.delete_stream(VIEWS_STREAM_NAME)
        await ensure_views_stream(js)

        async def publish(row: OutboxRow) -> None:
            await NatsViewsRelay._publish(broker, row)

        started = time.perf_counter()
        for offset in range(0, len(rows), RELAY_BATCH_ROWS):
            await strategy(rows[offset:offset + RELAY_BATCH_ROWS], publish)
        seconds = time.perf_counter() - started
        assert (await js.stream_info(VIEWS_STREAM_NAME)).state.messages == len(rows)
        return len(rows) / seconds
    finally:
        await broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--subjects", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    console.print(f"machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}")
    rows = [OutboxRow(seq=i + 1, position=i + 1,
                      subject=f"ledger.views.balance.team-{i % args.subjects}", payload=PAYLOAD)
            for i in range(args.rows)]
    rates: dict[str, list[float]] = {"one at a time (before)": [], "waves (now)": []}
    with tempfile.TemporaryDirectory(prefix="ledger-relay-bench-") as folder:
        nats_server = EmbeddedNats(Path(folder) / "nats").start()
        try:
            # Ensure the stream exists once, so that the first delete finds it.
            async def first() -> None:
                broker = NatsBroker(servers=[nats_server.url])
                await ensure_views_stream((await broker.connect()).jetstream())
                await broker.stop()

            asyncio.run(first())
            for _ in range(args.rounds):
                for name, strategy in (("one at a time (before)", one_at_a_time),
                                       ("waves (now)", in_waves)):
                    rates[name].append(asyncio.run(relay_rate(nats_server.url, rows, strategy)))
        finally:
            nats_server.stop()
    baseline = statistics.median(rates["one at a time (before)"])
    table = Table(title=f"{args.rows:,} view messages over {args.subjects:,} subjects; load "
                        f"average after: {os.getloadavg()[0]:.2f}")
    for column in ("relay", "rows/s per round", "median", "ratio"):
        table.add_column(column)
    for name, values in rates.items():
        table.add_row(name, ", ".join(f"{v:,.0f}" for v in values),
                      f"{statistics.median(values):,.0f}",
                      f"{statistics.median(values) / baseline:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
