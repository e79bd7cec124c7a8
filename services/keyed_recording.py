"""Idempotency keys and ingest bookkeeping, written in the same transaction as the events.

The application passes three extra things to `save()`, which eventsourcing hands on to the
recorder's `insert_events(..., **kwargs)` inside the transaction that inserts the events:

- `idempotency_keys`: rows (scope, key, fingerprint, result). A usage record's `usage_id` and an
  admin command's idempotency key live here, so "already done" survives restarts and is shared by
  every process. A key inserted twice violates the primary key and the whole transaction fails,
  which is how two racing writers are kept from both charging.
- `usage_rejections`: why a usage record was refused (conflict, unknown or closed account...).
- `counters`: increments of named counters (duplicates, conflicts, rejections).

The in-memory recorder below gives the same semantics for the fast tests; the PostgreSQL one is
`adapters.postgres.event_store.LedgerPostgresRecorder`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from eventsourcing.persistence import IntegrityError, StoredEvent

from services.eventsourcing_seam import POPORecorderWithExtras

USAGE_SCOPE = "usage"
COMMAND_SCOPE = "command"


@dataclass(frozen=True, slots=True)
class KeyRow:
    scope: str
    key: str
    fingerprint: str
    result: str


@dataclass(frozen=True, slots=True)
class RejectionRow:
    usage_id: str
    account_id: str
    code: str
    message: str
    fingerprint: str
    rejected_at: datetime


@runtime_checkable
class KeyedRecorder(Protocol):
    def select_keys(self, scope: str, keys: Sequence[str]) -> dict[str, KeyRow]: ...

    def counter_values(self) -> dict[str, int]: ...

    def select_rejections(self, limit: int) -> list[RejectionRow]: ...


class InMemoryLedgerRecorder(POPORecorderWithExtras):
    """The library's in-memory recorder with the keyed extras, all under the recorder's one lock
    (through `services.eventsourcing_seam`, the only place that touches its private names)."""

    def __init__(self) -> None:
        super().__init__()
        self._keys: dict[tuple[str, str], KeyRow] = {}
        self._rejections: list[RejectionRow] = []
        self._counters: dict[str, int] = {}

    def check_extras(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        keys: Sequence[KeyRow] = kwargs.get("idempotency_keys") or ()
        new_keys = {(k.scope, k.key) for k in keys}
        duplicated = [k for k in new_keys if k in self._keys]
        if duplicated or len(new_keys) != len(keys):  # taken before, or twice in this batch
            raise IntegrityError(f"idempotency keys already recorded: {duplicated[:5]}")

    def write_extras(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        keys: Sequence[KeyRow] = kwargs.get("idempotency_keys") or ()
        self._keys.update({(k.scope, k.key): k for k in keys})
        self._rejections.extend(kwargs.get("usage_rejections") or ())
        counters: Mapping[str, int] = kwargs.get("counters") or {}
        for name, delta in counters.items():
            self._counters[name] = self._counters.get(name, 0) + delta

    def select_keys(self, scope: str, keys: Sequence[str]) -> dict[str, KeyRow]:
        with self.database_lock():
            found = (self._keys.get((scope, key)) for key in keys)
            return {row.key: row for row in found if row is not None}

    def counter_values(self) -> dict[str, int]:
        with self.database_lock():
            return dict(self._counters)

    def select_rejections(self, limit: int) -> list[RejectionRow]:
        with self.database_lock():
            return list(self._rejections[-limit:])
