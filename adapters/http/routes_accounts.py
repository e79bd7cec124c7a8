"""The account pool: list (status, package in force, holder, spend today and this month), open,
give to a member, assign a package from a moment, suspend, reactivate, close.

A member sees only the accounts they hold; every other role of the team sees the whole pool."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field

from adapters.http.auth import (
    Principal,
    PrincipalDep,
    account_access,
    aggregates,
    authenticator,
    team_access,
)
from adapters.http.commands import call, ledger_key, run_idempotent
from adapters.http.problems import PROBLEM_RESPONSES
from adapters.http.schemas import (
    IDEMPOTENCY_KEY_DESCRIPTION,
    Freshness,
    Money,
    Reason,
    Text,
    freshness,
    money,
)
from adapters.http.schemas import Request as Body
from adapters.http.views import views
from domain.account import Account
from domain.roles import Action
from domain.team import Team
from projections.views import AccountView, PackageAssignmentView
from projections.windows import report_from_buckets
from services.ledger import Ledger

router = APIRouter(tags=["accounts"], responses=PROBLEM_RESPONSES)
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key",
                                              description=IDEMPOTENCY_KEY_DESCRIPTION)]


class PackageInForce(BaseModel):
    package_id: str
    package_version: int
    package_name: str
    effective_from: datetime


class AccountInfo(BaseModel):
    account_id: str
    team_id: str
    account_key: str
    name: str
    kind: str
    status: str
    holder_user_id: str | None
    package: PackageInForce | None = Field(description="The assignment in force now")
    upcoming_packages: list[PackageInForce] = Field(description="Assignments that start later")
    spend_today: Money | None = Field(default=None, description="From the read models")
    spend_month: Money | None = None


class AccountAnswer(AccountInfo, Freshness):
    pass


class AccountPool(Freshness):
    team_id: str
    accounts: list[AccountInfo]


class OpenAccount(Body):
    account_key: Text
    name: Text
    kind: Literal["seat", "service_key"] = "seat"
    holder_user_id: Text | None = None


class AssignHolder(Body):
    user_id: Text | None = Field(description="A member of the team, or null for nobody")


class AssignPackage(Body):
    package_id: UUID
    package_version: int | None = Field(default=None, ge=1, le=1_000_000,
                                        description="Default: the latest version")
    effective_from: AwareDatetime | None = Field(default=None, description="Default: now")


class Reasoned(Body):
    reason: Reason


def _ledger(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


def _assignment(entry: dict[str, Any]) -> dict[str, Any]:
    return {"package_id": str(entry["package_id"]), "package_version": entry["package_version"],
            "package_name": entry["package_name"], "effective_from": entry["effective_from"]}


def account_info(account: Account, team: Team, now: datetime,
                 spend: dict[str, tuple[int, int]] | None = None) -> dict[str, Any]:
    current = [a for a in account.assignments if a["effective_from"] <= now]
    later = [a for a in account.assignments if a["effective_from"] > now]
    today, month = (spend or {}).get(str(account.id), (0, 0))
    return {
        "account_id": str(account.id), "team_id": str(account.team_id),
        "account_key": account.account_key, "name": account.name, "kind": account.kind.value,
        "status": account.status.value, "holder_user_id": account.holder_user_id,
        "package": _assignment(current[-1]) if current else None,
        "upcoming_packages": [_assignment(a) for a in later],
        "spend_today": money(today, team.currency).model_dump() if spend is not None else None,
        "spend_month": money(month, team.currency).model_dump() if spend is not None else None,
    }


def _spend_of(store: Any, team_id: UUID, now: datetime) -> dict[str, tuple[int, int]]:
    """Cost per account today and this month, from the read models (inside a snapshot)."""
    team_view = store.team(team_id)
    if team_view is None:
        return {}
    report = report_from_buckets(store.usage_buckets(team_view, now), now, team_view.timezone)

    def cost(window: str, account_id: str) -> int:
        totals = report.by_account[window].get(account_id)
        return totals.cost_nanos if totals is not None else 0

    accounts = set(report.by_account["today"]) | set(report.by_account["month"])
    return {a: (cost("today", a), cost("month", a)) for a in accounts}


def _spend(request: Request, team_id: UUID, now: datetime
           ) -> tuple[dict[str, tuple[int, int]], dict[str, Any]]:
    """Cost per account today and this month, from the read models, with their freshness."""
    with views(request) as store, store.snapshot() as (position, head):
        spend = _spend_of(store, team_id, now)
    return spend, freshness(position, head)


def _pool_entry(view: AccountView, assignments: list[PackageAssignmentView], currency: str,
                now: datetime, spend: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """`account_info` from the read models' rows instead of the aggregate."""
    entries: list[dict[str, Any]] = [
        {"package_id": a.package_id, "package_version": a.package_version,
         "package_name": a.package_name, "effective_from": a.effective_from}
        for a in assignments]
    current = [a for a in entries if a["effective_from"] <= now]
    later = [a for a in entries if a["effective_from"] > now]
    today, month = spend.get(str(view.account_id), (0, 0))
    return {
        "account_id": str(view.account_id), "team_id": str(view.team_id),
        "account_key": view.account_key, "name": view.name, "kind": view.kind,
        "status": view.status, "holder_user_id": view.holder_user_id,
        "package": _assignment(current[-1]) if current else None,
        "upcoming_packages": [_assignment(a) for a in later],
        "spend_today": money(today, currency).model_dump(),
        "spend_month": money(month, currency).model_dump(),
    }


@router.get("/v1/teams/{team_id}/accounts", response_model=AccountPool)
def list_accounts(team_id: UUID, request: Request, principal: Principal = PrincipalDep) -> Any:
    """The account pool (a member: only the accounts they hold), from the read models in one
    snapshot: no account aggregate is loaded, so a pool of thousands answers in a few
    statements. Like every read it says the log position it reflects: an account opened a
    moment ago is listed once the projections have reached it."""
    access = team_access(aggregates(request), principal, team_id)
    now = request.app.state.clock()
    currency = access.team.currency
    with views(request) as store, store.snapshot() as (position, head):
        spend = _spend_of(store, team_id, now)
        accounts = store.accounts_of(team_id)
        assignments: dict[UUID, list[PackageAssignmentView]] = {}
        for assignment in store.assignments_of(team_id):
            assignments.setdefault(assignment.account_id, []).append(assignment)
    visible = [a for a in accounts
               if access.sees_all_accounts or a.holder_user_id == principal.user_id]
    return {**freshness(position, head), "team_id": str(team_id),
            "accounts": [_pool_entry(a, assignments.get(a.account_id, []), currency, now, spend)
                         for a in visible]}


@router.post("/v1/teams/{team_id}/accounts", status_code=201, response_model=AccountAnswer)
def open_account(team_id: UUID, body: OpenAccount, request: Request,
                 idempotency_key: IdempotencyKey = None,
                 principal: Principal = PrincipalDep) -> JSONResponse:
    """Open an account in the pool (owner/admin)."""
    ledger = _ledger(request)
    team_access(aggregates(request), principal, team_id, Action.OPEN_ACCOUNT)

    def run() -> tuple[int, Any]:
        account_id = call(ledger.open_account, team_id, account_key=body.account_key,
                          name=body.name, kind=body.kind, holder_user_id=body.holder_user_id,
                          actor=principal.actor(),
                          idempotency_key=ledger_key(principal, idempotency_key))
        return 201, _answer(request, ledger.get_account(account_id))

    return run_idempotent(request, principal, idempotency_key, body.model_dump(), run)


def _answer(request: Request, account: Account) -> dict[str, Any]:
    now = request.app.state.clock()
    spend, fresh = _spend(request, account.team_id, now)
    # The team as stored now, after any command of this request: its version read again (one
    # statement; loaded only if it changed since cached).
    team = authenticator(request).source.get_team(account.team_id)
    return {**fresh, **account_info(account, team, now, spend)}


@router.get("/v1/accounts/{account_id}", response_model=AccountAnswer)
def get_account(account_id: UUID, request: Request, principal: Principal = PrincipalDep) -> Any:
    account, _access = account_access(aggregates(request), principal, account_id)
    return _answer(request, account)


def _account_command(request: Request, principal: Principal, account_id: UUID, action: Action,
                     key: str | None, body: BaseModel, command: Any) -> JSONResponse:
    ledger = _ledger(request)
    account_access(aggregates(request), principal, account_id, action)

    def run() -> tuple[int, Any]:
        command(ledger)
        return 200, _answer(request, ledger.get_account(account_id))

    return run_idempotent(request, principal, key, body.model_dump(), run)


@router.post("/v1/accounts/{account_id}/holder", response_model=AccountAnswer)
def assign_holder(account_id: UUID, body: AssignHolder, request: Request,
                  idempotency_key: IdempotencyKey = None,
                  principal: Principal = PrincipalDep) -> JSONResponse:
    """Give the account to a member of the team (owner/admin, as opening one)."""
    return _account_command(request, principal, account_id, Action.OPEN_ACCOUNT, idempotency_key,
                            body, lambda ledger: ledger.assign_account_holder(
                                account_id, body.user_id, principal.actor()))


@router.post("/v1/accounts/{account_id}/package", response_model=AccountAnswer)
def assign_package(account_id: UUID, body: AssignPackage, request: Request,
                   idempotency_key: IdempotencyKey = None,
                   principal: Principal = PrincipalDep) -> JSONResponse:
    """Assign a package version from a moment (owner/admin); usage is priced by the package in
    force when it occurred."""
    return _account_command(
        request, principal, account_id, Action.ASSIGN_PACKAGE, idempotency_key, body,
        lambda ledger: call(ledger.assign_package, account_id, body.package_id,
                            principal.actor(), package_version=body.package_version,
                            effective_from=body.effective_from,
                            idempotency_key=ledger_key(principal, idempotency_key)))


@router.post("/v1/accounts/{account_id}/suspend", response_model=AccountAnswer)
def suspend_account(account_id: UUID, body: Reasoned, request: Request,
                    idempotency_key: IdempotencyKey = None,
                    principal: Principal = PrincipalDep) -> JSONResponse:
    return _account_command(
        request, principal, account_id, Action.SUSPEND_ACCOUNT, idempotency_key, body,
        lambda ledger: call(ledger.suspend_account, account_id, body.reason, principal.actor(),
                            idempotency_key=ledger_key(principal, idempotency_key)))


@router.post("/v1/accounts/{account_id}/reactivate", response_model=AccountAnswer)
def reactivate_account(account_id: UUID, request: Request,
                       idempotency_key: IdempotencyKey = None,
                       principal: Principal = PrincipalDep) -> JSONResponse:
    return _account_command(
        request, principal, account_id, Action.REACTIVATE_ACCOUNT, idempotency_key, Body(),
        lambda ledger: call(ledger.reactivate_account, account_id, principal.actor(),
                            idempotency_key=ledger_key(principal, idempotency_key)))


@router.post("/v1/accounts/{account_id}/close", response_model=AccountAnswer)
def close_account(account_id: UUID, body: Reasoned, request: Request,
                  idempotency_key: IdempotencyKey = None,
                  principal: Principal = PrincipalDep) -> JSONResponse:
    return _account_command(
        request, principal, account_id, Action.CLOSE_ACCOUNT, idempotency_key, body,
        lambda ledger: call(ledger.close_account, account_id, body.reason, principal.actor(),
                            idempotency_key=ledger_key(principal, idempotency_key)))
