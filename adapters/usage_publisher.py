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
import json
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType

from nats.aio.client import Client
from nats.aio.msg import Msg
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
        pipelined publish fails (or is not acknowledged in time) is published again alone,
        with the same id.

        `message_ids`, if given, says per record whether to set `Nats-Msg-Id` (tests use it to
        act as a producer that does not, so that only the ledger can catch the duplicate).

        The acknowledgements come to one inbox subscription, not to a future per message:
        profiled, nats-py's `publish_async` spent most of its time on a timed semaphore wait
        per message.
        """
        if not 1 <= window <= PUBLISH_WINDOW_MAX:
            raise ValueError(f"window must be 1 to {PUBLISH_WINDOW_MAX}, got {window}")
        flags = iter(message_ids) if message_ids is not None else None
        prefix = self.connection.new_inbox()
        outstanding: dict[str, tuple[UsageMessage, bool]] = {}
        failed: list[tuple[UsageMessage, bool]] = []
        progress = asyncio.Event()

        async def on_ack(msg: Msg) -> None:
            item = outstanding.pop(msg.subject[len(prefix) + 1:], None)
            if item is None:
                return
            if not msg.data or b'"error"' in msg.data:
                failed.append(item)  # no stream answered, or the stream refused it
            else:
                self.report.published += 1
                # Only a duplicate's acknowledgement names the field: parse just those.
                if b'"duplicate"' in msg.data and json.loads(msg.data).get("duplicate"):
                    self.report.broker_duplicates += 1
            progress.set()

        async def wait_below(limit: int) -> None:
            while len(outstanding) > limit:
                progress.clear()
                try:
                    await asyncio.wait_for(progress.wait(), PUBLISH_TIMEOUT_SECONDS)
                except TimeoutError:
                    # No acknowledgement for a while: publish the rest again one by one.
                    failed.extend(outstanding.values())
                    outstanding.clear()

        subscription = await self.connection.subscribe(f"{prefix}.*", cb=on_ack)
        try:
            for index, record in enumerate(records):
                message = (record if isinstance(record, UsageMessage)
                           else UsageMessage.from_record(record))
                with_id = next(flags) if flags is not None else True
                headers = {"Nats-Expected-Stream": STREAM_NAME}
                if with_id:
                    headers["Nats-Msg-Id"] = message.usage_id
                await wait_below(window - 1)
                token = str(index)
                outstanding[token] = (message, with_id)
                await self.connection.publish(usage_subject(message.account_id),
                                              message.to_json(), reply=f"{prefix}.{token}",
                                              headers=headers)
            await wait_below(0)
        finally:
            await subscription.unsubscribe()
        for message, with_id in failed:
            self.report.retries += 1
            await self.publish_raw(usage_subject(message.account_id), message.to_json(),
                                   msg_id=message.usage_id if with_id else None)
        return self.report

    def _count(self, ack: PubAck) -> None:
        self.report.published += 1
        if ack.duplicate:
            self.report.broker_duplicates += 1
