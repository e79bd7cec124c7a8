"""The usage consumer's port onto a message bus: deliveries in, ack / nak / term out.

The consumer logic (`adapters.nats.usage_consumer`) and the writer thread
(`adapters.nats.usage_writer`) see only `Delivery` values and the two protocols below, never a
bus client's own message type: the NATS side is `adapters.nats.usage_bus` (nats-py), and a
benchmark runs the same logic on a faststream subscriber through the same port
(`bench/ingest_clients.py`). Another broker (RabbitMQ, Kafka) is one more implementation of
`UsageBus`, with its own stream sequence (a queue offset, say) for the rejection keys.

Settling is per delivery and only after the batch's commit returned; a bus that loses its
connection may fail to settle (`BusSessionLost`): the broker then delivers those messages again
after its ack wait, and the ledger answers "duplicate".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol


class BusSessionLost(ConnectionError):
    """The bus connection went away while taking or settling deliveries; what was not settled
    comes again from the broker."""


class RejectionRefused(Exception):
    """The bus refused to store a rejection (too large, no stream, a timeout): the original is
    nak'ed and offered again later."""


class Delivery:
    """One message as the ledger sees it. `handle` is the bus client's own message, opaque here:
    only the bus that made the delivery reads it, to settle it.

    A plain class with slots, not a frozen dataclass: one is made per message on the hot path,
    and a frozen dataclass's `__init__` (one `object.__setattr__` per field) measured 1.7 us
    against 0.2 us here (issue 10). Treat it as read-only all the same."""

    __slots__ = ("data", "handle", "headers", "stream_sequence", "subject")

    def __init__(self, subject: str, data: bytes, headers: Mapping[str, str] | None,
                 stream_sequence: int, handle: object) -> None:
        self.subject = subject
        self.data = data
        self.headers = headers
        self.stream_sequence = stream_sequence
        self.handle = handle

    def __repr__(self) -> str:
        return f"Delivery({self.subject!r}, stream_sequence={self.stream_sequence})"

    @property
    def msg_id(self) -> str | None:
        """The producer's idempotency id (`Nats-Msg-Id` on NATS), if it sent one."""
        return self.headers.get("Nats-Msg-Id") if self.headers else None


class DeliveryFeed(Protocol):
    """One partition's deliveries, in batches, and their settlement."""

    async def take(self, wait_seconds: float, idle_seconds: float) -> list[Delivery]:
        """Up to the feed's batch size: returns once a batch is full, or `wait_seconds` after
        the first delivery, or empty after `idle_seconds` with nothing."""
        ...

    async def settle(self, ack: Sequence[Delivery], term: Sequence[Delivery],
                     nak: Sequence[tuple[Delivery, float]]) -> None:
        """Acknowledge, terminate (never again) and nak (again after the delay in seconds)."""
        ...

    async def close(self) -> None:
        """Stop taking; deliveries read ahead and not taken go back to the broker."""
        ...


class UsageBus(Protocol):
    """A connected bus: partition feeds, the rejections' stream, and its own health."""

    @property
    def stream_epoch(self) -> str:
        """Names this incarnation of the usage stream (a recreated stream restarts its
        sequences): rejection keys are `<epoch>:<stream sequence>`."""
        ...

    async def open_feed(self, partition: int, batch_size: int) -> DeliveryFeed: ...

    async def publish_rejection(self, headers: dict[str, str], body: bytes) -> None:
        """Store one rejection durably, or raise `RejectionRefused`."""
        ...

    def is_connected(self) -> bool: ...

    async def close(self) -> None: ...
