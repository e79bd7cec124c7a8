"""The ports of the read side: what the projections and the auditor's tools need from outside.

Implementations: PostgreSQL in `adapters/postgres/` (`PostgresNotificationLog`,
`PostgresViewStore`, `PostgresAuditTrail`), memory in `adapters/memory/` (the same cases run on
both: `tests/projections/test_view_store_contract.py`), NATS for `ChangePublisher`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from projections.audit_chain import AuditRow
from projections.decoding import LogEntry
from projections.fold import ViewFolder
from projections.views import AccountView, BatchChanges, PackageAssignmentView, TeamView
from projections.windows import BucketKey, UsageTotals


class FailureKind(enum.Enum):
    TRANSIENT = "transient"  # retry: the database or the network, not the event
    EVENT = "event"  # an event cannot be projected: find it, record it, stop
    RUNNER = "runner"  # the runner cannot go on (another runner writes): record, stop


@dataclass(frozen=True)
class ProjectionFailure:
    """Why the projections stopped: the event that failed (if one did), its position, the error."""

    position: int  # the log position of the event (or, without one, the last committed + 1)
    aggregate_id: UUID | None
    aggregate_version: int | None
    event_type: str | None
    error: str
    failures: int = 1  # how many times it was recorded (restarts that failed again included)

    def describe(self) -> str:
        what = (f"event {self.event_type} (aggregate {self.aggregate_id} version "
                f"{self.aggregate_version})" if self.aggregate_id is not None else "batch")
        return (f"projections stopped at log position {self.position}: {what} could not be "
                f"projected: {self.error} (recorded {self.failures} time(s); fix the cause and "
                "restart the projections to resume from there)")


class TrackingConflictError(RuntimeError):
    """The store is no longer at the position a batch starts from: another runner wrote it (or
    the batch was applied already). The batch is not written."""


class LogReader(Protocol):
    """The notification log, read forwards: events after `position`, at most `limit`, in
    position order, up to `stop` (inclusive) if given."""

    def read_after(self, position: int, limit: int, stop: int | None = None) -> list[LogEntry]:
        ...

    def head_position(self) -> int: ...


class NotificationLog(LogReader, Protocol):
    """The log as the runner follows it."""

    def wait_for_new(self, timeout_seconds: float) -> None: ...

    def reconnect(self) -> None: ...


class Decoder(Protocol):
    def decode(self, entry: LogEntry) -> Any: ...


class ViewStore(Protocol):
    """Where batches go. A batch is written in two steps: `stage` (in the folding thread: the
    row formatting, in an open transaction) and `finish` (in the committer thread: the rest and
    the commit, with the tracking position), so the next batch is folded and staged while the
    previous one commits. `abort` rolls back a staged batch that will not be finished. A batch
    whose `first_position` is not the store's tracking position raises `TrackingConflictError`
    and changes nothing."""

    def load_folder(self) -> ViewFolder: ...

    def stage(self, changes: BatchChanges) -> Any: ...

    def finish(self, staged: Any) -> None: ...

    def abort(self, staged: Any) -> None: ...

    def failure(self) -> ProjectionFailure | None: ...

    def record_failure(self, failure: ProjectionFailure) -> None: ...

    def clear_failure(self) -> None: ...

    def failure_kind(self, error: BaseException) -> FailureKind: ...

    def reconnect(self) -> None: ...


class ViewReader(Protocol):
    """The read models as answers read them, inside `snapshot()` for one consistent view."""

    def snapshot(self) -> AbstractContextManager[tuple[int, int]]:
        """One consistent view for the `with` block, and the (position, head) it reflects."""
        ...

    def team(self, team_id: UUID) -> TeamView | None: ...

    def accounts_of(self, team_id: UUID) -> list[AccountView]: ...

    def assignments_of(self, team_id: UUID) -> list[PackageAssignmentView]:
        """The package assignments of the team's accounts, by account and start."""
        ...

    def usage_buckets(self, team: TeamView, now: datetime) -> dict[BucketKey, UsageTotals]: ...


class ComparableViews(ViewReader, Protocol):
    """Read models that replay can compare: each table's rows in key order, as text in a form
    that is the same for equal rows of the same store kind."""

    def table_rows(self, table: str) -> Iterator[str]: ...


class ReplayTarget(ViewStore, ComparableViews, Protocol):
    """A fresh, empty store that replay rebuilds the read models into, closed after use."""

    def close(self) -> None: ...


class AuditTrail(Protocol):
    """The audit rows and the chain head kept with the tracking position, from one snapshot."""

    def audited(self) -> tuple[int, bytes]:
        """(the position the audit trail reaches, the chain head recorded with it)."""
        ...

    def audit_rows(self, up_to: int) -> Iterator[AuditRow]:
        """Every audit row at or below `up_to`, in position order."""
        ...


class ChangePublisher(Protocol):
    def publish(self, messages: list[tuple[str, dict[str, Any]]]) -> None: ...
