"""The hand-over between the folding thread and the committer thread of the runner.

A bounded queue of staged batches, and how a failing stage stops the other without either
blocking forever; plus the interpreter switch interval used while catching up.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from projections.views import BatchChanges

# Batches in flight between the folding thread and the committer (each stage holds one more).
PIPELINE_DEPTH_BATCHES = 2
PIPELINE_POLL_SECONDS = 0.1

StagedItem = tuple[BatchChanges, Any, list[Any]]


class Pipeline:
    """The bounded queue between the folding thread and the committer, and how a failing stage
    stops the other."""

    def __init__(self) -> None:
        self.batches: queue.Queue[StagedItem | None] = queue.Queue(
            PIPELINE_DEPTH_BATCHES)
        self.halt = threading.Event()
        self.errors: list[BaseException] = []

    def fail(self, error: BaseException) -> None:
        self.errors.append(error)
        self.halt.set()

    def put(self, item: StagedItem | None) -> bool:
        """Put unless the pipeline halted (a full queue must not block a stopping stage)."""
        while True:
            try:
                self.batches.put(item, timeout=PIPELINE_POLL_SECONDS)
                return True
            except queue.Full:
                if self.halt.is_set():
                    return False

    def get(self) -> StagedItem | None:
        """The next batch, or None once the folding thread is done or the pipeline halted."""
        while True:
            try:
                return self.batches.get(timeout=PIPELINE_POLL_SECONDS)
            except queue.Empty:
                if self.halt.is_set():
                    return None

    def leftovers(self) -> list[Any]:
        """Staged batches nobody will finish."""
        left: list[Any] = []
        while True:
            try:
                item = self.batches.get_nowait()
            except queue.Empty:
                return left
            if item is not None:
                left.append(item[1])
