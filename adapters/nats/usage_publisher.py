"""The client internal services use to publish usage: typed, idempotent, retried.

Each record goes to `ledger.usage.v1.<account_id>` with header `Nats-Msg-Id` =
`bus_contract.usage_message_id(record)` (the usage_id and a digest of the content), and is
retried with the same id until the stream acknowledges it: within the broker's duplicate
window the stream drops an exact copy itself, after it the ledger's own idempotency keys do.
A copy with the same usage_id and other content has another id: the broker never drops it, so
it always reaches the ledger and is rejected there as a conflict (and reported). A caller
that gets no exception from `publish_usage` knows the record is stored durably in the stream.

Which stream stored it is read from the acknowledgement, not asked of the server with a
`Nats-Expected-Stream` header: the stream keeps every header of every message and each
consumer parses them all again per delivery, and without that header the consumer's bus path
measured 1-9 us cheaper per record (8-9 in three of four pairs; BENCHMARKS.md, 2026-12-03).
Stream subjects cannot overlap within an account, so another stream only takes these subjects
when `LEDGER_USAGE` is missing: an acknowledgement from any other stream is
`UsageStreamMismatch`, never success.

`publish_many` keeps up to `window` publishes waiting for their acknowledgement at once (the
stream acknowledges in order, so throughput does not pay a round trip per record). It is
`JetStreamContext.publish_async` done by hand on nats-py's public API: `Client.publish` with a
reply subject under one inbox subscription, and a yield to the event loop only every
`PUBLISH_CHUNK_MAX` records, so nats-py writes a chunk in one socket write. `publish_async`
itself yields per record (its window semaphore is awaited through `asyncio.wait_for`), so
nats-py's flusher wrote every record on its own: measured ~1.6 ms of CPU per record on this
2-core virtual machine, where a system call is dear. Anything refused, not acknowledged within
`PUBLISH_TIMEOUT_SECONDS`, or cut off by a lost connection (nats-py reconnects by itself) is
published again with the same id through `publish_raw` (one at a time, with retries): the
broker's duplicate window and the ledger's idempotency keys make a second copy harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import PubAck
from nats.js.errors import APIError, NoStreamResponseError

from adapters.nats.connection import (
    ENV_PRODUCER_INBOX_PREFIX,
    close_nats,
    connect_nats,
    producer_inbox_prefix,
)
from adapters.nats.ingest_settings import STREAM_NAME
from adapters.nats.usage_contract import UsageMessage, usage_json, usage_message_id, usage_subject
from domain.usage import UsageRecord
from services.backoff import Backoff

PUBLISH_ATTEMPTS_MAX = 8
PUBLISH_TIMEOUT_SECONDS = 5.0
RETRY_DELAY_SECONDS_FIRST = 0.1
RETRY_DELAY_SECONDS_MAX = 2.0
PUBLISH_BACKOFF = Backoff(RETRY_DELAY_SECONDS_FIRST, RETRY_DELAY_SECONDS_MAX)
PUBLISH_WINDOW_DEFAULT = 2000
PUBLISH_WINDOW_MAX = 20_000
CLIENT_NAME = "ledger-usage-publisher"
MSG_ID_HEADER = "Nats-Msg-Id"
# How an acknowledgement from the usage stream starts (JetStream writes compact JSON).
STORED_IN_USAGE_STREAM = b'{"stream":"' + STREAM_NAME.encode() + b'"'
# Publishes written per chunk in publish_many; between chunks nats-py writes them in one go and
# reads acknowledgements (one socket write per record cost ~1.6 ms of CPU here, issue 10).
PUBLISH_CHUNK_MAX = 256

RETRYABLE = (NatsTimeoutError, asyncio.TimeoutError, NoStreamResponseError, APIError)


class UsageStreamMismatch(RuntimeError):
    """A stream other than LEDGER_USAGE stored the record: the ledger never reads it there."""


@dataclass
class PublishReport:
    published: int = 0
    broker_duplicates: int = 0  # dropped by the stream inside its duplicate window
    retries: int = 0


class UsagePublisher:
    def __init__(self, connection: Client, *, owns_connection: bool = True) -> None:
        self.connection = connection
        self.js = connection.jetstream(timeout=PUBLISH_TIMEOUT_SECONDS)
        self.owns_connection = owns_connection
        self.report = PublishReport()

    @classmethod
    async def connect(cls, nats_url: str, *, inbox_prefix: str | None = None) -> UsagePublisher:
        """Connect as a producer. Acknowledgements come under `inbox_prefix`: by default
        `LEDGER_PRODUCER_INBOX_PREFIX`, else NATS's `_INBOX`; give each producer service a
        prefix (and a user that may read only that) when producers must not read each other's
        acknowledgements. The ledger's own replies come elsewhere (adapters.nats.connection)."""
        connection = await connect_nats(nats_url, CLIENT_NAME,
                                        inbox_prefix=inbox_prefix or producer_inbox_prefix(),
                                        inbox_setting=ENV_PRODUCER_INBOX_PREFIX)
        return cls(connection)

    async def close(self) -> None:
        if self.owns_connection:
            await close_nats(self.connection)

    async def __aenter__(self) -> UsagePublisher:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.close()

    async def publish_usage(self, record: UsageRecord | UsageMessage) -> PubAck:
        """Publish one record and wait until the stream stored it (retrying with the same id)."""
        return await self.publish_raw(usage_subject(record.account_id), usage_json(record),
                                      msg_id=usage_message_id(record))

    async def publish_raw(self, subject: str, payload: bytes, *,
                          msg_id: str | None = None) -> PubAck:
        """Publish bytes as they are (tests use it for bad input), with the same retries."""
        for attempt in range(1, PUBLISH_ATTEMPTS_MAX + 1):
            try:
                ack = await self.js.publish(subject, payload,
                                            headers={MSG_ID_HEADER: msg_id} if msg_id else None)
            except RETRYABLE:
                if attempt == PUBLISH_ATTEMPTS_MAX:
                    raise
                self.report.retries += 1
                await asyncio.sleep(PUBLISH_BACKOFF.delay_seconds(attempt))
                continue
            if ack.stream != STREAM_NAME:
                raise UsageStreamMismatch(
                    f"{subject} was stored by stream {ack.stream!r}, not {STREAM_NAME}: the "
                    f"ledger reads usage only from {STREAM_NAME}. Remove that stream's "
                    f"{subject.rsplit('.', 1)[0]}.* subjects and start the ledger (`ledger up` "
                    f"or `ledger consume` creates {STREAM_NAME}), then publish again")
            self._count(ack)
            return ack
        raise AssertionError("unreachable")

    async def publish_many(self, records: Iterable[UsageRecord | UsageMessage], *,
                           window: int = PUBLISH_WINDOW_DEFAULT,
                           message_ids: Iterable[bool] | None = None) -> PublishReport:
        """Publish records with up to `window` acknowledgements outstanding; a record whose
        pipelined publish fails (or is not acknowledged in time) is published again alone,
        with the same id.

        `message_ids`, if given, says per record whether to set `Nats-Msg-Id` (tests use it to
        act as a producer that does not, so that only the ledger can catch the duplicate).
        """
        if not 1 <= window <= PUBLISH_WINDOW_MAX:
            raise ValueError(f"window must be 1 to {PUBLISH_WINDOW_MAX}, got {window}")
        pipeline = _AckPipeline(self.report, window)
        inbox = self.connection.new_inbox()
        subscription = await self.connection.subscribe(f"{inbox}.*", cb=pipeline.on_ack)
        flags = iter(message_ids) if message_ids is not None else None
        try:
            for number, record in enumerate(records):
                with_id = next(flags) if flags is not None else True
                reply = f"{inbox}.{number}"
                pipeline.outstanding[reply] = (record, with_id)
                try:
                    await self.connection.publish(
                        usage_subject(record.account_id), usage_json(record), reply=reply,
                        headers=_headers(record, with_id))
                except NatsError:
                    pipeline.failed.append(pipeline.outstanding.pop(reply))
                if number % pipeline.chunk == pipeline.chunk - 1:
                    # Let nats-py write the chunk in one go and read acknowledgements.
                    await asyncio.sleep(0)
                    await pipeline.wait_below(window - pipeline.chunk)
            await pipeline.wait_below(0)
        finally:
            with contextlib.suppress(NatsError):
                await subscription.unsubscribe()
        for record, with_id in pipeline.failed:
            self.report.retries += 1
            await self.publish_raw(usage_subject(record.account_id), usage_json(record),
                                   msg_id=usage_message_id(record) if with_id else None)
        return self.report

    def _count(self, ack: PubAck) -> None:
        self.report.published += 1
        if ack.duplicate:
            self.report.broker_duplicates += 1


def _headers(record: UsageRecord | UsageMessage, with_id: bool) -> dict[str, str] | None:
    return {MSG_ID_HEADER: usage_message_id(record)} if with_id else None


def _from_usage_stream(ack: bytes) -> bool:
    """Whether a JetStream acknowledgement comes from LEDGER_USAGE (compared as bytes first: the
    server writes it compactly, `stream` first; parsed if it ever writes it otherwise)."""
    if ack.startswith(STORED_IN_USAGE_STREAM):
        return True
    try:
        return bool(json.loads(ack).get("stream") == STREAM_NAME)
    except (ValueError, AttributeError):
        return False


class _AckPipeline:
    """The pipelined publishes of one `publish_many` call: what is waiting for its
    acknowledgement, what failed, and the bounded window between them."""

    def __init__(self, report: PublishReport, window: int) -> None:
        self.report = report
        self.chunk = max(1, min(PUBLISH_CHUNK_MAX, window // 4))
        self.outstanding: dict[str, tuple[UsageRecord | UsageMessage, bool]] = {}
        self.failed: list[tuple[UsageRecord | UsageMessage, bool]] = []
        self.progress = asyncio.Event()

    async def on_ack(self, msg: Msg) -> None:
        item = self.outstanding.pop(msg.subject, None)
        if item is None:
            return  # answered after we gave up on it: it is being published again anyway
        data = msg.data
        # An empty body is a status (503: no stream took it); an error names "error"; another
        # stream's acknowledgement is not one of ours: publish_raw says what is wrong.
        if not data or b'"error"' in data or not _from_usage_stream(data):
            self.failed.append(item)
        else:
            self.report.published += 1
            # Only a duplicate's acknowledgement names the field: parse just those.
            if b'"duplicate"' in data and json.loads(data).get("duplicate"):
                self.report.broker_duplicates += 1
        self.progress.set()

    async def wait_below(self, limit: int) -> None:
        while len(self.outstanding) > limit:
            self.progress.clear()
            try:
                await asyncio.wait_for(self.progress.wait(), PUBLISH_TIMEOUT_SECONDS)
            except TimeoutError:
                # No acknowledgement for that long (say, a reconnect lost them): publish the
                # rest again, one by one, with the same ids.
                self.failed.extend(self.outstanding.values())
                self.outstanding.clear()
