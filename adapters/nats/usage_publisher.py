"""The client internal services use to publish usage: typed, idempotent, retried.

Each record goes to `ledger.usage.v1.<account_id>` with header `Nats-Msg-Id` =
`bus_contract.usage_message_id(record)` (the usage_id and a digest of the content), and is
retried with the same id until the stream acknowledges it: within the broker's duplicate
window the stream drops an exact copy itself, after it the ledger's own idempotency keys do.
A copy with the same usage_id and other content has another id: the broker never drops it, so
it always reaches the ledger and is rejected there as a conflict (and reported). A caller
that gets no exception from `publish_usage` knows the record is stored durably in the stream.

`publish_many` keeps up to `window` publishes waiting for their acknowledgement at once with
nats-py's `JetStreamContext.publish_async` (the stream acknowledges in order, so throughput does
not pay a round trip per record; measured ~46,000 records/s in issue 10). Anything refused, not
acknowledged within `PUBLISH_TIMEOUT_SECONDS`, or cut off by a lost connection is published again
with the same id through `publish_raw` (one at a time, with retries): the broker's duplicate
window and the ledger's idempotency keys make a second copy harmless.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import APIError, NoStreamResponseError, TooManyStalledMsgsError

from adapters.nats.connection import close_nats, connect_nats
from adapters.nats.ingest_settings import STREAM_NAME
from adapters.nats.usage_contract import UsageMessage, usage_message_id, usage_subject
from domain.usage import UsageRecord

PUBLISH_ATTEMPTS_MAX = 8
PUBLISH_TIMEOUT_SECONDS = 5.0
RETRY_DELAY_SECONDS_FIRST = 0.1
RETRY_DELAY_SECONDS_MAX = 2.0
PUBLISH_WINDOW_DEFAULT = 2000
PUBLISH_WINDOW_MAX = 20_000
CLIENT_NAME = "ledger-usage-publisher"
MSG_ID_HEADER = "Nats-Msg-Id"

RETRYABLE = (NatsTimeoutError, asyncio.TimeoutError, NoStreamResponseError, APIError)


@dataclass
class PublishReport:
    published: int = 0
    broker_duplicates: int = 0  # dropped by the stream inside its duplicate window
    retries: int = 0


# A publish still waiting for its acknowledgement: the future, the message, with an id or not.
_Pending = tuple["asyncio.Future[PubAck]", UsageMessage, bool]


class UsagePublisher:
    def __init__(self, connection: Client, *, owns_connection: bool = True) -> None:
        self.connection = connection
        self.js = connection.jetstream(timeout=PUBLISH_TIMEOUT_SECONDS)
        self.owns_connection = owns_connection
        self.report = PublishReport()
        # One context per window size: each keeps its own reply subscription and bound.
        self._windows: dict[int, JetStreamContext] = {}

    @classmethod
    async def connect(cls, nats_url: str) -> UsagePublisher:
        connection = await connect_nats(nats_url, CLIENT_NAME)
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
        message = record if isinstance(record, UsageMessage) else UsageMessage.from_record(record)
        return await self.publish_raw(usage_subject(message.account_id), message.to_json(),
                                      msg_id=usage_message_id(message))

    async def publish_raw(self, subject: str, payload: bytes, *,
                          msg_id: str | None = None) -> PubAck:
        """Publish bytes as they are (tests use it for bad input), with the same retries."""
        delay = RETRY_DELAY_SECONDS_FIRST
        for attempt in range(1, PUBLISH_ATTEMPTS_MAX + 1):
            try:
                ack = await self.js.publish(subject, payload,
                                            headers={MSG_ID_HEADER: msg_id} if msg_id else None,
                                            stream=STREAM_NAME)
            except RETRYABLE:
                if attempt == PUBLISH_ATTEMPTS_MAX:
                    raise
                self.report.retries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_DELAY_SECONDS_MAX)
                continue
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
        js = self._windows.get(window)
        if js is None:
            js = self._windows[window] = self.connection.jetstream(
                timeout=PUBLISH_TIMEOUT_SECONDS, publish_async_max_pending=window)
        flags = iter(message_ids) if message_ids is not None else None
        pending: deque[_Pending] = deque()
        failed: list[tuple[UsageMessage, bool]] = []
        for record in records:
            message = (record if isinstance(record, UsageMessage)
                       else UsageMessage.from_record(record))
            with_id = next(flags) if flags is not None else True
            try:
                future = await js.publish_async(
                    usage_subject(message.account_id), message.to_json(),
                    wait_stall=PUBLISH_TIMEOUT_SECONDS, stream=STREAM_NAME,
                    headers={MSG_ID_HEADER: usage_message_id(message)} if with_id else None)
            except TooManyStalledMsgsError:
                # The window stayed full that long: give up on what is outstanding (published
                # again below, with the same ids), which frees the window.
                failed.append((message, with_id))
                self._give_up(pending, failed)
                continue
            except NatsError:
                failed.append((message, with_id))
                continue
            pending.append((future, message, with_id))
            if len(pending) > window:
                self._harvest(pending, failed, window)
        if pending:
            await asyncio.wait([future for future, _, _ in pending],
                               timeout=PUBLISH_TIMEOUT_SECONDS)
            self._give_up(pending, failed)
        for message, with_id in failed:
            self.report.retries += 1
            await self.publish_raw(usage_subject(message.account_id), message.to_json(),
                                   msg_id=usage_message_id(message) if with_id else None)
        return self.report

    def _harvest(self, pending: deque[_Pending], failed: list[tuple[UsageMessage, bool]],
                 window: int) -> None:
        """Count the answered publishes at the head of the window (answers come in order)."""
        while pending and pending[0][0].done():
            future, message, with_id = pending.popleft()
            if future.cancelled() or future.exception() is not None:
                failed.append((message, with_id))
            else:
                self._count(future.result())
        while len(pending) > 2 * window:
            # Answers come in order: one left behind this far was lost; publish it again.
            future, message, with_id = pending.popleft()
            future.cancel()
            failed.append((message, with_id))

    def _give_up(self, pending: deque[_Pending], failed: list[tuple[UsageMessage, bool]]
                 ) -> None:
        """Count what was answered; cancel the rest (freeing the window) as failed."""
        while pending:
            future, message, with_id = pending.popleft()
            if future.done() and not future.cancelled() and future.exception() is None:
                self._count(future.result())
            else:
                future.cancel()
                failed.append((message, with_id))

    def _count(self, ack: PubAck) -> None:
        self.report.published += 1
        if ack.duplicate:
            self.report.broker_duplicates += 1
