"""One rule for waiting before trying again: exponential backoff, bounded, with optional jitter.

Every retry loop of the ledger (a runner restarted after its server failed, a consumer connecting
again to the bus, a projection retrying a transient failure, a command that lost to a concurrent
writer) waits by this rule: the first delay, doubled after each failure up to the longest delay;
with full jitter each wait is drawn uniformly between 0 and that bound, so that many writers that
failed together do not retry together. How many attempts a loop makes, and when it starts again
from the first delay, stays with the loop: that is its own policy, named where it lives.

It lives in services/ because it is plain Python with no I/O (a loop sleeps as it likes: a thread,
`asyncio`, or a wait on a stop event) and every layer but the pure domain may import services.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

# The doubling stops long before a float could overflow; a loop that retries this often has
# reached its longest delay many times over.
DOUBLINGS_MAX = 64


@dataclass(frozen=True)
class Backoff:
    """Waits of `first_seconds`, doubled per failure up to `longest_seconds`; `jitter` draws
    each wait uniformly in [0, bound] instead (full jitter)."""

    first_seconds: float
    longest_seconds: float
    jitter: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.first_seconds <= self.longest_seconds:
            raise ValueError(f"backoff needs 0 < first_seconds <= longest_seconds, got "
                             f"{self.first_seconds} and {self.longest_seconds}")

    def delay_seconds(self, failures: int) -> float:
        """The wait after `failures` failures in a row (1 for the first failure)."""
        if failures < 1:
            raise ValueError(f"failures counts from 1, got {failures}")
        bound = min(self.longest_seconds,
                    self.first_seconds * 2 ** min(failures - 1, DOUBLINGS_MAX))
        return random.uniform(0, bound) if self.jitter else bound  # jitter, not secrecy

    def delays(self) -> Iterator[float]:
        """The waits after the first, second, ... failure, endlessly: take one per failure, and
        a new iterator to start again from the first delay."""
        failures = 0
        while True:
            failures += 1
            yield self.delay_seconds(failures)
