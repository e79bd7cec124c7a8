"""The usage stream's purger against a real NATS server: it removes exactly what the ledger has
settled, a partition at a time, never a message that is delivered and unsettled or nak'ed for
later, never another partition's; a full stream takes records again once the ledger settled
and purged; a work-queue stream made by an earlier ledger is used as it is, without a purger.
"""

from __future__ import annotations

import asyncio
import dataclasses
from uuid import uuid4

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy
from nats.js.errors import NotFoundError, ServiceUnavailableError

from adapters.nats.acked_purger import AckedPurger
from adapters.nats.ingest_settings import STREAM_NAME, USAGE_MAX_BYTES_MIN, IngestSettings
from adapters.nats.pull_feed import NatsPullFeed
from adapters.nats.streams import (
    PRIORITY_GROUP,
    consumer_name,
    delete_stream,
    ensure_stream,
    recreate_stream,
    stream_config,
)
from adapters.nats.usage_bus import NatsUsageBus
from adapters.nats.usage_contract import usage_subject
from adapters.nats.usage_port import Delivery

MESSAGES_PER_PARTITION = 12
# The server applies acks to the consumer asynchronously: tests look until they are in.
ACK_POLLS = 100
ACK_POLL_SECONDS = 0.05
NAK_DELAY_SECONDS = 0.3
TAKE_WAIT_SECONDS = 0.5
TAKE_IDLE_SECONDS = 5.0
PAYLOAD_BYTES = 1000


async def publish_spread(js: JetStreamContext, count: int) -> None:
    for number in range(count):
        await js.publish(usage_subject(uuid4()), b"%d" % number)


async def wait_ack_floor(js: JetStreamContext, partition: int, stream_sequence: int) -> None:
    for _ in range(ACK_POLLS):
        info = await js.consumer_info(STREAM_NAME, consumer_name(partition))
        if info.ack_floor.stream_seq >= stream_sequence:
            return
        await asyncio.sleep(ACK_POLL_SECONDS)
    raise AssertionError(f"partition {partition}'s ack floor never reached {stream_sequence}")


async def stored(js: JetStreamContext, sequence: int) -> bool:
    try:
        await js.get_msg(STREAM_NAME, sequence)
    except NotFoundError:
        return False
    return True


async def take_all(feed: NatsPullFeed) -> list[Delivery]:
    return await feed.take(TAKE_WAIT_SECONDS, TAKE_IDLE_SECONDS)


async def test_the_purger_removes_only_what_was_settled_on_its_own_partition(
        nats_server_url: str) -> None:
    settings = IngestSettings(partitions=2)
    await recreate_stream(nats_server_url, settings)
    connection = await nats.connect(nats_server_url)
    feeds: list[NatsPullFeed] = []
    try:
        js = connection.jetstream()
        await publish_spread(js, 2 * MESSAGES_PER_PARTITION * 2)
        feeds = [await NatsPullFeed(connection, STREAM_NAME, consumer_name(p), batch_size=1000,
                                    group=PRIORITY_GROUP).start() for p in range(2)]
        purger = AckedPurger(js)
        for partition, feed in enumerate(feeds):
            purger.watch(partition, lambda feed=feed: feed.settled_through)
        first = await take_all(feeds[0])
        second = await take_all(feeds[1])
        total = len(first) + len(second)
        assert len(first) >= 4 and len(second) >= 1, "both partitions have records"

        # Partition 0: the first two acked, the third nak'ed for later, the rest acked or
        # terminated (a stored rejection); partition 1: delivered, nothing settled yet.
        await feeds[0].settle([*first[:2], *first[3:-1]], [first[-1]],
                              [(first[2], NAK_DELAY_SECONDS)])
        await connection.flush()
        await wait_ack_floor(js, 0, first[1].stream_sequence)
        await purger.purge_settled()

        # Below the nak'ed one: gone. The nak'ed one and everything after it on its
        # partition: kept (the ack floor stops at it). Partition 1: all kept.
        assert not await stored(js, first[0].stream_sequence)
        assert not await stored(js, first[1].stream_sequence)
        for delivery in [*first[2:], *second]:
            assert await stored(js, delivery.stream_sequence), delivery
        assert (await js.stream_info(STREAM_NAME)).state.messages == total - 2

        # The nak'ed one comes again; settled, the whole partition goes.
        again = await take_all(feeds[0])
        assert [d.stream_sequence for d in again] == [first[2].stream_sequence]
        await feeds[0].settle(again, [], [])
        await connection.flush()
        await wait_ack_floor(js, 0, first[-1].stream_sequence)
        await purger.purge_settled()
        assert (await js.stream_info(STREAM_NAME)).state.messages == len(second)
        for delivery in second:
            assert await stored(js, delivery.stream_sequence), delivery

        await feeds[1].settle(second, [], [])
        await connection.flush()
        await wait_ack_floor(js, 1, second[-1].stream_sequence)
        await purger.purge_settled()
        assert (await js.stream_info(STREAM_NAME)).state.messages == 0
        assert purger.stats.failures == 0
    finally:
        for feed in feeds:
            await feed.close()
        await connection.close()


async def test_a_full_stream_takes_records_again_once_the_ledger_settled_them(
        nats_server_url: str) -> None:
    settings = IngestSettings(partitions=1, usage_max_bytes=USAGE_MAX_BYTES_MIN)
    await recreate_stream(nats_server_url, settings)
    connection = await nats.connect(nats_server_url)
    try:
        js = connection.jetstream()
        payload = b"x" * PAYLOAD_BYTES
        stored_count = 0
        with pytest.raises(ServiceUnavailableError, match="maximum bytes exceeded"):
            for _ in range(2 * USAGE_MAX_BYTES_MIN // PAYLOAD_BYTES):
                await js.publish(usage_subject(uuid4()), payload)
                stored_count += 1
        # Consumed through the bus as the ledger consumes it: the bus's purger frees the room.
        bus = await NatsUsageBus.open(nats_server_url, settings, create_stream=False)
        try:
            assert bus.purger is not None
            feed = await bus.open_feed(0, batch_size=stored_count)
            taken: list[Delivery] = []
            while len(taken) < stored_count:
                taken += await take_all(feed)
            await feed.settle(taken, [], [])
            for _ in range(ACK_POLLS):
                if (await js.stream_info(STREAM_NAME)).state.messages == 0:
                    break
                await asyncio.sleep(ACK_POLL_SECONDS * 4)
            assert (await js.stream_info(STREAM_NAME)).state.messages == 0
            await js.publish(usage_subject(uuid4()), payload)  # room again
            await feed.close()
        finally:
            await bus.close()
    finally:
        await connection.close()


async def test_a_work_queue_stream_of_an_earlier_ledger_is_kept_and_not_purged(
        nats_server_url: str) -> None:
    settings = IngestSettings(partitions=2)
    connection = await nats.connect(nats_server_url)
    try:
        js = connection.jetstream()
        await delete_stream(js)
        earlier = dataclasses.replace(stream_config(settings),
                                      retention=RetentionPolicy.WORK_QUEUE)
        await js.add_stream(earlier)
        # A limit changed at start is applied without touching the retention.
        await ensure_stream(js, dataclasses.replace(settings, duplicate_window_seconds=60.0))
        info = await js.stream_info(STREAM_NAME)
        assert info.config.retention == RetentionPolicy.WORK_QUEUE
        assert info.config.duplicate_window == 60.0
        bus = await NatsUsageBus.open(nats_server_url, settings, create_stream=False)
        try:
            assert bus.purger is None
        finally:
            await bus.close()
    finally:
        await recreate_stream(nats_server_url, settings)  # as the other tests expect it
        await connection.close()
