"""The one place where this project reaches into private names of the `eventsourcing` library.

eventsourcing 9.5 has no public hook for three things the ledger needs, so each is done here,
once, under a name that says what it does:

1. Storing events that were collected and mapped on another thread (the usage pipeline) and then
   doing what `Application.save` does after its insert: `complete_save` puts the aggregates in
   the repository's cache when one is configured (as `Application._record` does), takes the
   snapshots that are due (`Application._take_snapshots`), tells followers
   (`Application._notify`, a no-op unless the application is a leader in a system) and calls the
   deprecated public `notify()` hook.
2. An in-memory recorder that writes extra rows in the same "transaction" as the events:
   `POPORecorderWithExtras` overrides `POPOApplicationRecorder._insert_events` and uses its
   `_database_lock`, `_assert_uniqueness` and `_update_table`; subclasses see only
   `check_extras`, `write_extras` and `database_lock`.
3. Notifying the PostgreSQL channel that the library's subscriptions listen on, from our own
   insert transaction: `notify_subscribers` calls `PostgresApplicationRecorder._notify_channel`.

Every private name used is listed in `PRIVATE_NAMES` with the parameters it is called with, and
tests/services/test_eventsourcing_canary.py checks each against the installed library (present,
callable, same parameters) and the installed version against `SUPPORTED_VERSION_PREFIX`, so an
upgrade that changes one fails there first, naming it, rather than deep inside a behaviour test.
The pin in pyproject.toml (`eventsourcing>=9.5.6,<9.6`) exists because of this module.
Nothing else in the project may name a `_private` attribute of the library: add it here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Notification, Recording, StoredEvent
from eventsourcing.popo import POPOApplicationRecorder
from eventsourcing.utils import resolve_topic

if TYPE_CHECKING:  # services never import psycopg at run time (only adapters touch it)
    from eventsourcing.postgres import PostgresApplicationRecorder
    from psycopg import Cursor
    from psycopg.rows import DictRow

# The library versions this module was checked against: 9.5.x (pyproject pins >=9.5.6,<9.6).
SUPPORTED_VERSION_PREFIX = "9.5."
SUPPORTED_VERSION_LOWEST = (9, 5, 6)


@dataclass(frozen=True)
class PrivateName:
    """A private attribute of a library class that this module uses, and how it is called
    (`parameters` None: an attribute that is not called, checked on an instance)."""

    owner_topic: str  # "module:Class", resolved only when checked (PostgreSQL stays optional)
    name: str
    parameters: tuple[str, ...] | None

    def owner(self) -> type[Any]:
        owner: type[Any] = resolve_topic(self.owner_topic)
        return owner


_APPLICATION = "eventsourcing.application:Application"
_POPO_RECORDER = "eventsourcing.popo:POPOApplicationRecorder"
_POSTGRES_RECORDER = "eventsourcing.postgres:PostgresApplicationRecorder"

PRIVATE_NAMES: tuple[PrivateName, ...] = (
    PrivateName(_APPLICATION, "_take_snapshots", ("self", "processing_event")),
    PrivateName(_APPLICATION, "_notify", ("self", "recordings")),
    PrivateName(_POPO_RECORDER, "_insert_events", ("self", "stored_events", "kwargs")),
    PrivateName(_POPO_RECORDER, "_assert_uniqueness", ("self", "stored_events", "_")),
    PrivateName(_POPO_RECORDER, "_update_table", ("self", "stored_events", "_")),
    PrivateName(_POPO_RECORDER, "_database_lock", None),
    PrivateName(_POSTGRES_RECORDER, "_notify_channel", ("self", "curs")),
)


# After the insert: what `Application.save` does ---------------------------------------------

def complete_save(application: Application[UUID], events: Sequence[Any],
                  stored_events: Sequence[StoredEvent], aggregates: Mapping[UUID, Aggregate],
                  notification_ids: Sequence[int] | None) -> None:
    """Do what `Application.save` does after `recorder.insert_events`, for events inserted
    directly: update the aggregate cache, take due snapshots, notify followers and `notify()`."""
    repository = application.repository
    if repository.cache is not None and not repository.fastforward:
        for aggregate_id, aggregate in aggregates.items():
            repository.cache.put(aggregate_id, aggregate)
    processing_event: ProcessingEvent[UUID] = ProcessingEvent()
    processing_event.events.extend(events)
    processing_event.aggregates.update(aggregates)
    application._take_snapshots(processing_event)
    # `_notify` does nothing unless the application is a leader in a system; building the
    # recordings costs an object per event on the hot path, so only a real override gets them.
    if type(application)._notify is not Application._notify and notification_ids:
        application._notify(_recordings(events, stored_events, notification_ids))
    application.notify(events if isinstance(events, list) else list(events))


def _recordings(events: Sequence[Any], stored_events: Sequence[StoredEvent],
                notification_ids: Sequence[int]) -> list[Recording[UUID]]:
    return [Recording(event, Notification(id=n_id, originator_id=s.originator_id,
                                          originator_version=s.originator_version,
                                          topic=s.topic, state=s.state))
            for event, s, n_id in zip(events, stored_events, notification_ids, strict=True)]


# The in-memory recorder with extra rows ------------------------------------------------------

class POPORecorderWithExtras(POPOApplicationRecorder):
    """The library's in-memory application recorder, with a hook for extra rows written under
    the same lock as the events: `check_extras` may refuse the insert (raise `IntegrityError`)
    before anything is written, `write_extras` writes after the events."""

    def check_extras(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        """Refuse the insert before anything is written (raise); the default accepts it."""

    def write_extras(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        """Write the extra rows, after the events; the default writes none."""

    @contextmanager
    def database_lock(self) -> Iterator[None]:
        """Hold the recorder's one lock (reentrant), e.g. to read the extra rows."""
        with self._database_lock:
            yield

    def _insert_events(self, stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> Sequence[int] | None:
        with self._database_lock:
            self.check_extras(stored_events, **kwargs)
            self._assert_uniqueness(stored_events, **kwargs)
            notification_ids = self._update_table(stored_events, **kwargs)
            self.write_extras(stored_events, **kwargs)
            return notification_ids


# PostgreSQL ------------------------------------------------------------------------------------

def notify_subscribers(recorder: PostgresApplicationRecorder, curs: Cursor[DictRow]) -> None:
    """Send the NOTIFY that the library's subscriptions on `recorder` listen for, inside the
    caller's insert transaction (delivered when it commits)."""
    recorder._notify_channel(curs)
