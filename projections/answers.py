"""The answers people read: a team's balance and usage windows, an account's authorization, each
with the log position behind it.

Every store answers through these functions (the live PostgreSQL read models, the in-memory ones,
and `ledger balance --as-of`, a replay in memory), so "as of" and "now" cannot disagree on how an
answer is put together.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from projections.authorization import AuthorizationAnswer, Freshness, decide
from projections.ports import ViewReader
from projections.views import AccountView, TeamView
from projections.windows import BucketKey, UsageTotals, report_from_buckets


class BalanceReader(ViewReader, Protocol):
    def invoices_of(self, team_id: UUID) -> list[dict[str, Any]]: ...

    def top_ups_of(self, team_id: UUID) -> list[dict[str, Any]]: ...


class AccountReader(ViewReader, Protocol):
    def account(self, account_id: UUID) -> AccountView | None: ...


def balance_answer(team: TeamView, accounts: list[AccountView],
                   buckets: dict[BucketKey, UsageTotals], now: datetime,
                   freshness: Freshness) -> dict[str, Any]:
    report = report_from_buckets(buckets, now, team.timezone)
    return {
        **freshness.as_dict(),
        "as_of": now.isoformat(),
        "balance": team.as_dict(),
        "accounts": [{"account_id": str(a.account_id), "account_key": a.account_key,
                      "name": a.name, "status": a.status, "usage_count": a.usage_count,
                      "spent_nanos": a.spent_nanos} for a in accounts],
        "usage": report.as_dict(),
    }


def team_balance(reader: BalanceReader, team_id: UUID, now: datetime) -> dict[str, Any] | None:
    """A team's balance, accounts, usage windows, invoices and top-ups, from one snapshot."""
    with reader.snapshot() as (position, head):
        team = reader.team(team_id)
        if team is None:
            return None
        answer = balance_answer(team, reader.accounts_of(team_id),
                                reader.usage_buckets(team, now), now, Freshness(position, head))
        answer["invoices"] = reader.invoices_of(team_id)
        answer["top_ups"] = reader.top_ups_of(team_id)
    return answer


def account_authorization(reader: AccountReader, account_id: UUID) -> AuthorizationAnswer:
    """May this account spend now? From the read models, with the position they reflect."""
    with reader.snapshot() as (position, head):
        account = reader.account(account_id)
        team = reader.team(account.team_id) if account is not None else None
    return decide(str(account_id), account, team, Freshness(position, head))
