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
import threading
from collections.abc import Callable
from typing import Any, Protocol
from uuid import UUID

from projections.decoding import EventDecoder, LogEntry
from projections.fold import BatchChanges, ViewFolder

BATCH_SIZE_EVENTS = 5000
# Batches in flight between the reader, the folder and the committer (each stage holds one more).
PIPELINE_DEPTH_BATCHES = 2
PIPELINE_POLL_SECONDS = 0.1
# When the log has nothing new, wait this long for a notification before polling again.
IDLE_WAIT_SECONDS = 1.0
# After a failed batch (database restart, lost connection), wait before trying again.
RETRY_WAIT_SECONDS = 1.0
RETRY_WAIT_SECONDS_MAX = 30.0

log = logging.getLogger(__name__)


class NotificationLog(Protocol):
    def read_after(self, position: int, limit: int, stop: int | None = None) -> list[LogEntry]:
        ...

    def head_position(self) -> int: ...

    def wait_for_new(self, timeout_seconds: float) -> None: ...


class ViewStore(Protocol):
    def load_folder(self) -> ViewFolder: ...

    def commit(self, changes: BatchChanges) -> None: ...


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
    """Bounded queues between the stages, and how a failing stage stops the others."""

    def __init__(self) -> None:
        self.pages: queue.Queue[list[LogEntry] | None] = queue.Queue(PIPELINE_DEPTH_BATCHES)
        self.batches: queue.Queue[tuple[BatchChanges, list[Any]] | None] = queue.Queue(
            PIPELINE_DEPTH_BATCHES)
        self.halt = threading.Event()
        self.errors: list[BaseException] = []

    def fail(self, error: BaseException) -> None:
        self.errors.append(error)
        self.halt.set()
        # Wake a consumer that waits for work which will never come.
        for waiting in (self.pages, self.batches):
            with contextlib.suppress(queue.Full):
                waiting.put_nowait(None)

    def put(self, target: queue.Queue[Any], item: Any) -> None:
        """Put unless the pipeline halted (a full queue must not block a stopping stage)."""
        while True:
            try:
                target.put(item, timeout=PIPELINE_POLL_SECONDS)
                return
            except queue.Full:
                if self.halt.is_set():
                    return

    def get(self, source: queue.Queue[Any]) -> Any:
        """The next item, or None once the pipeline halted and nothing is left."""
        while True:
            try:
                return source.get(timeout=PIPELINE_POLL_SECONDS)
            except queue.Empty:
                if self.halt.is_set():
                    return None

    def guard(self, stage: Callable[..., None], *args: Any) -> None:
        try:
            stage(*args)
        except BaseException as error:
            self.fail(error)


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

        Three stages overlap: a reader thread fetches the next page while this thread decodes
        and folds, and a committer thread writes the previous batch (and publishes it after
        its commit). PostgreSQL works on the reads and writes on the other core meanwhile.
        Batches are committed strictly in order; if any stage fails, the others stop, nothing
        after the failed batch is committed, the folder is reloaded from the store and the
        error is raised.
        """
        pipeline = _Pipeline()
        reader = threading.Thread(target=pipeline.guard, name="projections-reader",
                                  args=(self._read_pages, pipeline, stop_position))
        committer = threading.Thread(target=pipeline.guard, name="projections-committer",
                                     args=(self._commit_batches, pipeline, on_batch))
        reader.start()
        committer.start()
        processed = 0
        try:
            decode, fold = self.decoder.decode, self.folder.fold
            while not pipeline.errors and (entries := pipeline.get(pipeline.pages)) is not None:
                changes = fold([(entry, decode(entry)) for entry in entries])
                messages = view_messages(changes, self.folder) if self.publisher else []
                pipeline.put(pipeline.batches, (changes, messages))
                processed += len(entries)
        except BaseException as error:
            pipeline.fail(error)
        finally:
            pipeline.put(pipeline.batches, None)
            pipeline.halt.set()  # the reader may be blocked on a full queue
            reader.join()
            committer.join()
        if pipeline.errors:
            self.folder = self.store.load_folder()
            raise pipeline.errors[0]
        return processed

    def _read_pages(self, pipeline: _Pipeline, stop_position: int | None) -> None:
        position = self.folder.position
        try:
            while not pipeline.halt.is_set():
                entries = self.log.read_after(position, self.batch_size, stop_position)
                if not entries:
                    return
                position = entries[-1].position
                pipeline.put(pipeline.pages, entries)
                if stop_position is not None and position >= stop_position:
                    return
        finally:
            pipeline.put(pipeline.pages, None)

    def _commit_batches(self, pipeline: _Pipeline,
                        on_batch: Callable[[int], None] | None) -> None:
        while (item := pipeline.get(pipeline.batches)) is not None:
            if pipeline.errors:
                return  # never commit past a failure
            changes, messages = item
            self.store.commit(changes)
            if self.publisher is not None:
                self.publisher.publish(messages)
            if on_batch is not None:
                on_batch(changes.events)

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
