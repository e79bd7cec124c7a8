"""What a usage batch did, record by record: recorded, duplicate, or rejected with a reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID


class RejectionCode:
    CONFLICT = "usage_conflict"
    UNKNOWN_ACCOUNT = "unknown_account"
    ACCOUNT_CLOSED = "account_closed"
    NO_PACKAGE_IN_FORCE = "no_package_in_force"


@dataclass(frozen=True, slots=True)
class RecordedUsage:
    usage_id: str
    account_id: UUID
    team_id: UUID
    cost_nanos: int


@dataclass(frozen=True, slots=True)
class UsageRejection:
    usage_id: str
    account_id: UUID
    code: str
    message: str


@dataclass
class UsageBatchOutcome:
    recorded: list[RecordedUsage] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejections: list[UsageRejection] = field(default_factory=list)

    @property
    def cost_nanos(self) -> int:
        return sum(r.cost_nanos for r in self.recorded)


# Counters kept with the events (the recorder adds each batch's increments in its transaction).
COUNTER_RECORDED = "usage_recorded"
COUNTER_DUPLICATES = "usage_duplicates"
COUNTER_CONFLICTS = "usage_conflicts"
COUNTER_REJECTED = "usage_rejected"
