"""The client internal services use to publish usage: typed, idempotent, retried.

Each record goes to `ledger.usage.v1.<account_id>` with header `Nats-Msg-Id` =
`bus_contract.usage_message_id(record)` (the usage_id and a digest of the content), and is
retried with the same id until the stream acknowledges it: within the broker's duplicate
window the stream drops an exact copy itself, after it the ledger's own idempotency keys do.
A copy with the same usage_id and other content has another id: the broker never drops it, so
it always reaches the ledger and is rejected there as a conflict (and reported). A caller
that gets no exception from `publish_usage` knows the record is stored durably in the stream.

`publish_many` keeps up to `window` publishes waiting for their acknowledgement at once (the
stream acknowledges in order, so throughput does not pay a round trip per record). It publishes
over the wire client (`adapters.nats.wire_client`): HPUB frames with `Nats-Msg-Id` and
`Nats-Expected-Stream`, `PUBLISH_CHUNK_MAX` of them per socket write, acknowledgements on one
wildcard inbox, read with two substring checks instead of a JSON parse each. Profiled, nats-py
spent ~90 us of CPU per record here (a message object, a header dict and a callback task per
acknowledgement); that was a third of the machine's whole budget per record at 10,000/s.
Anything refused, not acknowledged in time, or in flight on a lost connection is published
again with the same id through `publish_raw` (nats-py, one at a time, with retries): the
broker's duplicate window and the ledger's idempotency keys make a second copy harmless.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType

from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import PubAck
from nats.js.errors import APIError, NoStreamResponseError

from adapters.nats.connection import close_nats, connect_nats
from adapters.nats.ingest_settings import STREAM_NAME
from adapters.nats.usage_contract import UsageMessage, usage_message_id, usage_subject
from adapters.nats.wire_client import WireConnection, WireConnectionLost
from adapters.nats.wire_frames import CRLF, WireMsg, header_block, hpub_frame
from domain.usage import UsageRecord

PUBLISH_ATTEMPTS_MAX = 8
PUBLISH_TIMEOUT_SECONDS = 5.0
RETRY_DELAY_SECONDS_FIRST = 0.1
RETRY_DELAY_SECONDS_MAX = 2.0
PUBLISH_WINDOW_DEFAULT = 2000
PUBLISH_WINDOW_MAX = 20_000
# Frames per socket write in publish_many; between writes the event loop reads acknowledgements.
PUBLISH_CHUNK_MAX = 256
WIRE_CLIENT_NAME = "ledger-usage-publisher"
# Every pipelined publish names the stream; only Nats-Msg-Id differs per record.
_HEADERS_START = b"NATS/1.0\r\nNats-Expected-Stream: " + STREAM_NAME.encode() + CRLF
_HEADERS_WITHOUT_ID = _HEADERS_START + CRLF

RETRYABLE = (NatsTimeoutError, asyncio.TimeoutError, NoStreamResponseError, APIError)


@dataclass
class PublishReport:
    published: int = 0
    broker_duplicates: int = 0  # dropped by the stream inside its duplicate window
    retries: int = 0


class UsagePublisher:
    def __init__(self, connection: Client, *, owns_connection: bool = True,
                 nats_url: str | None = None) -> None:
        """`nats_url` is where `publish_many` opens its wire connection (default: the server
        `connection` is connected to)."""
        self.connection = connection
        self.js = connection.jetstream(timeout=PUBLISH_TIMEOUT_SECONDS,
                                       publish_async_max_pending=PUBLISH_WINDOW_MAX)
        self.owns_connection = owns_connection
        self.nats_url = nats_url
        self.report = PublishReport()
        self._wire: WireConnection | None = None

    @classmethod
    async def connect(cls, nats_url: str) -> UsagePublisher:
        connection = await connect_nats(nats_url, WIRE_CLIENT_NAME)
        return cls(connection, nats_url=nats_url)

    async def close(self) -> None:
        if self._wire is not None:
            await self._wire.close()
            self._wire = None
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
        """
        if not 1 <= window <= PUBLISH_WINDOW_MAX:
            raise ValueError(f"window must be 1 to {PUBLISH_WINDOW_MAX}, got {window}")
        flags = iter(message_ids) if message_ids is not None else None
        pipeline = _AckPipeline(self.report, window)
        pending = iter(records)
        attempt = 0
        while True:
            try:
                wire = await self._wire_connection()
            except WireConnectionLost:
                attempt += 1
                if attempt >= PUBLISH_ATTEMPTS_MAX:
                    raise
                await asyncio.sleep(min(RETRY_DELAY_SECONDS_FIRST * 2 ** attempt,
                                        RETRY_DELAY_SECONDS_MAX))
                continue
            try:
                await pipeline.run(wire, pending, flags)
                break
            except WireConnectionLost:
                # In flight on the lost connection: published again below, with the same ids.
                pipeline.give_up_outstanding()
        for message, with_id in pipeline.failed:
            self.report.retries += 1
            await self.publish_raw(usage_subject(message.account_id), message.to_json(),
                                   msg_id=usage_message_id(message) if with_id else None)
        return self.report

    async def _wire_connection(self) -> WireConnection:
        if self._wire is None or self._wire.is_closed:
            url = self.nats_url or self.connection.connected_url.geturl()  # type: ignore[union-attr]
            self._wire = await WireConnection.connect(url, WIRE_CLIENT_NAME)
        return self._wire

    def _count(self, ack: PubAck) -> None:
        self.report.published += 1
        if ack.duplicate:
            self.report.broker_duplicates += 1


def _headers_for(message: UsageMessage, with_id: bool) -> bytes:
    if not with_id:
        return _HEADERS_WITHOUT_ID
    msg_id = usage_message_id(message)
    if msg_id.isprintable():
        return _HEADERS_START + b"Nats-Msg-Id: " + msg_id.encode() + CRLF + CRLF
    # Rare: let the checked builder refuse a line break inside a header value.
    return header_block({"Nats-Expected-Stream": STREAM_NAME, "Nats-Msg-Id": msg_id})


class _AckPipeline:
    """The pipelined publishes of one `publish_many` call: what is waiting for its
    acknowledgement, what failed, and the bounded window between them."""

    def __init__(self, report: PublishReport, window: int) -> None:
        self.report = report
        self.window = window
        self.chunk = max(1, min(PUBLISH_CHUNK_MAX, window // 4))
        self.outstanding: dict[str, tuple[UsageMessage, bool]] = {}
        self.failed: list[tuple[UsageMessage, bool]] = []
        self.progress = asyncio.Event()
        self.count = 0

    def give_up_outstanding(self) -> None:
        self.failed.extend(self.outstanding.values())
        self.outstanding.clear()

    def on_ack(self, msg: WireMsg) -> None:
        item = self.outstanding.pop(msg.subject, None)
        if item is None:
            return  # answered after we gave up on it: it is being published again anyway
        data = msg.data
        # An empty body is a status (503: no stream took it); an error names "error".
        if not data or b'"error"' in data:
            self.failed.append(item)
        else:
            self.report.published += 1
            # Only a duplicate's acknowledgement names the field: parse just those.
            if b'"duplicate"' in data and json.loads(data).get("duplicate"):
                self.report.broker_duplicates += 1
        self.progress.set()

    async def wait_below(self, wire: WireConnection, limit: int) -> None:
        while len(self.outstanding) > limit:
            if wire.is_closed:
                raise WireConnectionLost(f"lost the connection with {len(self.outstanding)} "
                                         "publishes unacknowledged")
            self.progress.clear()
            try:
                await asyncio.wait_for(self.progress.wait(), PUBLISH_TIMEOUT_SECONDS)
            except TimeoutError:
                # No acknowledgement for a while: publish the rest again one by one.
                self.give_up_outstanding()

    async def run(self, wire: WireConnection, records: Iterable[UsageRecord | UsageMessage],
                  flags: Iterable[bool] | None) -> None:
        inbox = wire.new_inbox()
        sid = wire.subscribe(f"{inbox}.*", self.on_ack)
        wire.on_close(self.progress.set)
        frames: list[bytes] = []
        flag_of = iter(flags) if flags is not None else None
        try:
            for record in records:
                message = (record if isinstance(record, UsageMessage)
                           else UsageMessage.from_record(record))
                with_id = next(flag_of) if flag_of is not None else True
                self.count += 1
                reply = f"{inbox}.{self.count}"
                self.outstanding[reply] = (message, with_id)
                frames.append(hpub_frame(usage_subject(message.account_id).encode(),
                                         reply.encode(), _headers_for(message, with_id),
                                         message.to_json()))
                if len(frames) >= self.chunk:
                    await self._send(wire, frames)
                    await self.wait_below(wire, self.window - self.chunk)
            if frames:
                await self._send(wire, frames)
            await self.wait_below(wire, 0)
        finally:
            if not wire.is_closed:
                wire.unsubscribe(sid)

    @staticmethod
    async def _send(wire: WireConnection, frames: list[bytes]) -> None:
        wire.write(b"".join(frames))
        frames.clear()
        await wire.drain()
        # Let the event loop read acknowledgements between chunks, window full or not.
        await asyncio.sleep(0)
