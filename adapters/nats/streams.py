"""The `LEDGER_USAGE` stream and its partition consumers, created or checked at start.

Partitioning. Producers publish on `ledger.usage.v1.<account_id>`. The stream rewrites that
subject as it stores the message, with NATS's deterministic subject transform:

    ledger.usage.v1.*  ->  ledger.usage.v1.{{partition(N,1)}}.{{wildcard(1)}}

so every record of one account lands on the same partition token. Each partition has one durable
pull consumer (`ledger-usage-p<k>`, filter `ledger.usage.v1.<k>.*`, explicit acks), and each
consumer process serves a fixed share of the partitions: one writer per account partition, so
writers never race on an account's version. Correctness does not depend on it: the ledger's
idempotency keys and the event store's version check make any overlap safe, only slower.

The stream is a work queue over `ledger.usage.v1.*` only: a record leaves it once acknowledged
(or terminated after its rejection was stored), so its byte limit bounds the backlog, and when
the backlog is full the stream refuses new records (`discard=new`): the producer gets an error
and keeps the record, instead of the broker dropping old unconsumed ones in silence.

Rejections have a stream of their own, `LEDGER_USAGE_REJECTED` over `ledger.usage.rejected`,
with its own limits: a bigger message size (a rejection carries the original body and its
reason), an age and a byte limit, oldest dropped first (they are a report; the ledger's
PostgreSQL keeps every rejection's reason and count for good).

The number of partitions is fixed when the stream is created (the transform is part of it).
Starting with a different number is refused with a message that says how to change it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    SubjectTransform,
)
from nats.js.errors import NotFoundError

from adapters.nats.connection import connect_nats
from adapters.nats.ingest_settings import (
    CONSUMER_NAME_PREFIX,
    MESSAGE_BYTES_MAX,
    REJECTED_MESSAGE_BYTES_MAX,
    REJECTED_STREAM_NAME,
    REJECTED_SUBJECT,
    STREAM_NAME,
    STREAM_USAGE_SUBJECTS,
    USAGE_SUBJECT_PREFIX,
    IngestSettings,
)
from adapters.nats.usage_contract import OCCURRED_AT_PAST_HORIZON

# Records older than the contract's past horizon would be rejected anyway, so the usage
# stream's age limit can never drop a record the ledger would charge.
USAGE_MAX_AGE_SECONDS = OCCURRED_AT_PAST_HORIZON.total_seconds()
# A batch the consumer cannot commit is offered again after this delay (the database may be
# restarting); the message is never given up on, because it may be a valid charge.
NAK_DELAY_SECONDS = 2.0
# `recreate_stream` with a wait tries again this often.
RECREATE_RETRY_SECONDS = 1.0


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
        subjects=[STREAM_USAGE_SUBJECTS],
        retention=RetentionPolicy.WORK_QUEUE,
        discard=DiscardPolicy.NEW,
        max_bytes=settings.usage_max_bytes,
        max_age=USAGE_MAX_AGE_SECONDS,
        storage=StorageType.FILE,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window_seconds,
        max_msg_size=MESSAGE_BYTES_MAX,
        subject_transform=partition_transform(settings.partitions),
    )


def rejected_stream_config(settings: IngestSettings) -> StreamConfig:
    return StreamConfig(
        name=REJECTED_STREAM_NAME,
        subjects=[REJECTED_SUBJECT],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_bytes=settings.rejected_max_bytes,
        max_age=settings.rejected_max_age_seconds,
        storage=StorageType.FILE,
        num_replicas=settings.replicas,
        # Rejections carry a message id derived from the original's stream sequence: a repeat
        # inside this window is dropped here, after it PostgreSQL's record of what was
        # published keeps it from being published again (usage_consumer).
        duplicate_window=settings.duplicate_window_seconds,
        max_msg_size=REJECTED_MESSAGE_BYTES_MAX,
    )


# What ensure_stream brings an existing stream to; anything else about it is checked.
_UPDATABLE = ("duplicate_window", "max_bytes", "max_age", "max_msg_size", "discard")


async def _ensure(js: JetStreamContext, wanted: StreamConfig) -> StreamConfig | None:
    """Create the stream, or update its limits; returns the config it had (None: new)."""
    assert wanted.name is not None
    try:
        info = await js.stream_info(wanted.name)
    except NotFoundError:
        await js.add_stream(wanted)
        return None
    if any(getattr(info.config, name) != getattr(wanted, name) for name in _UPDATABLE):
        await js.update_stream(wanted)
    return info.config


async def ensure_stream(js: JetStreamContext, settings: IngestSettings) -> None:
    """Create the streams and one durable consumer per partition, or check they match."""
    wanted = stream_config(settings)
    try:
        info = await js.stream_info(STREAM_NAME)
    except NotFoundError:
        pass
    else:
        _check_usage_stream(info.config, wanted, settings)
    await _ensure(js, wanted)
    await _ensure(js, rejected_stream_config(settings))
    for partition in range(settings.partitions):
        await js.add_consumer(STREAM_NAME, consumer_config(partition, settings))


def _check_usage_stream(existing: StreamConfig, wanted: StreamConfig,
                        settings: IngestSettings) -> None:
    """What cannot be changed on a live stream: say how to get there instead."""
    transform = existing.subject_transform
    if transform is None or transform.dest != wanted.subject_transform.dest:  # type: ignore[union-attr]
        raise RuntimeError(
            f"stream {STREAM_NAME} exists with transform "
            f"{transform.dest if transform else None!r}, not {settings.partitions} partitions; "
            f"set LEDGER_USAGE_PARTITIONS to match it, or drain and delete the stream to "
            "change the partition count")
    if existing.retention != wanted.retention or existing.subjects != wanted.subjects:
        raise RuntimeError(
            f"stream {STREAM_NAME} was created by an older ledger (subjects "
            f"{existing.subjects}, retention {existing.retention}); this one needs a work "
            f"queue over {wanted.subjects} with rejections in their own stream "
            f"{REJECTED_STREAM_NAME}. Stop the producers, let `ledger consume` drain it, then "
            f"delete it (`nats stream rm {STREAM_NAME}`) and start again: it is created anew")


# Every consumer process asks for every partition it may serve in this priority group; the
# server serves one pinned client per partition at a time (ADR-42, NATS 2.11+).
PRIORITY_GROUP = "ledger"
PRIORITY_POLICY_PINNED = "pinned_client"


@dataclass
class PinnedConsumerConfig(ConsumerConfig):
    """nats-py 2.16's ConsumerConfig with the priority-group fields it does not name yet; they
    are plain JetStream API fields (`priority_timeout` in nanoseconds on the wire)."""

    priority_groups: list[str] | None = None
    priority_policy: str | None = None
    priority_timeout: float | None = None  # seconds

    def as_dict(self) -> dict[str, object]:
        result = super().as_dict()
        if self.priority_timeout is not None:
            result["priority_timeout"] = self._to_nanoseconds(self.priority_timeout)
        return result


def consumer_config(partition: int, settings: IngestSettings) -> PinnedConsumerConfig:
    return PinnedConsumerConfig(
        durable_name=consumer_name(partition),
        filter_subject=partition_filter(partition),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=settings.ack_wait_seconds,
        max_deliver=-1,
        max_ack_pending=settings.max_ack_pending,
        priority_groups=[PRIORITY_GROUP],
        priority_policy=PRIORITY_POLICY_PINNED,
        priority_timeout=settings.pin_ttl_seconds,
    )


async def delete_stream(js: JetStreamContext) -> None:
    """Remove the streams and their consumers (tests and benchmarks start from nothing)."""
    for name in (STREAM_NAME, REJECTED_STREAM_NAME):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(name)


__all__ = ["NAK_DELAY_SECONDS", "REJECTED_STREAM_NAME", "REJECTED_SUBJECT", "consumer_name",
           "delete_stream", "ensure_stream", "partition_filter"]


async def recreate_stream(nats_url: str, settings: IngestSettings, *,
                          wait_seconds: float = 0.0) -> None:
    """Delete and create the usage stream, so a test or benchmark sees only its own messages.
    With `wait_seconds`, failures are tried again every `RECREATE_RETRY_SECONDS` for that long
    (a new cluster elects its JetStream meta leader first)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            connection = await connect_nats(nats_url, "ledger-streams")
            try:
                js = connection.jetstream()
                await delete_stream(js)
                await ensure_stream(js, settings)
                return
            finally:
                await connection.close()
        except Exception:
            if time.monotonic() + RECREATE_RETRY_SECONDS > deadline:
                raise
            await asyncio.sleep(RECREATE_RETRY_SECONDS)
