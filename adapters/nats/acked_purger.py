"""Removes what the ledger has settled from the usage stream, a partition at a time, in bulk.

The usage stream keeps its messages under "limits" retention (`adapters.nats.streams`), and
this purger removes each partition's settled ones: every `PURGE_INTERVAL_SECONDS`, for each
partition whose feed in this process settled (acked or terminated) something since the
partition was last purged up to there, it reads the partition consumer's ack floor from the
server (`consumer_info`: every message of that consumer up to `ack_floor.stream_seq` is
settled) and purges the partition's subject below it (`$JS.API.STREAM.PURGE` with `filter` and
`seq`, which removes matching messages *before* `seq` only).

Why not a work queue, which deletes each message as it is acknowledged: measured on this
machine (issue 10, BENCHMARKS.md), the NATS server spent ~15-24 us of CPU per record more on
those one-by-one deletes than on delivering and acknowledging under limits retention, while a
filtered purge of the same messages in bulk cost ~4 us per record, and NATS is a third of the
CPU per record end to end.

Safety rests on the server's own ack floor, never on what this process believes: the floor
only moves past messages the server has recorded as settled, and the ledger settles a message
only after its batch committed (or its rejection was stored). A message nak'ed for later, or
delivered and not yet settled, holds the floor below it, so it and everything after it in its
partition stay. A purge that fails (NATS down, a timeout) is logged and tried in a later
round; until then the settled messages only take room (the stream's byte limit counts them,
and the producers are refused if it fills: back-pressure, never a lost record). The purge
with a filter leaves other partitions' consumers alone (NATS moves a consumer's state only
for a purge of its own subjects, and then no further than the stream's first remaining
message, which is at or before any message it has not settled).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from adapters.nats.ingest_settings import STREAM_NAME
from adapters.nats.streams import consumer_name, partition_filter

log = logging.getLogger(__name__)

# How often settled messages are purged: the stream holds at most about this long of traffic
# beyond its unsettled backlog.
PURGE_INTERVAL_SECONDS = 1.0
# A consumer-info or purge request that takes longer is given up for this round.
PURGE_REQUEST_TIMEOUT_SECONDS = 5.0
# On close, one last round is given at most this long.
PURGE_CLOSE_SECONDS = 2.0

SettledThrough = Callable[[], int]


@dataclass
class PurgeStats:
    rounds: int = 0
    purges: int = 0  # purge requests the server accepted
    failures: int = 0  # consumer-info or purge requests that failed (tried again later)


class AckedPurger:
    """Purges the settled messages of the partitions registered with `watch`."""

    def __init__(self, js: JetStreamContext, *,
                 interval_seconds: float = PURGE_INTERVAL_SECONDS) -> None:
        self.js = js
        self.interval_seconds = interval_seconds
        self.stats = PurgeStats()
        self._settled_through: dict[int, SettledThrough] = {}
        self._purged_below: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, partition: int, settled_through: SettledThrough) -> None:
        """`settled_through()` is the highest stream sequence this process has settled on
        the partition (0: none yet)."""
        self._settled_through[partition] = settled_through
        self._purged_below.setdefault(partition, 0)

    def start(self) -> AckedPurger:
        self._task = asyncio.create_task(self._run(), name="usage-stream-purger")
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # What was settled last is not left behind for the next process to purge.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.purge_settled(), PURGE_CLOSE_SECONDS)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_seconds)
            await self.purge_settled()

    async def purge_settled(self) -> None:
        """One round: purge each partition that settled past what was purged of it."""
        self.stats.rounds += 1
        for partition, settled_through in list(self._settled_through.items()):
            if settled_through() >= self._purged_below[partition]:
                await self._purge(partition)

    async def _purge(self, partition: int) -> None:
        try:
            info = await self.js.consumer_info(STREAM_NAME, consumer_name(partition),
                                               timeout=PURGE_REQUEST_TIMEOUT_SECONDS)
            floor = info.ack_floor.stream_seq if info.ack_floor else 0
            if floor == 0 or floor < self._purged_below[partition]:
                return  # nothing settled past the last purge yet (as the server sees it)
            await self.js.purge_stream(STREAM_NAME, seq=floor + 1,
                                       subject=partition_filter(partition))
        except (NatsError, TimeoutError) as error:
            self.stats.failures += 1
            log.warning("partition %d: purging its settled messages failed (%r); "
                        "trying again in %.0fs", partition, error, self.interval_seconds)
            return
        self.stats.purges += 1
        self._purged_below[partition] = floor + 1
