"""The authorization query, "may account A spend now?", answered from the read models.

Order of the checks, first match wins, so the answer names the most fundamental block:
unknown_account, account_closed, account_suspended, team_suspended, team_balance_exhausted.
A team may spend while its available balance (balance + credit limit) is above zero; at zero or
below the balance is exhausted. Usage that happens anyway is still recorded (it is a fact); this
answer is what the gateway asks before a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from projections.views import AccountView, TeamView

UNKNOWN_ACCOUNT = "unknown_account"
ACCOUNT_CLOSED = "account_closed"
ACCOUNT_SUSPENDED = "account_suspended"
TEAM_SUSPENDED = "team_suspended"
TEAM_BALANCE_EXHAUSTED = "team_balance_exhausted"


@dataclass(frozen=True)
class Freshness:
    """Which log position an answer reflects, and how far behind the head of the log it is."""

    position: int
    head_position: int

    @property
    def lag_events(self) -> int:
        # Positions can have gaps (rolled-back inserts), so this is an upper bound.
        return max(self.head_position - self.position, 0)

    def as_dict(self) -> dict[str, int]:
        return {"position": self.position, "head_position": self.head_position,
                "lag_events": self.lag_events}


@dataclass(frozen=True)
class AuthorizationAnswer:
    account_id: str
    allowed: bool
    blocked_by: str | None
    team_id: str | None
    balance_nanos: int | None
    available_nanos: int | None
    freshness: Freshness

    def as_dict(self) -> dict[str, Any]:
        return {"account_id": self.account_id, "allowed": self.allowed,
                "blocked_by": self.blocked_by, "team_id": self.team_id,
                "balance_nanos": self.balance_nanos, "available_nanos": self.available_nanos,
                **self.freshness.as_dict()}


def decide(account_id: str, account: AccountView | None, team: TeamView | None,
           freshness: Freshness) -> AuthorizationAnswer:
    if account is None or team is None:
        return AuthorizationAnswer(account_id, False, UNKNOWN_ACCOUNT, None, None, None,
                                   freshness)
    blocked_by: str | None = None
    if account.status == "closed":
        blocked_by = ACCOUNT_CLOSED
    elif account.status == "suspended":
        blocked_by = ACCOUNT_SUSPENDED
    elif team.suspended:
        blocked_by = TEAM_SUSPENDED
    elif team.available_nanos <= 0:
        blocked_by = TEAM_BALANCE_EXHAUSTED
    return AuthorizationAnswer(account_id, blocked_by is None, blocked_by, str(team.team_id),
                               team.balance_nanos, team.available_nanos, freshness)
