"""The usage consumer: JetStream partitions in, one ledger transaction per batch, acks after it.

For each partition this process serves, a loop fetches up to `batch_size` messages (waiting at
most `wait_ms` for a batch to fill once the first message is there), decodes each with the
pydantic bus contract, and hands the batch to the process's one writer thread
(`adapters.nats.usage_writer`: group commit, pipelined through `Ledger.record_usage_batches`). Only
after the batch's transaction committed are the messages settled, each explicitly, through the
bus port (`adapters.nats.usage_port`; on NATS, `adapters.nats.usage_bus`):

- recorded and duplicate records: `ack`;
- rejected ones (bad JSON, bad fields, unknown or closed account, conflict, no package): their
  original payload goes to `ledger.usage.rejected` (stream `LEDGER_USAGE_REJECTED`) with the
  reason in headers, and then the message is terminated (`term`), so it never blocks the
  records behind it. A rejection is published once per original message for good: its id is
  the original's stream sequence, the broker drops a repeat inside its window, and PostgreSQL
  remembers which were published (scope `rejection_published`) for every later redelivery.
  A publish the broker refuses (too large, 503, an API error, a timeout) is an error of that
  message, counted in `rejection_publish_failures`: a smaller form is tried, else the original
  is `nak`ed with a delay and tried again later; the session and the partition go on;
- if the commit failed (database down, a bug): every message of the batch is `nak`ed with a
  delay and comes again; a valid record is never given up on.

A crash at any point before the acks means redelivery, and redelivery is harmless: the ledger's
idempotency keys (in the same transaction as the charges) answer "duplicate". Rejections found
here, before the service (bad JSON, bad fields), are counted in the ledger's counters exactly
once, keyed by stream sequence, so a redelivered bad message is not counted twice.

Work is bounded whatever the rate producers publish at: at most `in_flight_max` batches are
being committed and acknowledged at once, and each partition reads ahead at most one batch
(`adapters.nats.pull_feed`), so a process holds at most partitions x 2 x `batch_size` messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adapters.nats.ingest_settings import STREAM_NAME, IngestSettings
from adapters.nats.rejection_store import REJECTED_RETRY_DELAY_SECONDS, RejectionStore
from adapters.nats.streams import NAK_DELAY_SECONDS
from adapters.nats.usage_bus import NatsUsageBus
from adapters.nats.usage_contract import BusRejection, decode_usage
from adapters.nats.usage_port import (
    BusSessionLost,
    Delivery,
    DeliveryFeed,
    UsageBus,
)
from adapters.nats.usage_writer import Rejected, UsageWriter
from domain.usage import UsageRecord
from services.backoff import Backoff
from services.ledger import Ledger
from services.usage.outcomes import UsageRejection

log = logging.getLogger(__name__)

# A fetch with nothing to deliver returns after this long, so a stop request is seen promptly.
IDLE_FETCH_SECONDS = 1.0
# After the bus failed a partition loop (connection lost), it tries again after this long,
# doubling up to the maximum. What was taken and not settled comes again after `ack_wait`.
RETRY_DELAY_SECONDS_FIRST = 0.2
RETRY_DELAY_SECONDS_MAX = 5.0
RETRY_BACKOFF = Backoff(RETRY_DELAY_SECONDS_FIRST, RETRY_DELAY_SECONDS_MAX)


@dataclass
class IngestStats:
    messages: int = 0
    recorded: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches: int = 0
    commit_failures: int = 0
    sessions: int = 0  # bus connections opened (one per run)
    bus_interruptions: int = 0  # partition loops the bus failed (a lost connection)
    rejection_publish_failures: int = 0  # refused by the broker; the original comes again
    rejections_published_before: int = 0  # redelivered originals whose rejection was stored
    rejected_by_code: dict[str, int] = field(default_factory=dict)


# Called after each committed batch with the committed records (benchmarks measure latency).
CommitHook = Callable[[list[UsageRecord]], None]


def _subject_account(subject: str) -> str | None:
    """The account token of `ledger.usage.v1.<partition>.<account_id>`."""
    parts = subject.split(".")
    return parts[4] if len(parts) == 5 else None


class UsageConsumer:
    def __init__(self, ledger: Ledger, nats_url: str, *, partitions: Sequence[int],
                 settings: IngestSettings | None = None, create_stream: bool = True,
                 on_commit: CommitHook | None = None,
                 clock: Callable[[], datetime] | None = None,
                 open_bus: Callable[[], Awaitable[UsageBus]] | None = None) -> None:
        """`clock` bounds `occurred_at` (default: the ledger's own clock). `open_bus` connects
        the bus (default: NATS JetStream at `nats_url` through nats-py)."""
        self.ledger = ledger
        self.clock = clock or ledger.clock
        self.nats_url = nats_url
        self.settings = settings or IngestSettings.from_env()
        for partition in partitions:
            if not 0 <= partition < self.settings.partitions:
                raise ValueError(f"partition {partition} is outside "
                                 f"0..{self.settings.partitions - 1}")
        self.partitions = list(partitions)
        self.create_stream = create_stream
        self.on_commit = on_commit
        self.stats = IngestStats()
        self._open_bus = open_bus or self._open_nats_bus
        self._stopping = asyncio.Event()
        self._bus: UsageBus | None = None
        self._loops: list[asyncio.Task[None]] = []

    async def _open_nats_bus(self) -> UsageBus:
        return await NatsUsageBus.open(self.nats_url, self.settings,
                                       create_stream=self.create_stream)

    def is_healthy(self) -> bool:
        """Connected to the bus, and every partition loop still running."""
        return (self._bus is not None and self._bus.is_connected()
                and bool(self._loops) and not any(loop.done() for loop in self._loops))

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume until `stop` is set (or `stop()` is called); then finish the batches in hand,
        settle them and return.

        One bus connection (nats-py reconnects by itself). A partition loop that loses the bus
        while taking or settling tries again with backoff; what it had not settled comes again
        after `ack_wait`. Any other failure of a loop is a bug: it stops the consumer."""
        bus = await self._open_bus()
        self._bus = bus
        self.stats.sessions += 1
        writer = UsageWriter(self.ledger, self._rejection_key,
                             job_records_max=self.settings.job_records_max)
        helpers: list[asyncio.Task[Any]] = []
        try:
            in_flight = asyncio.Semaphore(self.settings.in_flight_max)
            writer.start()
            if stop is not None:
                helpers.append(asyncio.create_task(self._relay_stop(stop)))
            loops = [asyncio.create_task(self._serve(bus, p, writer, in_flight),
                                         name=f"usage-partition-{p}")
                     for p in self.partitions]
            self._loops = loops
            stopping = asyncio.create_task(self._stopping.wait())
            helpers.append(stopping)
            await asyncio.wait([stopping, *loops], return_when=asyncio.FIRST_COMPLETED)
            self._stopping.set()
            results = await asyncio.gather(*loops, return_exceptions=True)
            bugs = [r for r in results if isinstance(r, BaseException)]
            if bugs:
                raise bugs[0]
        finally:
            # Every loop awaited its own submission, so the writer holds nothing now.
            await writer.stop()
            for task in helpers:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await bus.close()

    async def _relay_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping.set()

    async def _serve(self, bus: UsageBus, partition: int, writer: UsageWriter,
                     in_flight: asyncio.Semaphore) -> None:
        feed = await bus.open_feed(partition, self.settings.batch_size)
        wait_seconds = self.settings.wait_ms / 1000
        failures = 0
        try:
            while not self._stopping.is_set():
                try:
                    # Waiting for messages holds no in-flight slot: an idle partition must
                    # not keep a busy one waiting.
                    deliveries = await feed.take(wait_seconds, IDLE_FETCH_SECONDS)
                    if deliveries:
                        # Decoding holds no slot either: it overlaps with the commit.
                        valid, rejected = self._decode(deliveries)
                        async with in_flight:
                            await self._handle(bus, feed, deliveries, valid, rejected, writer)
                    failures = 0
                except BusSessionLost as error:
                    self.stats.bus_interruptions += 1
                    failures += 1
                    delay = RETRY_BACKOFF.delay_seconds(failures)
                    log.warning("partition %d: %s; what was not settled comes again after "
                                "ack_wait; trying again in %.1fs", partition, error, delay)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            await feed.close()

    def _decode(self, deliveries: list[Delivery]
                ) -> tuple[list[tuple[Delivery, UsageRecord]], list[Rejected]]:
        valid: list[tuple[Delivery, UsageRecord]] = []
        rejected: list[Rejected] = []
        now = self.clock()
        for delivery in deliveries:
            decoded = decode_usage(delivery.data, _subject_account(delivery.subject),
                                   msg_id=delivery.msg_id, now=now)
            if isinstance(decoded, BusRejection):
                rejected.append(Rejected(delivery, decoded.code, decoded.message))
            else:
                valid.append((delivery, decoded))
        return valid, rejected

    async def _handle(self, bus: UsageBus, feed: DeliveryFeed, deliveries: list[Delivery],
                      valid: list[tuple[Delivery, UsageRecord]], rejected: list[Rejected],
                      writer: UsageWriter) -> None:
        try:
            verdicts = await writer.submit(valid, list(rejected))
        except Exception:
            self.stats.commit_failures += 1
            log.exception("could not commit a batch of %d usage messages; they will be "
                          "delivered again in %.0fs", len(deliveries), NAK_DELAY_SECONDS)
            await feed.settle([], [], [(d, NAK_DELAY_SECONDS) for d in deliveries])
            return
        committed: list[UsageRecord] = []
        to_ack: list[Delivery] = []
        for delivery, record in valid:
            verdict = verdicts[id(delivery)]
            if isinstance(verdict, UsageRejection):
                rejected.append(Rejected(delivery, verdict.code, verdict.message))
                continue
            if verdict:
                committed.append(record)
                self.stats.recorded += 1
            else:
                self.stats.duplicates += 1
            to_ack.append(delivery)
        # Rejections are stored on the rejected subject before their message is let go, so a
        # crash in between repeats the publish (never stored twice: see RejectionStore),
        # never loses it. One the broker refused is nak'ed and comes again later.
        unstored = await self._store_rejections(bus, rejected) if rejected else set()
        let_go = [item for item in rejected if id(item) not in unstored]
        await feed.settle(to_ack, [item.msg for item in let_go],
                          [(item.msg, REJECTED_RETRY_DELAY_SECONDS)
                           for item in rejected if id(item) in unstored])
        self.stats.messages += len(to_ack) + len(let_go)
        self.stats.rejected += len(let_go)
        self.stats.batches += 1
        for item in let_go:
            self.stats.rejected_by_code[item.code] = self.stats.rejected_by_code.get(item.code,
                                                                                     0) + 1
        if self.on_commit is not None and committed:
            self.on_commit(committed)

    def _rejection_key(self, delivery: Delivery) -> str:
        epoch = self._bus.stream_epoch if self._bus is not None else ""
        return f"{STREAM_NAME}@{epoch}:{delivery.stream_sequence}"

    async def _store_rejections(self, bus: UsageBus, rejected: list[Rejected]) -> set[int]:
        store = RejectionStore(self.ledger, bus, self.stats)
        return await store.store(rejected)


def partitions_for_member(partitions: int, member: int, members: int) -> list[int]:
    """The partitions consumer process `member` of `members` serves: every members-th one."""
    if not 1 <= members <= partitions:
        raise ValueError(f"--members must be 1 to the partition count ({partitions}), "
                         f"got {members}")
    if not 0 <= member < members:
        raise ValueError(f"--member must be 0 to {members - 1}, got {member}")
    return [p for p in range(partitions) if p % members == member]
