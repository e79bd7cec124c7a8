"""The `LEDGER_USAGE` stream and its partition consumers, created or checked at start.

Partitioning. Producers publish on `ledger.usage.v1.<account_id>`. The stream rewrites that
subject as it stores the message, with NATS's deterministic subject transform:

    ledger.usage.v1.*  ->  ledger.usage.v1.{{partition(N,1)}}.{{wildcard(1)}}

so every record of one account lands on the same partition token. Each partition has one durable
pull consumer (`ledger-usage-p<k>`, filter `ledger.usage.v1.<k>.*`, explicit acks), and each
consumer process serves a fixed share of the partitions: one writer per account partition, so
writers never race on an account's version. Correctness does not depend on it: the ledger's
idempotency keys and the event store's version check make any overlap safe, only slower.

The rejected subject `ledger.usage.rejected` is inside the stream's `ledger.usage.>` on purpose:
rejected records are kept durably next to the usage they came with, and the partition consumers
never see them because they filter on `ledger.usage.v1.<k>.*` only.

The number of partitions is fixed when the stream is created (the transform is part of it).
Starting with a different number is refused with a message that says how to change it.
"""

from __future__ import annotations

import contextlib

import nats
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    StorageType,
    StreamConfig,
    SubjectTransform,
)
from nats.js.errors import NotFoundError

from adapters.bus_connection import check_server_version
from adapters.usage_settings import (
    CONSUMER_NAME_PREFIX,
    MESSAGE_BYTES_MAX,
    REJECTED_SUBJECT,
    STREAM_NAME,
    STREAM_SUBJECTS,
    USAGE_SUBJECT_PREFIX,
    IngestSettings,
)

# A batch the consumer cannot commit is offered again after this delay (the database may be
# restarting); the message is never given up on, because it may be a valid charge.
NAK_DELAY_SECONDS = 2.0


def partition_transform(partitions: int) -> SubjectTransform:
    return SubjectTransform(
        src=f"{USAGE_SUBJECT_PREFIX}.*",
        dest=f"{USAGE_SUBJECT_PREFIX}.{{{{partition({partitions},1)}}}}.{{{{wildcard(1)}}}}",
    )


def partition_filter(partition: int) -> str:
    return f"{USAGE_SUBJECT_PREFIX}.{partition}.*"


def consumer_name(partition: int) -> str:
    return f"{CONSUMER_NAME_PREFIX}{partition}"


def stream_config(settings: IngestSettings) -> StreamConfig:
    return StreamConfig(
        name=STREAM_NAME,
        subjects=[STREAM_SUBJECTS],
        storage=StorageType.FILE,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window_seconds,
        max_msg_size=MESSAGE_BYTES_MAX,
        subject_transform=partition_transform(settings.partitions),
    )


async def ensure_stream(js: JetStreamContext, settings: IngestSettings) -> None:
    """Create the stream and one durable consumer per partition, or check they match."""
    wanted = stream_config(settings)
    try:
        info = await js.stream_info(STREAM_NAME)
    except NotFoundError:
        await js.add_stream(wanted)
    else:
        existing = info.config.subject_transform
        if existing is None or existing.dest != wanted.subject_transform.dest:  # type: ignore[union-attr]
            raise RuntimeError(
                f"stream {STREAM_NAME} exists with transform "
                f"{existing.dest if existing else None!r}, not {settings.partitions} partitions; "
                f"set LEDGER_USAGE_PARTITIONS to match it, or drain and delete the stream to "
                "change the partition count")
        if info.config.duplicate_window != wanted.duplicate_window:
            await js.update_stream(wanted)
    for partition in range(settings.partitions):
        await js.add_consumer(STREAM_NAME, consumer_config(partition, settings))


def consumer_config(partition: int, settings: IngestSettings) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=consumer_name(partition),
        filter_subject=partition_filter(partition),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=settings.ack_wait_seconds,
        max_deliver=-1,
        max_ack_pending=settings.max_ack_pending,
    )


async def delete_stream(js: JetStreamContext) -> None:
    """Remove the stream and its consumers (tests and benchmarks start from nothing)."""
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(STREAM_NAME)


__all__ = ["NAK_DELAY_SECONDS", "REJECTED_SUBJECT", "consumer_name", "delete_stream",
           "ensure_stream", "partition_filter"]


async def recreate_stream(nats_url: str, settings: IngestSettings) -> None:
    """Delete and create the usage stream, so a test or benchmark sees only its own messages."""
    connection = await nats.connect(nats_url)
    await check_server_version(connection)
    try:
        js = connection.jetstream()
        await delete_stream(js)
        await ensure_stream(js, settings)
    finally:
        await connection.close()
