"""The usage consumer's bus on NATS JetStream: one nats-py connection for everything.

`NatsUsageBus.open` connects (through `adapters.nats.connection`, so every auth setting and the
fail-fast on bad credentials apply), creates or checks the streams and consumers, reads the
stream's creation time (the epoch of rejection keys), and gives one `NatsPullFeed` per
partition. nats-py reconnects by itself (to any node of a cluster, with the servers it learns
from INFO); pull requests lost in a reconnect are asked again (see `pull_feed`), and what was
taken but not acknowledged comes again after `ack_wait`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from adapters.nats.connection import close_nats, connect_nats
from adapters.nats.ingest_settings import (
    REJECTED_STREAM_NAME,
    REJECTED_SUBJECT,
    STREAM_NAME,
    IngestSettings,
)
from adapters.nats.pull_feed import NatsPullFeed
from adapters.nats.streams import PRIORITY_GROUP, consumer_name, ensure_stream
from adapters.nats.usage_port import RejectionRefused

REJECTED_PUBLISH_TIMEOUT_SECONDS = 5.0
# Why a rejection's publish can fail; each is an error of that message, not of the session.
REJECTED_PUBLISH_FAILURES = (nats.errors.Error, TimeoutError)
CONSUMER_CLIENT_NAME = "ledger-usage-consumer"


class NatsUsageBus:
    def __init__(self, client: Client, js: JetStreamContext, stream_epoch: str,
                 settings: IngestSettings) -> None:
        self.client = client
        self.js = js
        self.settings = settings
        self._stream_epoch = stream_epoch

    @classmethod
    async def open(cls, nats_url: str, settings: IngestSettings, *,
                   create_stream: bool = True) -> NatsUsageBus:
        client = await connect_nats(nats_url, CONSUMER_CLIENT_NAME)
        try:
            js = client.jetstream()
            if create_stream:
                await ensure_stream(js, settings)
            info = await js.stream_info(STREAM_NAME)
        except BaseException:
            await close_nats(client)
            raise
        created = info.created or datetime.fromtimestamp(0, UTC)
        return cls(client, js, created.isoformat(), settings)

    @property
    def stream_epoch(self) -> str:
        return self._stream_epoch

    async def open_feed(self, partition: int, batch_size: int) -> NatsPullFeed:
        return await NatsPullFeed(self.client, STREAM_NAME, consumer_name(partition),
                                  batch_size, group=PRIORITY_GROUP).start()

    async def publish_rejection(self, headers: dict[str, str], body: bytes) -> None:
        try:
            await self.js.publish(REJECTED_SUBJECT, body, headers=headers,
                                  stream=REJECTED_STREAM_NAME,
                                  timeout=REJECTED_PUBLISH_TIMEOUT_SECONDS)
        except REJECTED_PUBLISH_FAILURES as error:
            raise RejectionRefused(repr(error)) from None

    def is_connected(self) -> bool:
        return self.client.is_connected

    async def close(self) -> None:
        await close_nats(self.client)
