"""The projection runner: read the log in batches, fold, commit with tracking, publish.

One runner keeps all read models (balances, usage buckets, audit trail, invoice and top-up lists)
in step: each batch of up to `BATCH_SIZE_EVENTS` notifications is decoded once, folded into one
`BatchChanges`, and written by the store in ONE transaction together with the tracking position
(the last notification id of the batch). The store refuses a batch whose starting position is not
the committed one, so two runners on one database, or a runner restarted after a crash, can never
count a notification twice; a batch that did not commit is simply read again.

Each batch's view messages are written by the store into its outbox in the batch's own
transaction (projections/view_messages.py); after the commit returns, the runner only tells the
publisher that there is something new, and the publisher (a relay of the outbox to NATS
JetStream) delivers it, so a message never announces a change that could still roll back and is
not lost when NATS is down.

The runner depends on three small interfaces (the log, the store, the publisher); the PostgreSQL
and NATS implementations are in `adapters/`.

When a batch fails (`run_forever`), what happens depends on the kind of error (the store says):

- transient (connection lost, server restarting): retried with backoff; after
  `TRANSIENT_FAILURES_MAX` in a row the failure is also recorded, so health turns red while the
  retries go on, and green again once a batch commits;
- an event that cannot be projected (a bug, data a read model cannot hold): the runner finds the
  first such event by committing ever smaller batches up to it (`isolate`), records it (event,
  position, error, and a count) in the store's status row and stops advancing. Nothing at or after
  that event is applied; usage recording, which does not depend on the read models, goes on.
  After a fix, a restart resumes from the recorded position and clears the failure;
- another runner writing the same read models: recorded and stopped, without isolation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from projections.decoding import EventDecoder
from projections.pipeline import Pipeline
from projections.ports import (
    ChangePublisher,
    FailureKind,
    NotificationLog,
    ProjectionFailure,
    ViewStore,
)
from services.backoff import Backoff
from services.thread_switching import switch_interval_at_most

BATCH_SIZE_EVENTS = 10_000
# When the log has nothing new, wait this long for a notification before polling again.
IDLE_WAIT_SECONDS = 1.0
# After a failed batch (database restart, lost connection), wait before trying again.
RETRY_WAIT_SECONDS = 1.0
RETRY_WAIT_SECONDS_MAX = 30.0
RETRY_BACKOFF = Backoff(RETRY_WAIT_SECONDS, RETRY_WAIT_SECONDS_MAX)
# Transient failures in a row after which the failure is recorded (health red) while retrying.
TRANSIENT_FAILURES_MAX = 5
# While catching up, the interpreter switches threads at least this often. The committer needs
# the lock for a few milliseconds per batch (formatting audit rows) and, with the default 5 ms,
# waited for the folding thread to give it up (figures: BENCHMARKS.md, "Figures moved from code
# comments").
CATCH_UP_SWITCH_INTERVAL = timedelta(milliseconds=1)

log = logging.getLogger(__name__)


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
        self.failed: ProjectionFailure | None = None
        self.failures_recorded = 0  # failures this runner recorded (a counter for metrics)

    @property
    def position(self) -> int:
        return self.folder.position

    def catch_up(self, stop_position: int | None = None,
                 on_batch: Callable[[int], None] | None = None, *,
                 batch_size: int | None = None, batches_max: int | None = None) -> int:
        """Process until the head of the log (or `stop_position`); return events processed.

        This thread reads a page, folds it and stages it in the store (formats and copies its
        rows); a committer thread finishes and commits the staged batches strictly in order (and
        publishes each after its commit), so PostgreSQL commits one batch on the other core while
        the next is folded. Reading stays in this thread: a reader thread of its own was measured
        to cost more in interpreter-lock handovers than it saved. If either side fails, nothing
        after the failed batch is committed, staged batches are rolled back, the folder is
        reloaded from the store and the error is raised.
        """
        with switch_interval_at_most(CATCH_UP_SWITCH_INTERVAL):
            return self._catch_up(stop_position, on_batch, batch_size or self.batch_size,
                                  batches_max)

    def _catch_up(self, stop_position: int | None, on_batch: Callable[[int], None] | None,
                  batch_size: int, batches_max: int | None) -> int:
        pipeline = Pipeline()
        committer = threading.Thread(target=self._commit_batches, name="projections-committer",
                                     args=(pipeline, on_batch))
        committer.start()
        processed = 0
        batches = 0
        staged: Any = None
        position = self.folder.position
        try:
            fold, decoder, stage = self.folder.fold_log, self.decoder, self.store.stage
            while not pipeline.halt.is_set() and (batches_max is None or batches < batches_max):
                batches += 1
                entries = self.log.read_after(position, batch_size, stop_position)
                if not entries:
                    break
                position = entries[-1].position
                changes = fold(entries, decoder)
                staged = stage(changes)
                if not pipeline.put((changes, staged, [])):
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

    def _commit_batches(self, pipeline: Pipeline,
                        on_batch: Callable[[int], None] | None) -> None:
        try:
            while not pipeline.errors and (item := pipeline.get()) is not None:
                changes, staged, _ = item
                self.store.finish(staged)
                if self.publisher is not None:
                    # The messages are in the store's outbox now: this only wakes the relay.
                    self.publisher.publish([])
                if on_batch is not None:
                    on_batch(changes.events)
        except BaseException as error:
            pipeline.fail(error)

    def run_forever(self, stop: threading.Event) -> None:
        """Catch up, then follow the log until `stop` is set; on a failure, see the module doc.

        Returns only when `stop` is set: a runner stopped on a failure waits, so that the
        process (and the usage recording in it) goes on and health can say why."""
        self.failed = self.store.failure()
        transient_failures = 0
        while not stop.is_set():
            try:
                processed = self.catch_up()
                if self.failed is not None and (processed or self.failed.aggregate_id is None):
                    self.store.clear_failure()
                    log.info("projections moved past the recorded failure at position %d",
                             self.failed.position)
                    self.failed = None
                if processed == 0:
                    self.log.wait_for_new(IDLE_WAIT_SECONDS)
                transient_failures = 0
            except Exception as error:
                kind = self.store.failure_kind(error)
                if kind is FailureKind.TRANSIENT:
                    transient_failures += 1
                    wait_seconds = RETRY_BACKOFF.delay_seconds(transient_failures)
                    log.warning("projection batch after position %d failed (%s, %d in a row); "
                                "retrying in %.0fs", self.folder.position, error,
                                transient_failures, wait_seconds)
                    if transient_failures >= TRANSIENT_FAILURES_MAX:
                        self._record_quietly(self._failure_at_position(error))
                    stop.wait(wait_seconds)
                    self._reconnect_quietly()
                    continue
                failure = (self.isolate(error) if kind is FailureKind.EVENT
                           else self._failure_at_position(error))
                if failure is None:
                    continue  # the failure did not come back: carry on
                self._record_quietly(failure)
                log.error("%s", failure.describe())
                stop.wait()  # stop advancing; nothing at or after the failure is applied
                return

    def isolate(self, error: BaseException) -> ProjectionFailure | None:
        """Find the first event that cannot be projected, committing every event before it.

        The failed batch started at the committed position; batches of half the size are tried
        from there, each success committing its events, each failure halving the size again,
        until a batch of one event fails: that event is the cause. Returns None if the failure
        does not come back (it was not the events' fault after all).
        """
        size = self.batch_size
        while True:
            size = max(1, size // 2)
            try:
                while self.catch_up(batch_size=size, batches_max=1):
                    pass
                return None
            except Exception as again:
                error = again
                if self.store.failure_kind(again) is not FailureKind.EVENT:
                    return self._failure_at_position(again)
                if size == 1:
                    break
        entries = self.log.read_after(self.folder.position, 1)
        if not entries:
            return self._failure_at_position(error)
        entry = entries[0]
        return ProjectionFailure(position=entry.position, aggregate_id=entry.originator_id,
                                 aggregate_version=entry.originator_version,
                                 event_type=entry.topic.rpartition(":")[2],
                                 error=f"{type(error).__name__}: {error}")

    def _failure_at_position(self, error: BaseException) -> ProjectionFailure:
        return ProjectionFailure(position=self.folder.position + 1, aggregate_id=None,
                                 aggregate_version=None, event_type=None,
                                 error=f"{type(error).__name__}: {error}")

    def _record_quietly(self, failure: ProjectionFailure) -> None:
        self.failures_recorded += 1
        self.failed = failure
        try:
            self.store.record_failure(failure)
        except Exception:
            log.exception("could not record the projection failure (%s)", failure.describe())

    def _reconnect_quietly(self) -> None:
        try:
            self.log.reconnect()
            self.store.reconnect()
            self.folder = self.store.load_folder()
        except Exception:
            log.exception("reconnecting to the read-model database failed; will retry")
