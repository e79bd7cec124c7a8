"""The notification log of an in-memory Ledger (eventsourcing's POPO recorder), read as the
projections read PostgreSQL's: pages of `LogEntry` after a position.

Through the recorder's public `select_notifications` and `max_notification_id`.
"""

from __future__ import annotations

import threading
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder

from projections.decoding import LogEntry


class MemoryNotificationLog:
    def __init__(self, recorder: ApplicationRecorder) -> None:
        self.recorder = recorder
        self._idle = threading.Event()  # never set: waiting only lets time pass

    def read_after(self, position: int, limit: int, stop: int | None = None) -> list[LogEntry]:
        notifications = self.recorder.select_notifications(
            start=position, limit=limit, stop=stop, inclusive_of_start=False)
        return [LogEntry(n.id, UUID(str(n.originator_id)), n.originator_version, n.topic,
                         n.state) for n in notifications]

    def head_position(self) -> int:
        return self.recorder.max_notification_id() or 0

    def wait_for_new(self, timeout_seconds: float) -> None:
        """The POPO recorder announces nothing: wait the timeout, then the runner reads again."""
        self._idle.wait(timeout_seconds)

    def reconnect(self) -> None:
        """Nothing to reconnect."""
