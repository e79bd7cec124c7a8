"""The usage consumer's bus on NATS JetStream: deliveries on nats-py, rejections on faststream.

`NatsUsageBus.open` connects (through `adapters.nats.connection`, so every auth setting and the
fail-fast on bad credentials apply), creates or checks the streams and consumers, reads the
stream's creation time (the epoch of rejection keys), and gives one `NatsPullFeed` per
partition. Rejections go out through faststream like the rest of the bus the ledger speaks
(`adapters.nats.rejection_publisher`, its own connection with the same settings).

nats-py reconnects by itself (to any node of a cluster, with the servers it learns
from INFO); pull requests lost in a reconnect are asked again (see `pull_feed`), and what was
taken but not acknowledged comes again after `ack_wait`.

Setting up is retried: a JetStream API request that times out or finds no JetStream yet (a
cluster electing its leaders after a node was lost, a server still starting) is asked again by
the backoff rule for up to `SETUP_WAIT_SECONDS`, so a consumer started in the middle of a node
loss waits for the cluster instead of exiting. What retrying cannot cure (refused credentials, a
stream made for another partition count) still fails at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamInfo
from nats.js.errors import ServerError, ServiceUnavailableError

from adapters.nats.connection import close_nats, connect_nats, ledger_inbox_prefix
from adapters.nats.ingest_settings import STREAM_NAME, IngestSettings
from adapters.nats.pull_feed import NatsPullFeed
from adapters.nats.rejection_publisher import RejectionPublisher
from adapters.nats.streams import PRIORITY_GROUP, consumer_name, ensure_stream
from services.backoff import Backoff

log = logging.getLogger(__name__)

CONSUMER_CLIENT_NAME = "ledger-usage-consumer"
# How long set-up waits for JetStream to answer (leader elections after a node loss take
# seconds; a loaded cluster more) before the consumer gives up and says so.
SETUP_WAIT_SECONDS = 120.0
SETUP_BACKOFF = Backoff(first_seconds=0.5, longest_seconds=5.0)
# JetStream API answers that a later attempt can cure: no answer in time, no JetStream server
# listening yet, "temporarily unavailable" (503) or a server error during an election (500).
SETUP_TRANSIENT_ERRORS = (nats.errors.TimeoutError, nats.errors.NoRespondersError,
                          ServiceUnavailableError, ServerError, TimeoutError)


class JetStreamUnavailableError(RuntimeError):
    """JetStream did not answer set-up within SETUP_WAIT_SECONDS."""


async def set_up_streams(js: JetStreamContext, settings: IngestSettings, *,
                         create_stream: bool = True,
                         wait_seconds: float = SETUP_WAIT_SECONDS) -> StreamInfo:
    """Create or check the streams and consumers, and read the usage stream's info; transient
    JetStream failures are retried (see the module docstring)."""
    deadline = time.monotonic() + wait_seconds
    delays = SETUP_BACKOFF.delays()
    while True:
        try:
            if create_stream:
                await ensure_stream(js, settings)
            return await js.stream_info(STREAM_NAME)
        except SETUP_TRANSIENT_ERRORS as error:
            delay = next(delays)
            if time.monotonic() + delay > deadline:
                raise JetStreamUnavailableError(
                    f"JetStream did not answer setting up stream {STREAM_NAME} within "
                    f"{wait_seconds:.0f}s (last: {error!r}); check that the NATS servers run "
                    "with JetStream enabled, that a cluster has a quorum, and that this user "
                    f"may subscribe to {ledger_inbox_prefix()}.>, where the answers arrive"
                    ) from None
            log.warning("JetStream not ready (%r); setting up again in %.1fs", error, delay)
            await asyncio.sleep(delay)


class NatsUsageBus:
    def __init__(self, client: Client, js: JetStreamContext, stream_epoch: str,
                 settings: IngestSettings, rejections: RejectionPublisher) -> None:
        self.client = client
        self.js = js
        self.settings = settings
        self.rejections = rejections
        self._stream_epoch = stream_epoch

    @classmethod
    async def open(cls, nats_url: str, settings: IngestSettings, *, create_stream: bool = True,
                   setup_wait_seconds: float = SETUP_WAIT_SECONDS) -> NatsUsageBus:
        client = await connect_nats(nats_url, CONSUMER_CLIENT_NAME)
        try:
            js = client.jetstream()
            info = await set_up_streams(js, settings, create_stream=create_stream,
                                        wait_seconds=setup_wait_seconds)
            rejections = await RejectionPublisher(nats_url).start()
        except BaseException:
            await close_nats(client)
            raise
        created = info.created or datetime.fromtimestamp(0, UTC)
        return cls(client, js, created.isoformat(), settings, rejections)

    @property
    def stream_epoch(self) -> str:
        return self._stream_epoch

    async def open_feed(self, partition: int, batch_size: int) -> NatsPullFeed:
        return await NatsPullFeed(self.client, STREAM_NAME, consumer_name(partition),
                                  batch_size, group=PRIORITY_GROUP).start()

    async def publish_rejection(self, headers: dict[str, str], body: bytes) -> None:
        await self.rejections.publish(headers, body)

    def is_connected(self) -> bool:
        return self.client.is_connected

    async def close(self) -> None:
        try:
            await self.rejections.close()
        finally:
            await close_nats(self.client)
