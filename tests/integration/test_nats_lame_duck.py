"""A cluster node shut down gracefully (lame duck mode) hands its clients to the other nodes.

Three routed JetStream nodes on loopback (the usage stream replicated 3 times). The consumer
process and the publisher are given the first node's URL only: the other nodes are learned from
the server's INFO (cluster discovery, nats-py's). Mid-stream the first node is sent SIGUSR2
(`nats-server --signal ldm`): it stops taking connections, tells its clients (the consumer logs
it), closes them one by one after its grace period and exits. nats-py reconnects each to a
discovered node; the consumer process keeps running (it is never restarted), the publisher
finishes, and every record is charged exactly once.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest

from adapters.nats.ingest_settings import IngestSettings
from adapters.nats.streams import recreate_stream
from adapters.nats.usage_publisher import UsagePublisher
from adapters.runtime.composition import open_ledger
from adapters.runtime.loopback_nats import loopback_cluster
from tests.integration.support import (
    ConsumerProcess,
    accounts,
    assert_charged_exactly_once,
    make_records,
    publish_paced,
    wait_until,
)

pytestmark = pytest.mark.slow

NODES = 3
PARTITIONS = 2
# Evict clients 1 s after entering lame duck mode (the default waits 10 s); the duration's
# minimum is 30 s, but with a few clients the server closes one per second.
LAME_DUCK_CONFIG = 'lame_duck_grace_period: "1s"\nlame_duck_duration: "30s"'
RECORDS = 2000
CHUNK_PAUSE_SECONDS = 0.1
STREAMING_BEFORE_SIGNAL_SECONDS = 1.0
CLUSTER_READY_SECONDS = 60.0
NODE_EXIT_SECONDS = 60.0
WAIT_SECONDS = 180.0


async def test_a_node_in_lame_duck_mode_hands_its_clients_to_the_others(
        database_url: str, tmp_path: Path) -> None:
    with loopback_cluster(tmp_path, NODES, name="ledger-ldm", sync_always=False,
                          extra_config=LAME_DUCK_CONFIG) as cluster:
        first_node, leaving = cluster.urls[0], cluster.processes[0]
        settings = IngestSettings(partitions=PARTITIONS, batch_size=100, replicas=NODES,
                                  ack_wait_seconds=5.0, pin_ttl_seconds=3.0)
        await recreate_stream(cluster.url, settings, wait_seconds=CLUSTER_READY_SECONDS)
        ledger = open_ledger(database_url)
        priced = accounts(ledger, 20)
        records = make_records(priced, RECORDS, "lame-duck")
        consumer = ConsumerProcess(database_url, first_node, member=0, members=1,
                                   settings=settings, log_path=tmp_path / "consumer.log")
        try:
            consumer.start()
            await wait_until(consumer.serving, WAIT_SECONDS, "the consumer serving")
            async with await UsagePublisher.connect(first_node) as publisher:
                streaming = asyncio.create_task(
                    publish_paced(publisher, records, CHUNK_PAUSE_SECONDS))
                await asyncio.sleep(STREAMING_BEFORE_SIGNAL_SECONDS)
                assert not streaming.done(), "the stream ended before the signal: publish more"
                leaving.send_signal(signal.SIGUSR2)
                await streaming
                # The node closed every client and stopped by itself.
                try:
                    await asyncio.to_thread(leaving.wait, NODE_EXIT_SECONDS)
                except subprocess.TimeoutExpired:
                    raise AssertionError("the node in lame duck mode did not stop") from None
                connected = publisher.connection.connected_url
                assert connected is not None and connected.geturl() != first_node
            await wait_until(
                lambda: ledger.keyed.counter_values().get("usage_recorded", 0) >= RECORDS,
                WAIT_SECONDS, "every record charged")
            assert consumer.alive() and consumer.starts == 1, "the consumer process restarted"
        finally:
            exit_code = consumer.stop()
        log = consumer.log_path.read_text()
        assert "entered lame duck mode" in log, log[-2000:]
        assert exit_code == 0
        assert_charged_exactly_once(ledger, priced, records)
        ledger.close()
