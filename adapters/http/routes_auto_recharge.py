"""A team's auto-recharge: read it (VIEW_BILLING), set it and resume it (owner or billing).

`PUT` describes the whole policy (enabled or not, threshold, amount, daily cap, saved card): it
enables, changes or disables it, one attributed event each, and a repeat changes nothing. The
answer says the state of the trigger, the failures in a row, and when it tries again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from adapters.http.auth import Principal, PrincipalDep, aggregates, team_access
from adapters.http.problems import PROBLEM_RESPONSES, ProblemError
from adapters.http.routes_billing import PAYMENT_METHOD_PATTERN, stripe_billing
from adapters.http.schemas import Money, NanosString, money, parse_nanos
from adapters.http.schemas import Request as Body
from domain.auto_recharge import (
    FAILURES_IN_A_ROW_MAX,
    AutoRechargePolicy,
    AutoRechargeState,
    RechargeSettings,
)
from services.payments.auto_recharge import (
    AUTO_RECHARGE_ACTION,
    VIEW_ACTION,
    AutoRechargeNotFoundError,
    AutoRecharges,
)

router = APIRouter(tags=["billing"], responses=PROBLEM_RESPONSES)


class SetAutoRecharge(Body):
    enabled: bool = Field(default=True, description="false disables it (settings are kept)")
    threshold_nanos: NanosString = Field(description="Charge when the available balance "
                                         "(balance + credit limit) falls under this")
    amount_nanos: NanosString = Field(description="What one recharge charges: a whole number "
                                      "of minor units within the top-up limits")
    daily_cap_nanos: NanosString = Field(description="The most that recharges may start per "
                                         "day in the team's timezone (at least the amount)")
    payment_method_id: str = Field(pattern=PAYMENT_METHOD_PATTERN, description="A saved card "
                                   "of the team's Stripe customer (pm_...), charged off-session")


class AutoRechargeInfo(BaseModel):
    team_id: str
    enabled: bool
    state: AutoRechargeState = Field(description="armed, charging, backing_off (after a failed "
                                     "charge), waiting_for_recovery (after a recharge, until "
                                     "the balance is back at the threshold), stopped, disabled")
    threshold: Money
    amount: Money
    daily_cap: Money
    started_today: Money = Field(description="Recharges started today in the team's timezone")
    payment_method_id: str
    crossings: int = Field(description="Recharges started so far (one per fall under the "
                           "threshold)")
    charging_payment_id: str | None
    failures_in_row: int
    failures_max: int = Field(description="Failures in a row that stop it until resumed")
    last_failure: str | None
    retry_not_before: datetime | None


def policy_info(policy: AutoRechargePolicy, timezone: str, now: datetime) -> dict[str, Any]:
    c = policy.currency
    today = now.astimezone(ZoneInfo(timezone)).date()
    return {
        "team_id": str(policy.team_id), "enabled": policy.enabled,
        "state": policy.state(now).value,
        "threshold": money(policy.threshold_nanos, c).model_dump(),
        "amount": money(policy.amount_nanos, c).model_dump(),
        "daily_cap": money(policy.daily_cap_nanos, c).model_dump(),
        "started_today": money(policy.started_on(today), c).model_dump(),
        "payment_method_id": policy.payment_method_id, "crossings": policy.crossings,
        "charging_payment_id": str(policy.open_payment_id) if policy.open_payment_id else None,
        "failures_in_row": policy.failures_in_row, "failures_max": FAILURES_IN_A_ROW_MAX,
        "last_failure": policy.last_failure,
        "retry_not_before": policy.retry_not_before.isoformat()
        if policy.retry_not_before and policy.state(now) == AutoRechargeState.BACKING_OFF
        else None}


def _recharges(request: Request) -> AutoRecharges:
    return AutoRecharges(request.app.state.ledger, stripe_billing(request).top_ups)


def _answer(recharges: AutoRecharges, policy: AutoRechargePolicy) -> dict[str, Any]:
    team = recharges.ledger.get_team(policy.team_id)
    return policy_info(policy, team.timezone, recharges.now())


@router.get("/v1/teams/{team_id}/auto-recharge", response_model=AutoRechargeInfo)
def get_auto_recharge(team_id: UUID, request: Request,
                      principal: Principal = PrincipalDep) -> Any:
    """The team's auto-recharge and the state of its trigger (404 when none was set)."""
    team_access(aggregates(request), principal, team_id, VIEW_ACTION)
    recharges = _recharges(request)
    try:
        policy = recharges.get(team_id, principal.actor())
    except AutoRechargeNotFoundError as error:  # the caller sees the team: say what is missing
        raise ProblemError(404, error.code, "Not found", error.message) from None
    return _answer(recharges, policy)


@router.put("/v1/teams/{team_id}/auto-recharge", response_model=AutoRechargeInfo)
def set_auto_recharge(team_id: UUID, body: SetAutoRecharge, request: Request,
                      principal: Principal = PrincipalDep) -> Any:
    """Enable, change or disable (owner or billing). A change applies to the next recharge;
    one already charging finishes as it started."""
    team_access(aggregates(request), principal, team_id, AUTO_RECHARGE_ACTION)
    settings = RechargeSettings(
        threshold_nanos=parse_nanos(body.threshold_nanos, "threshold_nanos"),
        amount_nanos=parse_nanos(body.amount_nanos, "amount_nanos"),
        daily_cap_nanos=parse_nanos(body.daily_cap_nanos, "daily_cap_nanos"),
        payment_method_id=body.payment_method_id)
    recharges = _recharges(request)
    policy, _ = recharges.configure(team_id, settings, body.enabled, principal.actor())
    return _answer(recharges, policy)


@router.post("/v1/teams/{team_id}/auto-recharge/resume", response_model=AutoRechargeInfo)
def resume_auto_recharge(team_id: UUID, request: Request,
                         principal: Principal = PrincipalDep) -> Any:
    """Charge again after it stopped on failures in a row (owner or billing); 409 when it is
    not stopped."""
    team_access(aggregates(request), principal, team_id, AUTO_RECHARGE_ACTION)
    recharges = _recharges(request)
    return _answer(recharges, recharges.resume(team_id, principal.actor()))
