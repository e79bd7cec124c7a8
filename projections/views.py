"""The read-model rows, the one balance formula, and the changes a batch of events makes.

Money rules (all int nanos), held in one place, `TeamView`:
    balance   = credited - refunded + adjusted - spent
    available = balance + credit_limit
    low_balance  when balance < low_balance_threshold (strictly below; with a threshold of 0 a
                 team is low as soon as its balance is negative)
`spent` is the sum of `Account.UsageRecorded.cost_nanos` over the team's accounts.

Field order of each view is the column order of its table (stores write and read rows in it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from uuid import UUID

from projections.audit_chain import AuditRow

# The read-model tables, in the order they are created and compared by replay.
READ_MODEL_TABLES = ("teams", "accounts", "usage_daily", "audit", "invoices", "top_ups",
                     "payments", "package_assignments")


@dataclass
class TeamView:
    team_id: UUID
    name: str
    currency: str
    timezone: str
    credit_limit_nanos: int = 0
    low_balance_threshold_nanos: int = 0
    suspended: bool = False
    credited_nanos: int = 0
    refunded_nanos: int = 0
    adjusted_nanos: int = 0
    spent_nanos: int = 0
    position: int = 0  # log position of the last event that changed this row
    # Batch bookkeeping, not part of the row: set while a batch is folded, cleared after.
    dirty: bool = field(default=False, compare=False, repr=False)
    audit_dirty: bool = field(default=False, compare=False, repr=False)

    @property
    def balance_nanos(self) -> int:
        return self.credited_nanos - self.refunded_nanos + self.adjusted_nanos - self.spent_nanos

    @property
    def available_nanos(self) -> int:
        return self.balance_nanos + self.credit_limit_nanos

    @property
    def low_balance(self) -> bool:
        return self.balance_nanos < self.low_balance_threshold_nanos

    def row(self) -> tuple[Any, ...]:
        """The row as the `teams` table holds it, in column order."""
        return (self.team_id, self.name, self.currency, self.timezone, self.credit_limit_nanos,
                self.low_balance_threshold_nanos, self.suspended, self.credited_nanos,
                self.refunded_nanos, self.adjusted_nanos, self.spent_nanos, self.position)

    def as_dict(self) -> dict[str, Any]:
        return {
            "team_id": str(self.team_id), "name": self.name, "currency": self.currency,
            "timezone": self.timezone, "balance_nanos": self.balance_nanos,
            "available_nanos": self.available_nanos,
            "credit_limit_nanos": self.credit_limit_nanos,
            "low_balance_threshold_nanos": self.low_balance_threshold_nanos,
            "low_balance": self.low_balance, "suspended": self.suspended,
            "credited_nanos": self.credited_nanos, "refunded_nanos": self.refunded_nanos,
            "adjusted_nanos": self.adjusted_nanos, "spent_nanos": self.spent_nanos,
        }


@dataclass
class AccountView:
    account_id: UUID
    team_id: UUID
    account_key: str
    name: str
    status: str = "active"
    usage_count: int = 0
    spent_nanos: int = 0
    position: int = 0
    holder_user_id: str | None = None  # the team member the account is given to, if any
    kind: str = ""  # domain.account.AccountKind's value
    dirty: bool = field(default=False, compare=False, repr=False)
    # This batch's usage sums of the account, by (model, local date): six ints in the order of
    # the `windows.UsageTotals` fields. Moved into `BatchChanges.usage` when the batch is folded.
    pending_usage: dict[tuple[str, date], list[int]] | None = field(
        default=None, compare=False, repr=False)

    actor: str = field(default="", compare=False, repr=False)
    id_bytes: bytes = field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        # Usage carries no user: it is attributed to the account that made the request.
        self.actor = f"account:{self.account_id}"
        self.id_bytes = self.account_id.bytes

    def row(self) -> tuple[Any, ...]:
        """The row as the `accounts` table holds it, in column order."""
        return (self.account_id, self.team_id, self.account_key, self.name, self.status,
                self.usage_count, self.spent_nanos, self.position, self.holder_user_id,
                self.kind)


@dataclass(frozen=True)
class PackageAssignmentView:
    """A package version assigned to an account from a moment on (assignments of an account
    only ever start later than the last one: `domain.account.Account.assign_package`)."""

    account_id: UUID
    effective_from: datetime
    team_id: UUID
    package_id: UUID
    package_version: int
    package_name: str
    position: int = 0


@dataclass
class InvoiceView:
    invoice_id: UUID
    team_id: UUID
    currency: str
    period_start: str
    period_end: str
    status: str
    subtotal_nanos: int
    number: str | None = None
    total_minor: int | None = None
    credited_nanos: int = 0
    payment_reference: str | None = None
    position: int = 0


@dataclass
class TopUpView:
    team_id: UUID
    top_up_id: str
    amount_nanos: int
    amount_minor: int
    currency: str
    credited_at: datetime
    refunded_nanos: int = 0
    position: int = 0


@dataclass
class PaymentView:
    """A Stripe payment the ledger started, whatever became of it: failed and canceled payments
    are kept visible, though they change no balance (the credit is the team's own event)."""

    payment_id: UUID
    team_id: UUID
    status: str
    amount_nanos: int
    amount_minor: int
    currency: str
    started_at: datetime
    started_by: str
    stripe_object_id: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    credited_nanos: int = 0
    reversed_nanos: int = 0
    position: int = 0


# (team_id, account_id, model, local date)
UsageKey = tuple[UUID, UUID, str, date]


@dataclass
class BatchChanges:
    first_position: int  # the tracking position the batch starts from (exclusive)
    last_position: int = 0
    teams: dict[UUID, TeamView] = field(default_factory=dict)
    accounts: dict[UUID, AccountView] = field(default_factory=dict)
    invoices: dict[UUID, InvoiceView] = field(default_factory=dict)
    top_ups: dict[tuple[UUID, str], TopUpView] = field(default_factory=dict)
    payments: dict[UUID, PaymentView] = field(default_factory=dict)
    assignments: dict[tuple[UUID, datetime], PackageAssignmentView] = field(
        default_factory=dict)
    # Sums to add per bucket: six ints in the order of the `windows.UsageTotals` fields.
    usage: dict[UsageKey, list[int]] = field(default_factory=dict)
    audit: list[AuditRow] = field(default_factory=list)
    # Teams with new audit rows in this batch (bookkeeping for the fold's flags).
    audit_teams: set[UUID] = field(default_factory=set)
    events: int = 0

    @property
    def audit_head(self) -> bytes | None:
        """The chain head after this batch, or None if it adds no audit row."""
        return self.audit[-1].hash if self.audit else None
