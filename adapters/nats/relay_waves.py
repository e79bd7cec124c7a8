"""Publishing a round of outbox rows with many acknowledgements in flight, each subject in order.

The views stream keeps the last message per subject as the current state of a team's view, so a
subject's messages must be stored in outbox order: an older view stored after a newer one would
become "the current state". Waiting for each acknowledgement in turn keeps that order but costs
a round trip per row. Here a round is sent in **waves**: wave n holds the n-th row of every
subject in the round, published together (their acknowledgements awaited together); the next
wave starts when the whole wave is acknowledged. So at most one message per subject is in
flight, a subject's messages are stored in order, and a round of one message for each of many
teams (the usual case) costs one round trip.

If a publish fails, the wave's other publishes are still awaited, and the answer is the longest
prefix of the round (in outbox order) that was stored: the relay marks that far and publishes
the rest again. What was stored beyond the prefix comes again with the same message id (the
stream drops it inside its duplicate window; after it, it is stored again behind the same
subject's earlier messages, never after a newer one), because for every subject the stored rows
are a prefix of that subject's rows: its later rows were never sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from projections.view_messages import OutboxRow

Publish = Callable[[OutboxRow], Awaitable[None]]


def waves(rows: Sequence[OutboxRow]) -> list[list[OutboxRow]]:
    """Wave n: the n-th row of each subject, in outbox order."""
    seen: dict[str, int] = {}
    result: list[list[OutboxRow]] = []
    for row in rows:
        index = seen.get(row.subject, 0)
        seen[row.subject] = index + 1
        if index == len(result):
            result.append([])
        result[index].append(row)
    return result


async def publish_in_waves(rows: Sequence[OutboxRow], publish: Publish
                           ) -> tuple[int, BaseException | None]:
    """Publish `rows` wave by wave; returns how many rows from the start of `rows` are stored
    (the prefix the relay may mark), and the first failure, if any (then later waves are not
    sent)."""
    stored: set[int] = set()
    failure: BaseException | None = None
    for wave in waves(rows):
        results = await asyncio.gather(*(publish(row) for row in wave), return_exceptions=True)
        for row, result in zip(wave, results, strict=True):
            if isinstance(result, BaseException):
                failure = failure or result
            else:
                stored.add(row.seq)
        if failure is not None:
            break
    prefix = 0
    for row in rows:
        if row.seq not in stored:
            break
        prefix += 1
    return prefix, failure
