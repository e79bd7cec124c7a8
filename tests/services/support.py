"""Builders for service tests: a team with an owner, a package, accounts with it assigned."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from adapters.runtime.priced_teams import numbered_keys, open_priced_team
from domain.pricing import PriceTerms
from domain.usage import UsageRecord
from services.actor import Actor
from services.ledger import Ledger

OWNER = Actor("olivia")
OPERATOR = Actor.operator("ops")
SINCE = datetime(2026, 1, 1, tzinfo=UTC)
STANDARD = PriceTerms(request_nanos=1_000_000, input_token_nanos=3_000,
                      cached_input_token_nanos=300, output_token_nanos=15_000)


@dataclass(frozen=True)
class TeamSetup:
    team_id: UUID
    package_id: UUID
    account_ids: list[UUID]


def team_with_accounts(ledger: Ledger, accounts: int = 2, key: str = "acme") -> TeamSetup:
    team = open_priced_team(ledger, team_key=key, terms=STANDARD, owner=OWNER, operator=OPERATOR,
                            package_key=f"{key}-std", timezone="Europe/Berlin", since=SINCE,
                            account_keys=numbered_keys("seat-", accounts))
    return TeamSetup(team.team_id, team.package_id, team.account_ids)


def usage(account_id: UUID, usage_id: str, *, minutes: int = 0, input_tokens: int = 1000,
          output_tokens: int = 100, success: bool = True) -> UsageRecord:
    return UsageRecord(usage_id=usage_id, account_id=account_id,
                       occurred_at=SINCE + timedelta(days=30, minutes=minutes), model="gpt-x",
                       success=success, input_tokens=input_tokens, output_tokens=output_tokens,
                       cached_input_tokens=0)


def expected_cost(record: UsageRecord) -> int:
    return STANDARD.cost_nanos(success=record.success, input_tokens=record.input_tokens,
                               cached_input_tokens=record.cached_input_tokens,
                               output_tokens=record.output_tokens)


def team_balance_nanos(ledger: Ledger, team_id: UUID) -> int:
    """The accounting identity from the aggregates: credits - refunds + adjustments - spend."""
    team = ledger.get_team(team_id)
    spent = sum(ledger.get_account(a).spent_nanos for a in team.account_ids)
    return (sum(team.top_ups.values()) - sum(team.refunds.values())
            + sum(team.adjustments.values()) - spent)
