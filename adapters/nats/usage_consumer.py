"""The usage consumer: JetStream partitions in, one ledger transaction per batch, acks after it.

For each partition this process serves, a loop fetches up to `batch_size` messages (waiting at
most `wait_ms` for a batch to fill once the first message is there), decodes each with the
pydantic bus contract, and hands the batch to the process's one writer thread
(`adapters.nats.usage_writer`: group commit, pipelined through `Ledger.record_usage_batches`). Only
after the batch's transaction committed are the messages acknowledged, each explicitly, all of a
batch in one socket write (`adapters.nats.wire_client`):

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import nats
from eventsourcing.persistence import IntegrityError
from nats.aio.client import Client

from adapters.nats.connection import close_nats, connect_nats
from adapters.nats.ingest_settings import (
    REJECTED_STREAM_NAME,
    REJECTED_SUBJECT,
    STREAM_NAME,
    IngestSettings,
)
from adapters.nats.pull_feed import PullFeed
from adapters.nats.streams import NAK_DELAY_SECONDS, consumer_name, ensure_stream
from adapters.nats.usage_contract import BusRejection, decode_usage, rejection_message
from adapters.nats.usage_writer import Rejected, UsageWriter
from adapters.nats.wire_client import WireConnection, WireConnectionLost
from adapters.nats.wire_frames import WireMsg, ack_frame, nak_frame, stream_sequence, term_frame
from domain.usage import UsageRecord
from services.keyed_recording import KeyRow
from services.ledger import Ledger
from services.usage.outcomes import UsageRejection

log = logging.getLogger(__name__)

# A fetch with nothing to deliver returns after this long, so a stop request is seen promptly.
IDLE_FETCH_SECONDS = 1.0
REJECTED_PUBLISH_TIMEOUT_SECONDS = 5.0
# A rejection the broker refused is offered again after this long (the original is nak'ed).
REJECTED_RETRY_DELAY_SECONDS = 5.0
# PostgreSQL's lasting record of the rejections published (idempotency-key table).
REJECTION_PUBLISHED_SCOPE = "rejection_published"
# Why a rejection's publish can fail; each is an error of that message, not of the session.
REJECTED_PUBLISH_FAILURES = (nats.errors.Error, TimeoutError)
# After a lost bus connection, connect again after this long, doubling up to the maximum.
RECONNECT_DELAY_SECONDS_FIRST = 0.2
RECONNECT_DELAY_SECONDS_MAX = 5.0
# Failures that end a session on the bus but not the consumer: it connects again. Whatever was
# taken and not acknowledged is delivered again by the broker after `ack_wait` (and answered
# "duplicate" by the ledger if it was committed).
SESSION_FAILURES = (WireConnectionLost, nats.errors.Error, TimeoutError)
WIRE_CLIENT_NAME = "ledger-usage-consumer"


@dataclass
class IngestStats:
    messages: int = 0
    recorded: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches: int = 0
    commit_failures: int = 0
    sessions: int = 0  # bus sessions opened; more than one means the connection was lost
    rejection_publish_failures: int = 0  # refused by the broker; the original comes again
    rejections_published_before: int = 0  # redelivered originals whose rejection was stored
    rejected_by_code: dict[str, int] = field(default_factory=dict)


# Called after each committed batch with the committed records (benchmarks measure latency).
CommitHook = Callable[[list[UsageRecord]], None]


def _subject_account(subject: str) -> str | None:
    """The account token of `ledger.usage.v1.<partition>.<account_id>`."""
    parts = subject.split(".")
    return parts[4] if len(parts) == 5 else None


_MSG_ID_HEADER = b"\r\nNats-Msg-Id:"


def message_id(headers: bytes | None) -> str | None:
    """The `Nats-Msg-Id` header of a raw NATS header block (the exact name the broker reads)."""
    if headers is None:
        return None
    start = headers.find(_MSG_ID_HEADER)
    if start < 0:
        return None
    start += len(_MSG_ID_HEADER)
    end = headers.find(b"\r\n", start)
    return headers[start:end if end >= 0 else None].strip().decode("utf-8", "replace")


class UsageConsumer:
    def __init__(self, ledger: Ledger, nats_url: str, *, partitions: Sequence[int],
                 settings: IngestSettings | None = None, create_stream: bool = True,
                 on_commit: CommitHook | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        """`clock` bounds `occurred_at` (default: the ledger's own clock)."""
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
        self._stopping = asyncio.Event()
        self._stream_epoch = ""
        self._connection: Client | None = None
        self._wire: WireConnection | None = None
        self._loops: list[asyncio.Task[None]] = []

    def is_healthy(self) -> bool:
        """Connected to NATS (both connections), and every partition loop still running."""
        return (self._connection is not None and self._connection.is_connected
                and self._wire is not None and not self._wire.is_closed
                and bool(self._loops) and not any(loop.done() for loop in self._loops))

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume until `stop` is set (or `stop()` is called); then finish the batches in hand,
        acknowledge them and return.

        Two connections: nats-py for the control plane (the stream, the rejected subject), and
        the wire client for the messages themselves. A lost wire connection ends a session:
        each partition loop finishes the batch it holds as far as it can, and the consumer
        connects again with backoff, for as long as it runs."""
        connection = await connect_nats(self.nats_url, "ledger-usage-consumer")
        self._connection = connection
        js = connection.jetstream()
        writer = UsageWriter(self.ledger, self._rejection_key)
        helpers: list[asyncio.Task[Any]] = []
        try:
            if self.create_stream:
                await ensure_stream(js, self.settings)
            info = await js.stream_info(STREAM_NAME)
            created = info.created or datetime.fromtimestamp(0, UTC)
            self._stream_epoch = created.isoformat()
            in_flight = asyncio.Semaphore(self.settings.in_flight_max)
            writer.start()
            if stop is not None:
                helpers.append(asyncio.create_task(self._relay_stop(stop)))
            delay = RECONNECT_DELAY_SECONDS_FIRST
            sessions = 0
            while not self._stopping.is_set():
                try:
                    wire = await WireConnection.connect(self.nats_url, WIRE_CLIENT_NAME,
                                                        first_server=sessions)
                except WireConnectionLost as error:
                    log.warning("%s; trying again in %.1fs", error, delay)
                else:
                    self.stats.sessions += 1
                    lost = await self._session(wire, js, writer, in_flight)
                    if lost is None:
                        break
                    log.warning("usage consumer lost its bus session (%s); messages not "
                                "acknowledged come again after ack_wait; connecting again in "
                                "%.1fs", lost, delay)
                sessions += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, RECONNECT_DELAY_SECONDS_MAX)
        finally:
            # Every loop awaited its own submission, so the writer holds nothing now.
            await writer.stop()
            for task in helpers:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await close_nats(connection)

    async def _relay_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping.set()

    async def _session(self, wire: WireConnection, js: nats.js.JetStreamContext,
                       writer: UsageWriter, in_flight: asyncio.Semaphore) -> BaseException | None:
        """Serve every partition on one wire connection until a stop (returns None) or a lost
        connection (returns why). Any other failure of a loop is a bug: it stops the consumer."""
        self._wire = wire
        loops = [asyncio.create_task(self._serve(wire, js, p, writer, in_flight),
                                     name=f"usage-partition-{p}")
                 for p in self.partitions]
        self._loops = loops
        watchers = [asyncio.create_task(self._stopping.wait()),
                    asyncio.create_task(wire.wait_closed())]
        try:
            await asyncio.wait([*watchers, *loops], return_when=asyncio.FIRST_COMPLETED)
            failed = [loop.exception() for loop in loops
                      if loop.done() and not loop.cancelled() and loop.exception() is not None]
            if any(not isinstance(error, SESSION_FAILURES) for error in failed):
                self._stopping.set()
            elif not self._stopping.is_set():
                # The session is over: closing the connection makes every loop end (a loop
                # waiting for its commit ends once it tried to acknowledge).
                await wire.close()
            results = await asyncio.gather(*loops, return_exceptions=True)
        finally:
            for watcher in watchers:
                watcher.cancel()
            await wire.close()
            self._wire = None
        errors = [r for r in results if isinstance(r, BaseException)]
        bugs = [e for e in errors if not isinstance(e, SESSION_FAILURES)]
        if bugs:
            raise bugs[0]
        if errors:
            return errors[0]
        if self._stopping.is_set():
            return None
        return WireConnectionLost("the wire connection closed")

    async def _serve(self, wire: WireConnection, js: nats.js.JetStreamContext, partition: int,
                     writer: UsageWriter, in_flight: asyncio.Semaphore) -> None:
        feed = PullFeed(wire, STREAM_NAME, consumer_name(partition),
                        self.settings.batch_size).start()
        wait_seconds = self.settings.wait_ms / 1000
        try:
            while not self._stopping.is_set():
                # Waiting for messages holds no in-flight slot: an idle partition must not
                # keep a busy one waiting.
                msgs = await feed.take(wait_seconds, IDLE_FETCH_SECONDS)
                if msgs:
                    # Decoding holds no slot either: it overlaps with the commit in progress.
                    valid, rejected = self._decode(msgs)
                    async with in_flight:
                        await self._handle(wire, js, msgs, valid, rejected, writer)
        finally:
            await feed.close()

    def _decode(self, msgs: list[WireMsg]
                ) -> tuple[list[tuple[WireMsg, UsageRecord]], list[Rejected]]:
        valid: list[tuple[WireMsg, UsageRecord]] = []
        rejected: list[Rejected] = []
        now = self.clock()
        for msg in msgs:
            decoded = decode_usage(msg.data, _subject_account(msg.subject),
                                   msg_id=message_id(msg.headers), now=now)
            if isinstance(decoded, BusRejection):
                rejected.append(Rejected(msg, decoded.code, decoded.message))
            else:
                valid.append((msg, decoded))
        return valid, rejected

    async def _handle(self, wire: WireConnection, js: nats.js.JetStreamContext,
                      msgs: list[WireMsg], valid: list[tuple[WireMsg, UsageRecord]],
                      rejected: list[Rejected], writer: UsageWriter) -> None:
        try:
            verdicts = await writer.submit(valid, list(rejected))
        except Exception:
            self.stats.commit_failures += 1
            log.exception("could not commit a batch of %d usage messages; they will be "
                          "delivered again in %.0fs", len(msgs), NAK_DELAY_SECONDS)
            wire.write(b"".join([nak_frame(msg.reply, NAK_DELAY_SECONDS) for msg in msgs]))
            await wire.drain()
            return
        committed: list[UsageRecord] = []
        to_ack: list[WireMsg] = []
        for msg, record in valid:
            verdict = verdicts[id(msg)]
            if isinstance(verdict, UsageRejection):
                rejected.append(Rejected(msg, verdict.code, verdict.message))
                continue
            if verdict:
                committed.append(record)
                self.stats.recorded += 1
            else:
                self.stats.duplicates += 1
            to_ack.append(msg)
        # Rejections are stored on the rejected subject before their message is let go, so a
        # crash in between repeats the publish (never stored twice: see _store_rejections),
        # never loses it. One the broker refused is nak'ed and comes again later.
        unstored = await self._store_rejections(js, rejected) if rejected else set()
        let_go = [item for item in rejected if id(item) not in unstored]
        # Then every answer of the batch in one write: each message still gets its own
        # explicit answer, but the cost is one system call, not one per message.
        frames = [ack_frame(msg.reply) for msg in to_ack]
        frames += [term_frame(item.msg.reply) for item in let_go]
        frames += [nak_frame(item.msg.reply, REJECTED_RETRY_DELAY_SECONDS)
                   for item in rejected if id(item) in unstored]
        wire.write(b"".join(frames))
        await wire.drain()
        self.stats.messages += len(to_ack) + len(let_go)
        self.stats.rejected += len(let_go)
        self.stats.batches += 1
        for item in let_go:
            self.stats.rejected_by_code[item.code] = self.stats.rejected_by_code.get(item.code,
                                                                                     0) + 1
        if self.on_commit is not None and committed:
            self.on_commit(committed)

    def _rejection_key(self, msg: WireMsg) -> str:
        return f"{STREAM_NAME}@{self._stream_epoch}:{stream_sequence(msg.reply)}"

    async def _store_rejections(self, js: nats.js.JetStreamContext,
                                rejected: list[Rejected]) -> set[int]:
        store = RejectionStore(self.ledger, js, self._stream_epoch, self.stats)
        return await store.store(rejected)


class RejectionStore:
    """Publishes rejections to their stream, each once per original message, for good.

    A rejection's id is its original's stream sequence (`rejected:<stream epoch>:<sequence>`,
    the epoch being the stream's creation time, so a recreated stream never reuses one). The
    broker drops a repeat inside its duplicate window; after it, PostgreSQL's record of the
    rejections published (idempotency-key scope `rejection_published`, written after the
    broker acknowledged) keeps a redelivered original from being published again. The one gap:
    a crash between the broker's acknowledgement and that write, with the redelivery coming
    after the window: then the rejection is stored twice (counted once all the same)."""

    def __init__(self, ledger: Ledger, js: nats.js.JetStreamContext, stream_epoch: str,
                 stats: IngestStats) -> None:
        self.ledger = ledger
        self.js = js
        self.stream_epoch = stream_epoch
        self.stats = stats

    def key(self, msg: WireMsg) -> str:
        return f"{self.stream_epoch}:{stream_sequence(msg.reply)}"

    async def store(self, rejected: list[Rejected]) -> set[int]:
        """Publish each rejection not published before; return the ids of the items that
        could not be (their originals are nak'ed and come again)."""
        by_key = {self.key(item.msg): item for item in rejected}
        published_before = await self._published_before(list(by_key))
        unstored: set[int] = set()
        stored: list[str] = []
        for key, item in by_key.items():
            if key in published_before:
                self.stats.rejections_published_before += 1
            elif await self._publish(key, item):
                stored.append(key)
            else:
                unstored.add(id(item))
        if stored:
            await asyncio.to_thread(self._mark_published, stored)
        return unstored

    async def _published_before(self, keys: list[str]) -> set[str]:
        try:
            return set(await asyncio.to_thread(self.ledger.keyed.select_keys,
                                               REJECTION_PUBLISHED_SCOPE, keys))
        except Exception:
            # Not knowing costs at most a second copy after the broker's window; the
            # database being away must not hold the rejections up.
            log.warning("could not read which rejections were published", exc_info=True)
            return set()

    def _mark_published(self, keys: list[str]) -> None:
        """Remember for good that these rejections are stored (another process may have
        marked some of them first: then mark the rest)."""
        try:
            for _attempt in range(2):
                known = self.ledger.keyed.select_keys(REJECTION_PUBLISHED_SCOPE, keys)
                new = [key for key in keys if key not in known]
                if not new:
                    return
                try:
                    self.ledger.save(idempotency_keys=[
                        KeyRow(REJECTION_PUBLISHED_SCOPE, key, "", "published") for key in new])
                    return
                except IntegrityError:
                    continue
        except Exception:
            log.warning("could not record %d published rejections", len(keys), exc_info=True)

    async def _publish(self, key: str, item: Rejected) -> bool:
        """Store one rejection; False (counted, logged) if the broker refused even its
        smallest form."""
        sequence = stream_sequence(item.msg.reply)
        for keep_payload in (True, False):
            headers, body = rejection_message(
                item.code, item.message, payload=item.msg.data,
                original_subject=item.msg.subject, original_sequence=sequence,
                original_msg_id=message_id(item.msg.headers), rejection_id=f"rejected:{key}",
                keep_payload=keep_payload)
            try:
                await self.js.publish(REJECTED_SUBJECT, body, headers=headers,
                                      stream=REJECTED_STREAM_NAME,
                                      timeout=REJECTED_PUBLISH_TIMEOUT_SECONDS)
                return True
            except REJECTED_PUBLISH_FAILURES as error:
                self.stats.rejection_publish_failures += 1
                log.warning("the rejection of stream sequence %d (%s) was refused (%r)%s",
                            sequence, item.code, error,
                            "; trying without its payload" if keep_payload else
                            f"; the original comes again in {REJECTED_RETRY_DELAY_SECONDS:.0f}s")
        return False


def partitions_for_member(partitions: int, member: int, members: int) -> list[int]:
    """The partitions consumer process `member` of `members` serves: every members-th one."""
    if not 1 <= members <= partitions:
        raise ValueError(f"--members must be 1 to the partition count ({partitions}), "
                         f"got {members}")
    if not 0 <= member < members:
        raise ValueError(f"--member must be 0 to {members - 1}, got {member}")
    return [p for p in range(partitions) if p % members == member]
