"""The one rule for shortening the interpreter's thread switch interval while threads hand off.

Pipelines here run a thread that mostly waits on the database (committing a batch) beside one
that computes (preparing the next batch, folding events). When the waiting thread's reply
arrives it needs the GIL back, which the computing thread gives up only every
`sys.getswitchinterval()` seconds (5 ms by default); a shorter interval lets it run sooner.

The interval is process-wide, so the rule is: only ever shorten it (another part of the process
may have shortened it too), and on the way out put the previous value back only if the interval
is still the one set here (a later, shorter setting by someone else is left alone).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from datetime import timedelta


@contextlib.contextmanager
def switch_interval_at_most(interval: timedelta) -> Iterator[None]:
    """Keep the thread switch interval at most `interval` inside the block. (A `timedelta`, so
    that no float annotation enters the service layer, where floats are banned from money.)"""
    if not interval > timedelta(0):
        raise ValueError(f"switch interval must be a positive duration, got {interval}")
    seconds = interval.total_seconds()
    previous = sys.getswitchinterval()
    if previous <= seconds:
        yield
        return
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        if sys.getswitchinterval() == seconds:
            sys.setswitchinterval(previous)
