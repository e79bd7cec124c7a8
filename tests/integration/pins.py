"""Watching priority-group pins from outside: which client each partition's consumer is pinned
to and how far it has delivered (JetStream API, CONSUMER.INFO), and how long after a kill every
partition was delivering again to a new client. Shared by the failover tests."""

from __future__ import annotations

import asyncio
import json
import time

import nats
import nats.errors

from adapters.nats.ingest_settings import STREAM_NAME
from adapters.nats.streams import consumer_name

INFO_TIMEOUT_SECONDS = 2.0
POLL_SECONDS = 0.1


async def pinned_and_delivered(client: nats.NATS, partitions: int) -> dict[int, tuple[str, int]]:
    """Per partition, (pinned client id or "", last delivered stream sequence); a partition
    whose consumer does not answer (its cluster is electing a leader) is left out."""
    result = {}
    for partition in range(partitions):
        try:
            reply = await client.request(
                f"$JS.API.CONSUMER.INFO.{STREAM_NAME}.{consumer_name(partition)}", b"",
                timeout=INFO_TIMEOUT_SECONDS)
        except nats.errors.Error:
            continue
        info = json.loads(reply.data)
        if "error" in info:
            continue
        groups = info.get("priority_groups") or [{}]
        result[partition] = (groups[0].get("pinned_client_id", ""),
                             info["delivered"]["stream_seq"])
    return result


async def wait_for_resumption(client: nats.NATS, partitions: int,
                              before: dict[int, tuple[str, int]], killed: float,
                              wait_seconds: float) -> dict[int, float]:
    """Seconds from `killed` (a monotonic time) until each partition was pinned to a client
    other than the one in `before` and delivered past `before`'s sequence; partitions that
    never resumed within `wait_seconds` are missing from the answer."""
    resumed: dict[int, float] = {}
    while len(resumed) < partitions and time.monotonic() - killed < wait_seconds:
        for partition, (pin, sequence) in (await pinned_and_delivered(client,
                                                                      partitions)).items():
            old_pin, old_sequence = before.get(partition, ("", 0))
            if partition not in resumed and pin not in ("", old_pin) and sequence > old_sequence:
                resumed[partition] = time.monotonic() - killed
        await asyncio.sleep(POLL_SECONDS)
    return resumed
