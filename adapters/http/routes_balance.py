"""Money reads: a team's balance, and "may this account spend?".

Each answer is one read-model statement (`read_queries`) after the authorization check (one
version statement, `auth_cache`), and says the log position it reflects."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request
from pydantic import Field

from adapters.http.auth import (
    Principal,
    PrincipalDep,
    account_access,
    aggregates,
    team_access,
)
from adapters.http.problems import PROBLEM_RESPONSES, forbidden
from adapters.http.read_queries import spend_answer, team_view
from adapters.http.schemas import Freshness, Money, freshness, money
from adapters.http.views import views
from domain.roles import Action
from domain.tokens import Scope

router = APIRouter(tags=["reads"], responses=PROBLEM_RESPONSES)


class Balance(Freshness):
    team_id: str
    currency: str
    balance: Money = Field(description="credited - refunded + adjusted - spent")
    available: Money = Field(description="balance + credit limit: what may still be spent")
    credit_limit: Money
    low_balance_threshold: Money
    low_balance: bool
    suspended: bool
    credited: Money
    refunded: Money
    adjusted: Money
    spent: Money


@router.get("/v1/teams/{team_id}/balance", response_model=Balance)
def balance(team_id: UUID, request: Request, principal: Principal = PrincipalDep) -> Any:
    """The team's balance (owner, admin, billing, auditor)."""
    access = team_access(aggregates(request), principal, team_id, Action.VIEW_BILLING)
    with views(request) as store:
        fresh, view = team_view(store.conn, team_id)
    currency = access.team.currency
    values = view.as_dict() if view is not None else {}

    def m(name: str) -> dict[str, str]:
        return money(int(values.get(name, 0)), currency).model_dump()

    return {**fresh.as_dict(), "team_id": str(team_id), "currency": currency,
            "balance": m("balance_nanos"), "available": m("available_nanos"),
            "credit_limit": m("credit_limit_nanos"),
            "low_balance_threshold": m("low_balance_threshold_nanos"),
            "low_balance": bool(values.get("low_balance", False)),
            "suspended": bool(values.get("suspended", access.team.suspended)),
            "credited": m("credited_nanos"), "refunded": m("refunded_nanos"),
            "adjusted": m("adjusted_nanos"), "spent": m("spent_nanos")}


class SpendAnswer(Freshness):
    account_id: str
    allowed: bool
    blocked_by: str | None = Field(description="unknown_account, account_closed, "
                                   "account_suspended, team_suspended or team_balance_exhausted")
    team_id: str | None
    balance: Money | None
    available: Money | None


@router.get("/v1/accounts/{account_id}/authorization", response_model=SpendAnswer)
def authorization(account_id: UUID, request: Request,
                  principal: Principal = PrincipalDep) -> Any:
    """May this account spend now? Services with scope `authorization:read` and operators ask
    for any account; team users for the accounts they see."""
    source = aggregates(request)
    currency = None
    if not (principal.is_operator or principal.has_scope(Scope.READ_AUTHORIZATION)):
        if principal.is_service:
            raise forbidden("this needs a service token with scope 'authorization:read'")
        _account, access = account_access(source, principal, account_id)
        currency = access.team.currency
    with views(request) as store:
        answer, team_currency = spend_answer(store.conn, account_id)
    currency = currency or team_currency
    data = answer.as_dict()
    return {**freshness(data["position"], data["head_position"]), "account_id": str(account_id),
            "allowed": answer.allowed, "blocked_by": answer.blocked_by, "team_id": answer.team_id,
            "balance": money(answer.balance_nanos, currency).model_dump()
            if answer.balance_nanos is not None and currency else None,
            "available": money(answer.available_nanos, currency).model_dump()
            if answer.available_nanos is not None and currency else None}
