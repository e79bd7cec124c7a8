"""Money reads: a team's balance, and "may this account spend?".

Each answer is one read-model statement (`read_queries`) after the authorization check (one
version statement, `auth_cache`), and says the log position it reflects. Both are lean reads
(`fast_answers`): one hop to the thread pool, the answer written as JSON without a second
validation."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Request, Response
from pydantic import Field

from adapters.http.auth import account_access, aggregates, require_principal, team_access
from adapters.http.fast_answers import in_thread, json_answer, money_json
from adapters.http.problems import PROBLEM_RESPONSES, forbidden
from adapters.http.read_queries import spend_answer, team_view
from adapters.http.schemas import Freshness, Money, freshness
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
async def balance(team_id: UUID, request: Request) -> Response:
    """The team's balance (owner, admin, billing, auditor)."""
    return await in_thread(_balance, request, team_id)


def _balance(request: Request, team_id: UUID) -> Response:
    principal = require_principal(request)
    access = team_access(aggregates(request), principal, team_id, Action.VIEW_BILLING)
    with views(request) as store:
        fresh, view = team_view(store.conn, team_id)
    currency = access.team.currency
    values = view.as_dict() if view is not None else {}

    def m(name: str) -> dict[str, str]:
        return money_json(int(values.get(name, 0)), currency)

    return json_answer({**fresh.as_dict(), "team_id": str(team_id), "currency": currency,
            "balance": m("balance_nanos"), "available": m("available_nanos"),
            "credit_limit": m("credit_limit_nanos"),
            "low_balance_threshold": m("low_balance_threshold_nanos"),
            "low_balance": bool(values.get("low_balance", False)),
            "suspended": bool(values.get("suspended", access.team.suspended)),
            "credited": m("credited_nanos"), "refunded": m("refunded_nanos"),
            "adjusted": m("adjusted_nanos"), "spent": m("spent_nanos")})


class SpendAnswer(Freshness):
    account_id: str
    allowed: bool
    blocked_by: str | None = Field(description="unknown_account, account_closed, "
                                   "account_suspended, team_suspended or team_balance_exhausted")
    team_id: str | None
    balance: Money | None
    available: Money | None


@router.get("/v1/accounts/{account_id}/authorization", response_model=SpendAnswer)
async def authorization(account_id: UUID, request: Request) -> Response:
    """May this account spend now? Services with scope `authorization:read` and operators ask
    for any account; team users for the accounts they see."""
    return await in_thread(_authorization, request, account_id)


def _authorization(request: Request, account_id: UUID) -> Response:
    principal = require_principal(request)
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
    return json_answer({
        **freshness(data["position"], data["head_position"]), "account_id": str(account_id),
        "allowed": answer.allowed, "blocked_by": answer.blocked_by, "team_id": answer.team_id,
        "balance": money_json(answer.balance_nanos, currency)
        if answer.balance_nanos is not None and currency else None,
        "available": money_json(answer.available_nanos, currency)
        if answer.available_nanos is not None and currency else None})
