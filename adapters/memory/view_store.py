"""The read models in memory: the in-memory counterpart of `PostgresViewStore`.

It keeps what it committed apart from the runner's folder, as the database does: a batch is
applied only if it starts at the tracking position (else `TrackingConflictError`, nothing
changed), and `load_folder` hands out copies. `ledger balance --as-of` folds history into one;
the auditor's tools and the contract tests (`tests/projections/test_view_store_contract.py`) run
on it. Staging does nothing: there is no second connection to overlap with. Like the PostgreSQL
store it keeps an outbox of the committed batches' view messages (`pending`, `mark_relayed`),
bounded by the same `OUTBOX_ROWS_MAX` and pruned the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, astuple, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from projections.answers import account_authorization, team_balance
from projections.audit_chain import GENESIS_HASH, AuditRow
from projections.authorization import AuthorizationAnswer
from projections.fold import ViewFolder
from projections.ports import FailureKind, ProjectionFailure, TrackingConflictError
from projections.view_messages import OUTBOX_ROWS_MAX, OutboxRow, encoded_view_messages
from projections.views import (
    AccountView,
    BatchChanges,
    InvoiceView,
    PackageAssignmentView,
    PaymentView,
    TeamView,
    TopUpView,
    UsageKey,
)
from projections.windows import BucketKey, UsageTotals


class MemoryViewStore:
    """Committed read models in dicts, with the tracking position and the chain head."""

    def __init__(self, head_position: Callable[[], int] | None = None,
                 outbox: bool = True) -> None:
        self.position = 0
        self.audit_head = GENESIS_HASH
        self.teams: dict[UUID, TeamView] = {}
        self.accounts: dict[UUID, AccountView] = {}
        self.invoices: dict[UUID, InvoiceView] = {}
        self.top_ups: dict[tuple[UUID, str], TopUpView] = {}
        self.payments: dict[UUID, PaymentView] = {}
        self.assignments: dict[tuple[UUID, datetime], PackageAssignmentView] = {}
        self.usage: dict[UsageKey, UsageTotals] = {}
        self.audit: list[AuditRow] = []
        self.recorded_failure: ProjectionFailure | None = None
        # Where the head of the log is read for freshness (none: the store's own position).
        self._head_position = head_position
        self.outbox_enabled = outbox
        self.outbox: list[OutboxRow] = []
        self._outbox_seq = 0
        self.outbox_rows_dropped = 0

    def close(self) -> None:
        """Nothing to close."""

    # Writing -------------------------------------------------------------------------------

    def load_folder(self) -> ViewFolder:
        return ViewFolder(position=self.position, audit_head=self.audit_head,
                          teams={k: replace(v) for k, v in self.teams.items()},
                          accounts={k: replace(v) for k, v in self.accounts.items()},
                          invoices={k: replace(v) for k, v in self.invoices.items()},
                          top_ups={k: replace(v) for k, v in self.top_ups.items()},
                          payments={k: replace(v) for k, v in self.payments.items()})

    def stage(self, changes: BatchChanges) -> BatchChanges:
        return changes

    def finish(self, staged: BatchChanges) -> None:
        self.commit(staged)

    def abort(self, staged: BatchChanges) -> None:
        """Nothing was written."""

    def commit(self, changes: BatchChanges) -> None:
        """Apply one batch and move the tracking position, or raise and change nothing."""
        if changes.first_position != self.position:
            raise TrackingConflictError(
                f"read models in memory are at position {self.position}, not at "
                f"{changes.first_position} where the batch starts: it was applied already, "
                "or another runner writes them")
        self.teams.update((k, replace(v)) for k, v in changes.teams.items())
        self.accounts.update((k, replace(v)) for k, v in changes.accounts.items())
        self.invoices.update((k, replace(v)) for k, v in changes.invoices.items())
        self.top_ups.update((k, replace(v)) for k, v in changes.top_ups.items())
        self.payments.update((k, replace(v)) for k, v in changes.payments.items())
        self.assignments.update(changes.assignments)
        for key, sums in changes.usage.items():
            self.usage.setdefault(key, UsageTotals()).add(UsageTotals(*sums))
        self.audit.extend(changes.audit)
        self.audit_head = changes.audit_head or self.audit_head
        self.position = changes.last_position
        if self.outbox_enabled:
            self._append_outbox(changes)

    def _append_outbox(self, changes: BatchChanges) -> None:
        for subject, payload in encoded_view_messages(changes):
            self._outbox_seq += 1
            self.outbox.append(OutboxRow(self._outbox_seq, changes.last_position, subject,
                                         payload))
        if len(self.outbox) <= OUTBOX_ROWS_MAX:
            return
        latest = {row.subject: row.seq for row in self.outbox}
        kept = [row for row in self.outbox if latest[row.subject] == row.seq][-OUTBOX_ROWS_MAX:]
        self.outbox_rows_dropped += len(self.outbox) - len(kept)
        self.outbox = kept

    # The outbox, the relay's side -----------------------------------------------------------

    def pending(self, limit: int) -> list[OutboxRow]:
        return self.outbox[:limit]

    def mark_relayed(self, up_to_seq: int) -> None:
        self.outbox = [row for row in self.outbox if row.seq > up_to_seq]

    # Status --------------------------------------------------------------------------------

    def failure(self) -> ProjectionFailure | None:
        return self.recorded_failure

    def record_failure(self, failure: ProjectionFailure) -> None:
        count = self.recorded_failure.failures + 1 if self.recorded_failure else 1
        self.recorded_failure = replace(failure, failures=count)

    def clear_failure(self) -> None:
        self.recorded_failure = None

    @staticmethod
    def failure_kind(error: BaseException) -> FailureKind:
        if isinstance(error, TrackingConflictError):
            return FailureKind.RUNNER
        return FailureKind.EVENT  # memory has no connection to lose

    def reconnect(self) -> None:
        """Nothing to reconnect."""

    # Reading -------------------------------------------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[tuple[int, int]]:
        """(position, head): nothing changes under a reader in one thread."""
        head = self._head_position() if self._head_position is not None else self.position
        yield self.position, head

    def team(self, team_id: UUID) -> TeamView | None:
        return self.teams.get(team_id)

    def account(self, account_id: UUID) -> AccountView | None:
        return self.accounts.get(account_id)

    def accounts_of(self, team_id: UUID) -> list[AccountView]:
        return sorted((a for a in self.accounts.values() if a.team_id == team_id),
                      key=lambda a: a.account_key)

    def assignments_of(self, team_id: UUID) -> list[PackageAssignmentView]:
        return sorted((a for a in self.assignments.values() if a.team_id == team_id),
                      key=lambda a: (str(a.account_id), a.effective_from))

    def usage_buckets(self, team: TeamView, now: datetime) -> dict[BucketKey, UsageTotals]:
        return {(str(account_id), model, day): totals
                for (team_id, account_id, model, day), totals in self.usage.items()
                if team_id == team.team_id}

    def invoices_of(self, team_id: UUID) -> list[dict[str, Any]]:
        return [asdict(i) for i in sorted(
            (i for i in self.invoices.values() if i.team_id == team_id),
            key=lambda i: (i.period_start, i.invoice_id))]

    def top_ups_of(self, team_id: UUID) -> list[dict[str, Any]]:
        return [asdict(t) for t in sorted(
            (t for t in self.top_ups.values() if t.team_id == team_id),
            key=lambda t: (t.credited_at, t.top_up_id))]

    def payments_of(self, team_id: UUID) -> list[dict[str, Any]]:
        return [asdict(p) for p in sorted(
            (p for p in self.payments.values() if p.team_id == team_id),
            key=lambda p: (p.started_at, p.payment_id))]

    def balance(self, team_id: UUID, now: datetime) -> dict[str, Any] | None:
        return team_balance(self, team_id, now)

    def authorize(self, account_id: UUID) -> AuthorizationAnswer:
        return account_authorization(self, account_id)

    # For the auditor's tools ---------------------------------------------------------------

    def audited(self) -> tuple[int, bytes]:
        return self.position, self.audit_head

    def audit_rows(self, up_to: int) -> Iterator[AuditRow]:
        return (row for row in self.audit if row.position <= up_to)

    def table_rows(self, table: str) -> Iterator[str]:
        """A table's rows in key order, as the text of the row's values."""
        rows: list[tuple[Any, ...]]
        if table == "teams":
            rows = sorted(t.row() for t in self.teams.values())
        elif table == "accounts":
            rows = sorted(a.row() for a in self.accounts.values())
        elif table == "usage_daily":
            rows = sorted((team_id, day, account_id, model, *astuple(totals))
                          for (team_id, account_id, model, day), totals in self.usage.items())
        elif table == "audit":
            rows = sorted(self.audit)
        elif table == "invoices":
            rows = sorted(astuple(i) for i in self.invoices.values())
        elif table == "top_ups":
            rows = sorted(astuple(t) for t in self.top_ups.values())
        elif table == "payments":
            rows = sorted(astuple(p) for p in self.payments.values())
        elif table == "package_assignments":
            rows = sorted(astuple(a) for a in self.assignments.values())
        else:
            raise ValueError(f"no read-model table {table!r}")
        return (repr(row) for row in rows)
