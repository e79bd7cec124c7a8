"""The usage bus on nats-py against a real NATS server: the pull feed's batches and its
ack / nak / term, and the consumer and publisher riding out a restart of the server.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from adapters.nats.ingest_settings import IngestSettings
from adapters.nats.pull_feed import NatsPullFeed, stream_sequence
from adapters.nats.streams import recreate_stream
from adapters.nats.usage_consumer import UsageConsumer
from adapters.nats.usage_publisher import UsagePublisher
from adapters.runtime.composition import open_ledger
from adapters.runtime.embedded_nats import EmbeddedNats
from tests.integration.support import (
    accounts,
    assert_charged_exactly_once,
    make_records,
    wait_until,
)

WAIT_SECONDS = 60.0
JS_MESSAGES = 50
RESTART_RECORDS = 20_000
ACK_SETTLE_POLLS = 50
ACK_SETTLE_POLL_SECONDS = 0.1


def test_the_stream_sequence_is_read_from_both_forms_of_ack_subject() -> None:
    assert stream_sequence("$JS.ACK.LEDGER_USAGE.c.1.42.7.1700000000.3") == 42
    assert stream_sequence("$JS.ACK.hub.ACCHASH.LEDGER_USAGE.c.1.43.7.1700000000.3.rnd") == 43
    with pytest.raises(ValueError, match="not a JetStream ack subject"):
        stream_sequence("_INBOX.x")


async def test_the_pull_feed_takes_batches_and_settles_each_message(
        nats_server_url: str) -> None:
    stream = f"FEEDTEST_{uuid.uuid4().hex[:8].upper()}"
    subject = f"feedtest.{stream.lower()}"
    control = await nats.connect(nats_server_url)
    js = control.jetstream()
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{subject}.>"]))
    await js.add_consumer(stream, ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT,
                                                 ack_wait=30))
    try:
        for i in range(JS_MESSAGES):
            await js.publish(f"{subject}.x", b"%d" % i, headers={"Nats-Msg-Id": f"id-{i}"})
        assert (await js.publish(f"{subject}.x", b"0",
                                 headers={"Nats-Msg-Id": "id-0"})).duplicate
        feed = await NatsPullFeed(control, stream, "c", batch_size=JS_MESSAGES).start()
        batch = await feed.take(wait_seconds=2.0, idle_seconds=2.0)
        assert [d.data for d in batch] == [b"%d" % i for i in range(JS_MESSAGES)]
        assert [d.stream_sequence for d in batch] == list(range(1, JS_MESSAGES + 1))
        assert [d.msg_id for d in batch] == [f"id-{i}" for i in range(JS_MESSAGES)]
        # All acked but the first (terminated) and the second (offered again).
        await feed.settle(batch[2:], [batch[0]], [(batch[1], 0.1)])
        again = await feed.take(wait_seconds=0.5, idle_seconds=5.0)
        assert [d.data for d in again] == [b"1"]
        await feed.settle(again, [], [])
        # Nothing more: an idle take returns empty after its idle time, not a stale batch.
        assert await feed.take(wait_seconds=0.1, idle_seconds=0.5) == []
        await control.flush()
        await feed.close()
        # The server applies acks to the consumer asynchronously: look until they are in.
        for _ in range(ACK_SETTLE_POLLS):
            info = await js.consumer_info(stream, "c")
            if info.num_ack_pending == 0:
                break
            await asyncio.sleep(ACK_SETTLE_POLL_SECONDS)
        assert info.num_ack_pending == 0 and info.num_pending == 0
    finally:
        await js.delete_stream(stream)
        await control.close()


@pytest.mark.slow
async def test_consumer_and_publisher_ride_out_a_nats_restart(database_url: str,
                                                              tmp_path: Path) -> None:
    """Stop the server under a running consumer and publisher, start it again: every record
    is charged exactly once, and the consumer carries on by itself."""
    server = EmbeddedNats(tmp_path / "nats").start()
    settings = IngestSettings(partitions=2, batch_size=200, ack_wait_seconds=2.0)
    ledger = open_ledger(database_url)
    try:
        await recreate_stream(server.url, settings)
        priced = accounts(ledger, 20)
        records = make_records(priced, RESTART_RECORDS, "restart")
        consumer = UsageConsumer(open_ledger(database_url), server.url,
                                 partitions=range(settings.partitions), settings=settings)
        running = asyncio.create_task(consumer.run())

        def recorded() -> int:
            return ledger.keyed.counter_values().get("usage_recorded", 0)

        async with await UsagePublisher.connect(server.url) as publisher:
            # A small window keeps the publisher busy long enough to be cut off mid-way.
            publishing = asyncio.create_task(publisher.publish_many(records, window=100))
            await wait_until(lambda: recorded() > 0, WAIT_SECONDS, "charges flowing")
            server.stop()
            await asyncio.sleep(1.0)
            server.start()
            report = await publishing
        assert report.published == len(records)
        await wait_until(lambda: recorded() >= len(records), WAIT_SECONDS,
                         "every record charged after the restart")
        await wait_until(consumer.is_healthy, WAIT_SECONDS, "the consumer connected again")
        consumer.stop()
        await asyncio.wait_for(running, WAIT_SECONDS)
        assert_charged_exactly_once(ledger, priced, records)
        consumer.ledger.close()
    finally:
        ledger.close()
        server.stop()
