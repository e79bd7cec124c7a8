"""Probe: would a compiled NATS client make the bus path cheaper? nats-py against natsrpy.

    uv run --with natsrpy==0.1.4 python bench/compiled_client_probe.py [--records 100000]

Not a dependency of the ledger: `natsrpy` (Rust, on PyPI since 2026) is the one compiled Python
NATS client in the registry, and it cannot be adopted as it is (no TLS client certificates, no
`.creds` files, which issue 10 requires of every connection). This measures whether it would be
worth the work upstream: the CPU per message to pull a backlog from a JetStream consumer and
acknowledge each message, the floor of `ledger consume`'s bus path, three ways in one run:

- nats-py:          one core subscription on an inbox, pull requests published on it, `+ACK`
                    published to each delivery's reply subject (what `adapters.nats.pull_feed`
                    does, minus the batching);
- natsrpy callback: the same protocol on natsrpy's callback subscription and `publish`;
- natsrpy fetch:    natsrpy's own batch API (`PullConsumer.fetch`, then `ack()` on each);
- ... no acks:      the same, receiving only (at most `MAX_ACK_PENDING` messages): what
                    natsrpy's receive path alone costs.

Each way drains its own durable consumer of one stream holding --records copies of a real
usage message, with the header producers send (`Nats-Msg-Id`; the figures of 2026-12-02 in
BENCHMARKS.md were measured when they also sent `Nats-Expected-Stream`); CPU time of this
process (natsrpy's own threads included) per message, and the rate. Embedded NATS (file
storage) on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from uuid import uuid4

import natsrpy
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from rich.console import Console
from rich.table import Table

from adapters.nats.connection import close_nats, connect_nats
from adapters.nats.pull_feed import ACK_PAYLOAD
from adapters.nats.usage_contract import UsageMessage, usage_message_id
from adapters.runtime.demo import PricedAccount, realistic_record
from adapters.runtime.embedded_nats import EmbeddedNats
from bench.ingest_common import TERMS, machine

console = Console()
STREAM = "PROBE"
SUBJECT = "probe.usage"
BATCH = 500
# How long one pull request waits for messages before the broker ends it.
REQUEST_EXPIRES_SECONDS = 1.0
PUBLISH_WINDOW = 2000  # acknowledgements awaited together while the backlog is published
MAX_ACK_PENDING = 20_000
DRAIN_TIMEOUT_SECONDS = 600.0

Drain = Callable[[str, str, int], Awaitable[None]]


def natsrpy_client(url: str) -> Any:
    """natsrpy takes the user and password apart from the address."""
    parts = urlsplit(url)
    return natsrpy.Nats(addrs=[f"nats://{parts.hostname}:{parts.port}"],
                        user_and_pass=(unquote(parts.username or ""),
                                       unquote(parts.password or "")))


def pull_request() -> bytes:
    return json.dumps({"batch": BATCH, "expires": int(REQUEST_EXPIRES_SECONDS * 1e9)}).encode()


async def prepare(url: str, count: int, consumers: list[str]) -> None:
    record = realistic_record(random.Random(1), PricedAccount(uuid4(), TERMS), "probe",
                              datetime.now(UTC))
    message = UsageMessage.from_record(record)
    payload = message.to_json()
    client = await connect_nats(url, "probe-setup")
    try:
        js = client.jetstream()
        await js.add_stream(StreamConfig(name=STREAM, subjects=[SUBJECT]))
        pending = []
        for i in range(count):
            headers = {"Nats-Msg-Id": f"{usage_message_id(message)}-{i}"}
            pending.append(await js.publish_async(SUBJECT, payload, headers=headers))
            if len(pending) >= PUBLISH_WINDOW:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        for name in consumers:
            await js.add_consumer(STREAM, ConsumerConfig(durable_name=name,
                                                         ack_policy=AckPolicy.EXPLICIT,
                                                         max_ack_pending=MAX_ACK_PENDING))
    finally:
        await close_nats(client)


class AckingDrain:
    """Pull requests of `BATCH` on one consumer, replies under `<inbox>.<n>`, each delivery
    acknowledged in the callback at once, until `count` were: the same protocol on either
    client (both publish with `publish(subject, payload, reply=...)`)."""

    def __init__(self, publish: Callable[..., Awaitable[None]], consumer: str, inbox: str,
                 count: int) -> None:
        self.publish = publish
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{consumer}"
        self.inbox = inbox
        self.left = count
        self.open = 0  # messages the open request may still bring
        self.requests = 0
        self.done = asyncio.Event()

    async def ask(self) -> None:
        self.open = BATCH
        self.requests += 1
        await self.publish(self.subject, pull_request(), reply=f"{self.inbox}.{self.requests}")

    async def on_message(self, msg: Any) -> None:
        if msg.reply:
            assert msg.headers  # read, as the consumer reads them
            await self.publish(msg.reply, ACK_PAYLOAD)
            self.left -= 1
            self.open -= 1
            if self.left <= 0:
                self.done.set()
            elif self.open == 0:
                await self.ask()
        elif self.left > 0:  # the request ended (a status): ask again
            await self.ask()

    async def run(self) -> None:
        await self.ask()
        await asyncio.wait_for(self.done.wait(), DRAIN_TIMEOUT_SECONDS)


async def drain_nats_py(url: str, consumer: str, count: int) -> None:
    client = await connect_nats(url, "probe-nats-py")
    try:
        drain = AckingDrain(client.publish, consumer, client.new_inbox(), count)
        await client.subscribe(f"{drain.inbox}.*", cb=drain.on_message)
        await drain.run()
        await client.flush()
    finally:
        await close_nats(client)


async def drain_natsrpy_callback(url: str, consumer: str, count: int) -> None:
    client = natsrpy_client(url)
    await client.startup()
    try:
        drain = AckingDrain(client.publish, consumer, f"_INBOX.probe.{uuid4().hex}", count)
        # Held: natsrpy unsubscribes a subscription object once it is dropped.
        subscription = await client.subscribe(f"{drain.inbox}.*",
                                              callback=drain.on_message).detatch()
        await drain.run()
        await client.flush()
        await subscription.unsubscribe()
    finally:
        await client.shutdown()


async def drain_natsrpy_fetch(url: str, consumer: str, count: int) -> None:
    await natsrpy_fetch(url, consumer, count, ack=True)


async def receive_natsrpy_fetch(url: str, consumer: str, count: int) -> None:
    await natsrpy_fetch(url, consumer, count, ack=False)


async def natsrpy_fetch(url: str, consumer: str, count: int, *, ack: bool) -> None:
    client = natsrpy_client(url)
    await client.startup()
    try:
        js = await client.jetstream()
        stream = await js.streams.get(STREAM)
        pull = await stream.consumers.get_pull(consumer)
        left = count
        while left > 0:
            messages = await pull.fetch(max_messages=BATCH, expires=REQUEST_EXPIRES_SECONDS)
            acks = []
            for message in messages:
                assert message.headers
                if ack:
                    acks.append(message.ack())
            await asyncio.gather(*acks)
            left -= len(messages)
    finally:
        await client.shutdown()


WAYS: dict[str, Drain] = {
    "nats-py": drain_nats_py,
    "natsrpy callback": drain_natsrpy_callback,
    "natsrpy fetch": drain_natsrpy_fetch,
    "natsrpy fetch, no acks": receive_natsrpy_fetch,
}
# Without acks a consumer stops delivering at its max_ack_pending: that way takes fewer.
UNACKED_WAY = "natsrpy fetch, no acks"


async def timed(drain: Drain, url: str, consumer: str, count: int) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    await drain(url, consumer, count)
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    console.print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="ledger-probe-") as folder:
        server = EmbeddedNats(Path(folder) / "nats").start()
        try:
            consumers = {name: f"probe{n}" for n, name in enumerate(WAYS)}
            asyncio.run(prepare(server.url, args.records, list(consumers.values())))
            table = Table(title=f"pull and acknowledge {args.records:,} JetStream messages")
            for column in ("client", "CPU per message", "messages/s", "CPU ratio to nats-py"):
                table.add_column(column)
            baseline = 0.0
            for name, drain in WAYS.items():
                count = min(args.records, MAX_ACK_PENDING) if name == UNACKED_WAY else args.records
                cpu, wall = asyncio.run(timed(drain, server.url, consumers[name], count))
                console.print(f"{name}: {cpu / count * 1e6:.1f} us CPU per message")
                per_message = cpu / count
                baseline = baseline or per_message
                table.add_row(name, f"{per_message * 1e6:.1f} us", f"{count / wall:,.0f}",
                              f"{per_message / baseline:.2f}")
        finally:
            server.stop()
    console.print(table)


if __name__ == "__main__":
    main()
