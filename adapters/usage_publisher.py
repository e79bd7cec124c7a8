"""The client internal services use to publish usage: typed, idempotent, retried.

Each record goes to `ledger.usage.v1.<account_id>` with header `Nats-Msg-Id` = `usage_id`, and
is retried with the same id until the stream acknowledges it: within the broker's duplicate
window the stream drops the copy itself, after it the ledger's own idempotency keys do. A caller
that gets no exception from `publish_usage` knows the record is stored durably in the stream.

`publish_many` keeps up to `window` publishes waiting for their acknowledgement at once (the
stream acknowledges in order, so throughput does not pay a round trip per record).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType

from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import PubAck
from nats.js.errors import APIError, NoStreamResponseError

from adapters.bus_connection import connect_nats
from adapters.bus_contract import UsageMessage, usage_subject
from adapters.usage_settings import STREAM_NAME
from domain.usage import UsageRecord

PUBLISH_ATTEMPTS_MAX = 8
PUBLISH_TIMEOUT_SECONDS = 5.0
RETRY_DELAY_SECONDS_FIRST = 0.1
RETRY_DELAY_SECONDS_MAX = 2.0
PUBLISH_WINDOW_DEFAULT = 2000
PUBLISH_WINDOW_MAX = 20_000

RETRYABLE = (NatsTimeoutError, asyncio.TimeoutError, NoStreamResponseError, APIError)


@dataclass
class PublishReport:
    published: int = 0
    broker_duplicates: int = 0  # dropped by the stream inside its duplicate window
    retries: int = 0


class UsagePublisher:
    def __init__(self, connection: Client, *, owns_connection: bool = True) -> None:
        self.connection = connection
        self.js = connection.jetstream(timeout=PUBLISH_TIMEOUT_SECONDS,
                                       publish_async_max_pending=PUBLISH_WINDOW_MAX)
        self.owns_connection = owns_connection
        self.report = PublishReport()

    @classmethod
    async def connect(cls, nats_url: str) -> UsagePublisher:
        connection = await connect_nats(nats_url, "ledger-usage-publisher")
        return cls(connection)

    async def close(self) -> None:
        if self.owns_connection:
            await self.connection.drain()

    async def __aenter__(self) -> UsagePublisher:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.close()

    async def publish_usage(self, record: UsageRecord | UsageMessage) -> PubAck:
        """Publish one record and wait until the stream stored it (retrying with the same id)."""
        message = record if isinstance(record, UsageMessage) else UsageMessage.from_record(record)
        return await self.publish_raw(usage_subject(message.account_id), message.to_json(),
                                      msg_id=message.usage_id)

    async def publish_raw(self, subject: str, payload: bytes, *,
                          msg_id: str | None = None) -> PubAck:
        """Publish bytes as they are (tests use it for bad input), with the same retries."""
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        delay = RETRY_DELAY_SECONDS_FIRST
        for attempt in range(1, PUBLISH_ATTEMPTS_MAX + 1):
            try:
                ack = await self.js.publish(subject, payload, headers=headers,
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
        pipelined publish fails is published again alone, with the same id.

        `message_ids`, if given, says per record whether to set `Nats-Msg-Id` (tests use it to
        act as a producer that does not, so that only the ledger can catch the duplicate).
        """
        if not 1 <= window <= PUBLISH_WINDOW_MAX:
            raise ValueError(f"window must be 1 to {PUBLISH_WINDOW_MAX}, got {window}")
        flags = iter(message_ids) if message_ids is not None else None
        pending: list[tuple[UsageMessage, bool, asyncio.Future[PubAck]]] = []
        for record in records:
            message = (record if isinstance(record, UsageMessage)
                       else UsageMessage.from_record(record))
            with_id = next(flags) if flags is not None else True
            future = await self.js.publish_async(
                usage_subject(message.account_id), message.to_json(),
                headers={"Nats-Msg-Id": message.usage_id} if with_id else None,
                stream=STREAM_NAME)
            pending.append((message, with_id, future))
            if len(pending) >= window:
                await self._settle(pending)
                pending = []
        await self._settle(pending)
        return self.report

    async def _settle(self,
                      pending: list[tuple[UsageMessage, bool, asyncio.Future[PubAck]]]) -> None:
        for message, with_id, future in pending:
            try:
                ack = await asyncio.wait_for(future, PUBLISH_TIMEOUT_SECONDS)
            except (*RETRYABLE, asyncio.CancelledError):
                self.report.retries += 1
                await self.publish_raw(usage_subject(message.account_id), message.to_json(),
                                       msg_id=message.usage_id if with_id else None)
                continue
            self._count(ack)

    def _count(self, ack: PubAck) -> None:
        self.report.published += 1
        if ack.duplicate:
            self.report.broker_duplicates += 1
