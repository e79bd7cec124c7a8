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

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from projections.decoding import EventDecoder, LogEntry
from projections.fold import BatchChanges, ViewFolder

BATCH_SIZE_EVENTS = 2000
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
    messages: list[tuple[str, dict[str, Any]]] = []
    for team_id, team in changes.teams.items():
        messages.append((f"ledger.views.balance.{team_id}",
                         {"position": position, **team.as_dict()}))
    for team_id in sorted(changes.usage_teams, key=str):
        days = sorted({key[3].isoformat() for key in changes.usage if key[0] == team_id})
        messages.append((f"ledger.views.usage.{team_id}",
                         {"position": position, "team_id": str(team_id), "dates": days}))
    for team_id in sorted(changes.audit_teams, key=str):
        rows = [row for row in changes.audit if row.team_id == team_id]
        messages.append((f"ledger.views.audit.{team_id}", {
            "position": position, "team_id": str(team_id), "new_rows": len(rows),
            "last_row_position": rows[-1].position if rows else None,
            "chain_head": folder.audit_head.hex(),
        }))
    return messages


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

    def step(self, stop_position: int | None = None) -> int:
        """Process one batch; return how many events it held (0: nothing new)."""
        entries = self.log.read_after(self.folder.position, self.batch_size, stop_position)
        if not entries:
            return 0
        decode = self.decoder.decode
        decoded = [(entry, decode(entry)) for entry in entries]
        try:
            changes = self.folder.fold(decoded)
            self.store.commit(changes)
        except BaseException:
            # The folder may be ahead of what is stored: start again from the store.
            self.folder = self.store.load_folder()
            raise
        if self.publisher is not None:
            self.publisher.publish(view_messages(changes, self.folder))
        return len(entries)

    def catch_up(self, stop_position: int | None = None,
                 on_batch: Callable[[int], None] | None = None) -> int:
        """Process until the head of the log (or `stop_position`); return events processed."""
        processed = 0
        while stop_position is None or self.folder.position < stop_position:
            count = self.step(stop_position)
            if count == 0:
                break
            processed += count
            if on_batch is not None:
                on_batch(count)
        return processed

    def run_forever(self, stop: threading.Event) -> None:
        """Catch up, then follow the log until `stop` is set. Errors are retried with backoff."""
        wait_seconds = RETRY_WAIT_SECONDS
        while not stop.is_set():
            try:
                if self.step() == 0:
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
        time.sleep(0)
