"""The projection runner: read the log in batches, fold, commit with tracking, publish.

One runner keeps all read models (balances, usage buckets, audit trail, invoice and top-up lists)
in step: each batch of up to `BATCH_SIZE_EVENTS` notifications is decoded once, folded into one
`BatchChanges`, and written by the store in ONE transaction together with the tracking position
(the last notification id of the batch). The store refuses a batch whose starting position is not
the committed one, so two runners on one database, or a runner restarted after a crash, can never
count a notification twice; a batch that did not commit is simply read again.

Publishing happens after the commit returns, so a message never announces a change that could
still roll back; a message lost in a crash is superseded by the next one (each carries the full
balance and the log position), and readers can always ask the read models directly.

The runner depends on three small interfaces (the log, the store, the publisher); the PostgreSQL
and NATS implementations are in `adapters/`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol
from uuid import UUID

from projections.decoding import EventDecoder, LogEntry
from projections.fold import BatchChanges, ViewFolder

BATCH_SIZE_EVENTS = 10_000
# Batches in flight between the reader, the folder and the committer (each stage holds one more).
PIPELINE_DEPTH_BATCHES = 2
PIPELINE_POLL_SECONDS = 0.1
# When the log has nothing new, wait this long for a notification before polling again.
IDLE_WAIT_SECONDS = 1.0
# After a failed batch (database restart, lost connection), wait before trying again.
RETRY_WAIT_SECONDS = 1.0
RETRY_WAIT_SECONDS_MAX = 30.0
# While catching up, the interpreter switches threads at least this often. The committer needs
# the lock for a few milliseconds per batch (formatting audit rows) and, with the default 5 ms,
# waited for the folding thread to give it up; 1 ms was 4-11% faster in alternating runs.
CATCH_UP_SWITCH_INTERVAL_SECONDS = 0.001

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _switch_interval_at_most(seconds: float) -> Iterator[None]:
    """Shorten the interpreter's thread switch interval for a while (never lengthen it: another
    part of the process may have shortened it too), and put it back if it is still ours."""
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


class NotificationLog(Protocol):
    def read_after(self, position: int, limit: int, stop: int | None = None) -> list[LogEntry]:
        ...

    def head_position(self) -> int: ...

    def wait_for_new(self, timeout_seconds: float) -> None: ...


class ViewStore(Protocol):
    """Where batches go. A batch is written in two steps: `stage` (in the folding thread: the
    row formatting, in an open transaction) and `finish` (in the committer thread: the rest and
    the commit, with the tracking position), so the next batch is folded and staged while the
    previous one commits. `abort` rolls back a staged batch that will not be finished."""

    def load_folder(self) -> ViewFolder: ...

    def stage(self, changes: BatchChanges) -> Any: ...

    def finish(self, staged: Any) -> None: ...

    def abort(self, staged: Any) -> None: ...


class ChangePublisher(Protocol):
    def publish(self, messages: list[tuple[str, dict[str, Any]]]) -> None: ...


def view_messages(changes: BatchChanges, folder: ViewFolder) -> list[tuple[str, dict[str, Any]]]:
    """The messages announcing a committed batch, one per view and team it changed."""
    position = changes.last_position
    days: dict[UUID, set[str]] = {}
    for team_id, _, _, day in changes.usage:
        days.setdefault(team_id, set()).add(day.isoformat())
    audit: dict[UUID, list[int]] = {}  # team -> [rows, last position]
    for row in changes.audit:
        if row.team_id is not None:
            counts = audit.setdefault(row.team_id, [0, 0])
            counts[0] += 1
            counts[1] = row.position
    messages: list[tuple[str, dict[str, Any]]] = []
    for team_id, team in changes.teams.items():
        messages.append((f"ledger.views.balance.{team_id}",
                         {"position": position, **team.as_dict()}))
    for team_id, team_days in days.items():
        messages.append((f"ledger.views.usage.{team_id}",
                         {"position": position, "team_id": str(team_id),
                          "dates": sorted(team_days)}))
    for team_id, (rows, last_row_position) in audit.items():
        messages.append((f"ledger.views.audit.{team_id}", {
            "position": position, "team_id": str(team_id), "new_rows": rows,
            "last_row_position": last_row_position, "chain_head": folder.audit_head.hex(),
        }))
    return messages


class _Pipeline:
    """The bounded queue between the folding thread and the committer, and how a failing stage
    stops the other."""

    def __init__(self) -> None:
        self.batches: queue.Queue[tuple[BatchChanges, Any, list[Any]] | None] = queue.Queue(
            PIPELINE_DEPTH_BATCHES)
        self.halt = threading.Event()
        self.errors: list[BaseException] = []

    def fail(self, error: BaseException) -> None:
        self.errors.append(error)
        self.halt.set()

    def put(self, item: tuple[BatchChanges, Any, list[Any]] | None) -> bool:
        """Put unless the pipeline halted (a full queue must not block a stopping stage)."""
        while True:
            try:
                self.batches.put(item, timeout=PIPELINE_POLL_SECONDS)
                return True
            except queue.Full:
                if self.halt.is_set():
                    return False

    def get(self) -> tuple[BatchChanges, Any, list[Any]] | None:
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


class ProjectionRunner:
    def __init__(self, log_source: NotificationLog, store: ViewStore, decoder: EventDecoder,
                 publisher: ChangePublisher | None = None,
                 batch_size: int = BATCH_SIZE_EVENTS) -> None:
        self.log = log_source
        self.store = store
        self.decoder = decoder
        self.publisher = publisher
        self.batch_size = batch_size
        self.folder = store.load_folder()

    @property
    def position(self) -> int:
        return self.folder.position

    def catch_up(self, stop_position: int | None = None,
                 on_batch: Callable[[int], None] | None = None) -> int:
        """Process until the head of the log (or `stop_position`); return events processed.

        This thread reads a page, folds it and stages it in the store (formats and copies its
        rows); a committer thread finishes and commits the staged batches strictly in order (and
        publishes each after its commit), so PostgreSQL commits one batch on the other core while
        the next is folded. Reading stays in this thread: a reader thread of its own was measured
        to cost more in interpreter-lock handovers than it saved. If either side fails, nothing
        after the failed batch is committed, staged batches are rolled back, the folder is
        reloaded from the store and the error is raised.
        """
        with _switch_interval_at_most(CATCH_UP_SWITCH_INTERVAL_SECONDS):
            return self._catch_up(stop_position, on_batch)

    def _catch_up(self, stop_position: int | None,
                  on_batch: Callable[[int], None] | None) -> int:
        pipeline = _Pipeline()
        committer = threading.Thread(target=self._commit_batches, name="projections-committer",
                                     args=(pipeline, on_batch))
        committer.start()
        processed = 0
        staged: Any = None
        position = self.folder.position
        try:
            fold, decoder, stage = self.folder.fold_log, self.decoder, self.store.stage
            while not pipeline.halt.is_set():
                entries = self.log.read_after(position, self.batch_size, stop_position)
                if not entries:
                    break
                position = entries[-1].position
                changes = fold(entries, decoder)
                staged = stage(changes)
                messages = view_messages(changes, self.folder) if self.publisher else []
                if not pipeline.put((changes, staged, messages)):
                    break
                staged = None
                processed += len(entries)
                if stop_position is not None and position >= stop_position:
                    break
        except BaseException as error:
            pipeline.fail(error)
        finally:
            pipeline.put(None)
            committer.join()
            for leftover in [staged, *pipeline.leftovers()]:
                if leftover is not None:
                    self.store.abort(leftover)
        if pipeline.errors:
            self.folder = self.store.load_folder()
            raise pipeline.errors[0]
        return processed

    def _commit_batches(self, pipeline: _Pipeline,
                        on_batch: Callable[[int], None] | None) -> None:
        try:
            while not pipeline.errors and (item := pipeline.get()) is not None:
                changes, staged, messages = item
                self.store.finish(staged)
                if self.publisher is not None:
                    self.publisher.publish(messages)
                if on_batch is not None:
                    on_batch(changes.events)
        except BaseException as error:
            pipeline.fail(error)

    def run_forever(self, stop: threading.Event) -> None:
        """Catch up, then follow the log until `stop` is set. Errors are retried with backoff."""
        wait_seconds = RETRY_WAIT_SECONDS
        while not stop.is_set():
            try:
                if self.catch_up() == 0:
                    self.log.wait_for_new(IDLE_WAIT_SECONDS)
                wait_seconds = RETRY_WAIT_SECONDS
            except Exception:
                log.exception("projection batch after position %s failed; retrying in %.0fs",
                              self.folder.position, wait_seconds)
                stop.wait(wait_seconds)
                wait_seconds = min(wait_seconds * 2, RETRY_WAIT_SECONDS_MAX)
                self._reload_quietly()

    def _reload_quietly(self) -> None:
        try:
            self.folder = self.store.load_folder()
        except Exception:
            log.exception("reloading the read models failed; will retry")
