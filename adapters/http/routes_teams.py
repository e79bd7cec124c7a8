"""Teams, members and roles, money settings (credit limit, low-balance threshold), manual
adjustments, suspension. Every change runs a Ledger command with the token's principal as actor;
the role matrix of domain/roles.py decides, here (for a clear 403/404) and in the domain."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from adapters.http.auth import (
    Principal,
    PrincipalDep,
    aggregates,
    require_operator,
    team_access,
    team_role,
)
from adapters.http.commands import call, ledger_key, money_moved, run_idempotent
from adapters.http.problems import PROBLEM_RESPONSES, forbidden
from adapters.http.schemas import (
    IDEMPOTENCY_KEY_DESCRIPTION,
    Freshness,
    Money,
    MoneyMoved,
    NanosString,
    Reason,
    Text,
    freshness,
    money,
    parse_nanos,
)
from adapters.http.schemas import Request as Body
from adapters.http.views import views
from domain.roles import Action, Role
from domain.team import Team
from services.ledger import Ledger

router = APIRouter(prefix="/v1/teams", tags=["teams"], responses=PROBLEM_RESPONSES)
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key",
                                              description=IDEMPOTENCY_KEY_DESCRIPTION)]
UserId = Annotated[str, Path(min_length=1, max_length=200)]
TEAMS_LIST_MAX = 500


class RegisterTeam(Body):
    team_key: Text = Field(description="Your unique key for the team; the id is derived from it")
    name: Text
    currency: str = Field(pattern=r"^[A-Z]{3}$", examples=["USD"])
    timezone: Text = Field(examples=["Europe/Berlin"], description="IANA time zone: windows are "
                           "calendar days, weeks and months in it")


class Member(BaseModel):
    user_id: str
    role: Role


class TeamInfo(Freshness):
    team_id: str
    team_key: str
    name: str
    currency: str
    timezone: str
    suspended: bool
    credit_limit: Money
    low_balance_threshold: Money
    your_role: Role | None = Field(description="The caller's role (operators read as auditor)")
    members: list[Member]
    account_count: int


class TeamList(BaseModel):
    teams: list[TeamInfo]


class AddMember(Body):
    user_id: Text
    role: Role


class ChangeRole(Body):
    role: Role


class SuspendTeam(Body):
    reason: Reason


class SetCreditLimit(Body):
    credit_limit_nanos: NanosString


class SetThreshold(Body):
    threshold_nanos: NanosString


class RecordAdjustment(Body):
    amount_nanos: NanosString = Field(description="Signed: positive credits the team, negative "
                                      "debits it. " + "Integer nanos as a decimal string.")
    reason: Reason
    adjustment_id: Text | None = Field(default=None, description="Your id for the adjustment "
                                       "(its idempotency key); default: the Idempotency-Key")


class MoneyAnswer(MoneyMoved):
    team_id: str


def _ledger(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


def _head(request: Request) -> dict[str, Any]:
    with views(request) as store:
        _position, head = store.freshness()
    # The team is read from the log itself, so the answer reflects its head.
    return freshness(head, head)


def team_info(team: Team, principal: Principal, fresh: dict[str, Any]) -> dict[str, Any]:
    role = team_role(principal, team)
    return {
        **fresh, "team_id": str(team.id), "team_key": team.team_key, "name": team.name,
        "currency": team.currency, "timezone": team.timezone, "suspended": team.suspended,
        "credit_limit": money(team.credit_limit_nanos, team.currency).model_dump(),
        "low_balance_threshold": money(team.low_balance_threshold_nanos,
                                       team.currency).model_dump(),
        "your_role": role.value if role else None,
        "members": [{"user_id": u, "role": Role(r).value} for u, r in sorted(team.members.items())],
        "account_count": len(team.account_ids),
    }


@router.post("", status_code=201, response_model=TeamInfo)
def register_team(body: RegisterTeam, request: Request, idempotency_key: IdempotencyKey = None,
                  principal: Principal = PrincipalDep) -> JSONResponse:
    """Register a team (operators); the operator becomes its first owner."""
    require_operator(principal)
    ledger = _ledger(request)

    def run() -> tuple[int, Any]:
        team_id = call(ledger.register_team, team_key=body.team_key, name=body.name,
                       currency=body.currency, timezone=body.timezone, actor=principal.actor(),
                       idempotency_key=ledger_key(principal, idempotency_key))
        return 201, team_info(ledger.get_team(team_id), principal, _head(request))

    return run_idempotent(request, principal, idempotency_key, body.model_dump(), run)


@router.get("", response_model=TeamList)
def list_teams(request: Request, principal: Principal = PrincipalDep) -> Any:
    """Teams this token may see: every team for operators, the caller's teams for users."""
    if principal.is_service:
        raise forbidden("service tokens read no teams; use a user or operator token")
    with views(request) as store:
        rows = store.conn.execute(store.q("SELECT team_id FROM {s}.teams ORDER BY name, team_id "
                                          "LIMIT %s"), (TEAMS_LIST_MAX,)).fetchall()
    fresh = _head(request)
    teams = aggregates(request).get_teams([row[0] for row in rows])
    return {"teams": [team_info(t, principal, fresh) for t in teams
                      if team_role(principal, t) is not None]}


@router.get("/{team_id}", response_model=TeamInfo)
def get_team(team_id: UUID, request: Request, principal: Principal = PrincipalDep) -> Any:
    """A team's settings and members (any member; operators)."""
    access = team_access(aggregates(request), principal, team_id)
    return team_info(access.team, principal, _head(request))


@router.get("/{team_id}/members", response_model=list[Member])
def list_members(team_id: UUID, request: Request, principal: Principal = PrincipalDep) -> Any:
    access = team_access(aggregates(request), principal, team_id)
    return [{"user_id": u, "role": Role(r).value} for u, r in sorted(access.team.members.items())]


def _team_command(request: Request, principal: Principal, team_id: UUID, action: Action,
                  key: str | None, body: BaseModel, command: Any) -> JSONResponse:
    ledger = _ledger(request)
    team_access(aggregates(request), principal, team_id, action)

    def run() -> tuple[int, Any]:
        command(ledger, ledger_key(principal, key))
        return 200, team_info(ledger.get_team(team_id), principal, _head(request))

    return run_idempotent(request, principal, key, body.model_dump(), run)


@router.post("/{team_id}/members", response_model=TeamInfo)
def add_member(team_id: UUID, body: AddMember, request: Request,
               idempotency_key: IdempotencyKey = None,
               principal: Principal = PrincipalDep) -> JSONResponse:
    """Add a member with a role (owner/admin; making an owner needs an owner)."""
    return _team_command(request, principal, team_id, Action.ADD_MEMBER, idempotency_key, body,
                         lambda ledger, key: call(ledger.add_member, team_id, body.user_id,
                                                  body.role.value, principal.actor(),
                                                  idempotency_key=key))


@router.post("/{team_id}/members/{user_id}/role", response_model=TeamInfo)
def change_member_role(team_id: UUID, user_id: UserId, body: ChangeRole, request: Request,
                       idempotency_key: IdempotencyKey = None,
                       principal: Principal = PrincipalDep) -> JSONResponse:
    """Change a member's role; it applies to their next request."""
    return _team_command(request, principal, team_id, Action.CHANGE_MEMBER_ROLE, idempotency_key,
                         body, lambda ledger, key: call(ledger.change_member_role, team_id,
                                                        user_id, body.role.value,
                                                        principal.actor(), idempotency_key=key))


@router.delete("/{team_id}/members/{user_id}", response_model=TeamInfo)
def remove_member(team_id: UUID, user_id: UserId, request: Request,
                  idempotency_key: IdempotencyKey = None,
                  principal: Principal = PrincipalDep) -> JSONResponse:
    """Remove a member (a team never loses its last owner)."""
    return _team_command(request, principal, team_id, Action.REMOVE_MEMBER, idempotency_key,
                         Body(), lambda ledger, key: call(ledger.remove_member, team_id, user_id,
                                                          principal.actor(), idempotency_key=key))


@router.post("/{team_id}/suspend", response_model=TeamInfo)
def suspend_team(team_id: UUID, body: SuspendTeam, request: Request,
                 idempotency_key: IdempotencyKey = None,
                 principal: Principal = PrincipalDep) -> JSONResponse:
    return _team_command(request, principal, team_id, Action.SUSPEND_TEAM, idempotency_key, body,
                         lambda ledger, key: call(ledger.suspend_team, team_id, body.reason,
                                                  principal.actor(), idempotency_key=key))


@router.post("/{team_id}/reactivate", response_model=TeamInfo)
def reactivate_team(team_id: UUID, request: Request, idempotency_key: IdempotencyKey = None,
                    principal: Principal = PrincipalDep) -> JSONResponse:
    return _team_command(request, principal, team_id, Action.REACTIVATE_TEAM, idempotency_key,
                         Body(), lambda ledger, key: call(ledger.reactivate_team, team_id,
                                                          principal.actor(), idempotency_key=key))


def _money_command(request: Request, principal: Principal, team_id: UUID, action: Action,
                   key: str | None, body: BaseModel, command: Any) -> JSONResponse:
    ledger = _ledger(request)
    team_access(aggregates(request), principal, team_id, action)

    def run() -> tuple[int, Any]:
        moved = money_moved(request, team_id,
                            lambda: command(ledger, ledger_key(principal, key)))
        return 200, {"team_id": str(team_id), **moved.model_dump()}

    return run_idempotent(request, principal, key, body.model_dump(), run)


@router.post("/{team_id}/credit-limit", response_model=MoneyAnswer)
def set_credit_limit(team_id: UUID, body: SetCreditLimit, request: Request,
                     idempotency_key: IdempotencyKey = None,
                     principal: Principal = PrincipalDep) -> JSONResponse:
    """Set how far below zero the team may spend (owner/billing); shows available before/after."""
    amount = parse_nanos(body.credit_limit_nanos, "credit_limit_nanos")
    return _money_command(request, principal, team_id, Action.SET_CREDIT_LIMIT, idempotency_key,
                          body, lambda ledger, key: call(ledger.set_credit_limit, team_id, amount,
                                                         principal.actor(), idempotency_key=key))


@router.post("/{team_id}/low-balance-threshold", response_model=TeamInfo)
def set_low_balance_threshold(team_id: UUID, body: SetThreshold, request: Request,
                              idempotency_key: IdempotencyKey = None,
                              principal: Principal = PrincipalDep) -> JSONResponse:
    amount = parse_nanos(body.threshold_nanos, "threshold_nanos")
    return _team_command(request, principal, team_id, Action.SET_LOW_BALANCE_THRESHOLD,
                         idempotency_key, body,
                         lambda ledger, key: call(ledger.set_low_balance_threshold, team_id,
                                                  amount, principal.actor(), idempotency_key=key))


@router.post("/{team_id}/adjustments", response_model=MoneyAnswer)
def record_adjustment(team_id: UUID, body: RecordAdjustment, request: Request,
                      idempotency_key: IdempotencyKey = None,
                      principal: Principal = PrincipalDep) -> JSONResponse:
    """A signed manual adjustment with a reason (owner/billing): balance before and after."""
    amount = parse_nanos(body.amount_nanos, "amount_nanos")
    adjustment_id = body.adjustment_id or idempotency_key
    if adjustment_id is None:
        from adapters.http.problems import FieldError, ProblemError

        raise ProblemError(422, "adjustment_id_missing", "Invalid request",
                           "an adjustment needs an id so that a retry cannot apply it twice: "
                           "send an Idempotency-Key header or an adjustment_id",
                           [FieldError(field="header.Idempotency-Key",
                                       message="required when adjustment_id is not given")])
    return _money_command(request, principal, team_id, Action.RECORD_ADJUSTMENT,
                          idempotency_key, body,
                          lambda ledger, key: ledger.record_adjustment(
                              team_id, adjustment_id, amount, body.reason, principal.actor()))
