"""Rejections out through faststream: the `ledger.usage.rejected` publisher, declared once.

`declare_rejected(broker)` declares the publisher of rejected records on a faststream
`NatsBroker`. The usage consumer publishes through it (`RejectionPublisher`, used by
`adapters.nats.usage_bus.NatsUsageBus.publish_rejection`) and the AsyncAPI document of the bus
(`adapters.nats.bus_asyncapi`) is generated from the same declaration, so the document
describes the publisher the ledger really uses.

The publisher has its own connection (faststream's broker, nats-py underneath), opened with
the ledger's NATS settings (`adapters.nats.auth_settings`, the same servers, auth and TLS as
the consumer's pull connection) and reconnecting by itself. Each rejection is published to the
JetStream stream `LEDGER_USAGE_REJECTED` and awaited until the stream acknowledged it (a
`PubAck`), bounded by `REJECTED_PUBLISH_TIMEOUT_SECONDS`; anything else (too large for the
stream, no stream, no answer in time, the connection away) is `RejectionRefused`, an error of
that one message: the consumer naks its original and tries again later
(`adapters.nats.rejection_store`). faststream adds its own `content-type` and
`correlation_id` headers to what the ledger sets.
"""

from __future__ import annotations

from collections import deque

from faststream.exceptions import FastStreamException
from faststream.nats import JStream, NatsBroker
from faststream.nats.publisher.usecase import LogicPublisher
from nats.errors import Error as NatsError

from adapters.nats.auth_settings import NatsAuthSettings
from adapters.nats.connection import (
    CONNECTION_ERRORS_KEPT,
    check_inbox_allowed,
    ledger_inbox_prefix,
    nats_servers,
)
from adapters.nats.ingest_settings import REJECTED_STREAM_NAME, REJECTED_SUBJECT
from adapters.nats.usage_port import RejectionRefused
from adapters.nats.views_publisher import broker_security

REJECTED_PUBLISH_TIMEOUT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 10
CLIENT_NAME = "ledger-usage-rejections"
# Why a rejection's publish can fail; each is an error of that message, not of the session.
REJECTED_PUBLISH_FAILURES = (NatsError, FastStreamException, TimeoutError)
REJECTED_DESCRIPTION = (
    "A record that cannot be accepted: the original payload (bytes as sent, cut to 8 KiB), "
    "with headers Ledger-Rejection-Code, Ledger-Rejection-Reason, Ledger-Original-Subject, "
    "Ledger-Original-Sequence, Ledger-Original-Size, Ledger-Original-Sha256, "
    "Ledger-Payload-Truncated, Ledger-Original-Msg-Id. Stream LEDGER_USAGE_REJECTED.")


def declare_rejected(broker: NatsBroker) -> LogicPublisher:
    """The publisher of rejections on `broker` (the AsyncAPI document declares the same)."""
    return broker.publisher(REJECTED_SUBJECT, stream=JStream(REJECTED_STREAM_NAME, declare=False),
                            timeout=REJECTED_PUBLISH_TIMEOUT_SECONDS, title="rejected",
                            schema=bytes, description=REJECTED_DESCRIPTION)


class RejectionPublisher:
    """One faststream broker and its rejections publisher, for one consumer process."""

    def __init__(self, nats_url: str, auth: NatsAuthSettings | None = None) -> None:
        self._problems: deque[Exception] = deque(maxlen=CONNECTION_ERRORS_KEPT)
        self._inbox_prefix = ledger_inbox_prefix()
        self.broker = NatsBroker(servers=nats_servers(nats_url), name=CLIENT_NAME,
                                 inbox_prefix=self._inbox_prefix, error_cb=self._on_error,
                                 connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                 max_reconnect_attempts=-1,
                                 security=broker_security(auth or NatsAuthSettings.from_env()))
        self.publisher = declare_rejected(self.broker)

    async def _on_error(self, error: Exception) -> None:
        self._problems.append(error)

    async def start(self) -> RejectionPublisher:
        """Connect and check that the answers (the stream's acknowledgements) can reach us."""
        await check_inbox_allowed(await self.broker.connect(), self._inbox_prefix,
                                  self._problems)
        await self.broker.start()
        return self

    async def publish(self, headers: dict[str, str], body: bytes) -> None:
        """Store one rejection, or raise `RejectionRefused` (see the module docstring)."""
        try:
            await self.publisher.publish(body, headers=headers, stream=REJECTED_STREAM_NAME,
                                         timeout=REJECTED_PUBLISH_TIMEOUT_SECONDS)
        except REJECTED_PUBLISH_FAILURES as error:
            raise RejectionRefused(repr(error)) from None

    async def close(self) -> None:
        await self.broker.stop()
