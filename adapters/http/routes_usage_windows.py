"""Usage reads: the calendar windows (today, week, month, total) and the daily series.

A member's usage is folded from the buckets of the accounts they hold only (holders from the read
models: `read_queries.held_accounts`); the team totals they see are theirs. Each answer is one
read-model statement (`read_queries`) that also says the log position it reflects (a member's,
two: their accounts first); a window's sums are added up by PostgreSQL (`window_rows`)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal
from uuid import UUID

import psycopg
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from adapters.http.auth import (
    Principal,
    PrincipalDep,
    TeamAccess,
    aggregates,
    require_principal,
    team_access,
)
from adapters.http.fast_answers import in_thread, json_answer, money_json
from adapters.http.problems import PROBLEM_RESPONSES, FieldError, ProblemError
from adapters.http.read_queries import daily_rows, held_accounts, window_rows
from adapters.http.schemas import Freshness, Money
from adapters.http.views import views
from projections.windows import WINDOW_NAMES, UsageTotals, window_ranges

router = APIRouter(tags=["reads"], responses=PROBLEM_RESPONSES)

DAILY_SERIES_DAYS_MAX = 366


class Totals(BaseModel):
    requests: int
    successes: int
    success_rate: str | None = Field(description="successes / requests as a decimal string "
                                     "with 4 places; null without requests")
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cost: Money


class KeyedTotals(Totals):
    key: str = Field(description="The account id or the model name")


class Usage(Freshness):
    team_id: str
    window: str
    start_date: date | None = Field(description="First local date of the window (team's zone)")
    end_date: date | None = Field(description="Local date after the window's last")
    totals: Totals
    by_account: list[KeyedTotals]
    by_model: list[KeyedTotals]


def _totals(totals: UsageTotals, currency: str) -> dict[str, Any]:
    rate = None
    if totals.requests:
        # Integer arithmetic, rounded half up to 4 places: no float in the answer.
        ten_thousandths = (totals.successes * 10000 * 2 + totals.requests) // (totals.requests * 2)
        rate = f"{ten_thousandths // 10000}.{ten_thousandths % 10000:04d}"
    return {"requests": totals.requests, "successes": totals.successes, "success_rate": rate,
            "input_tokens": totals.input_tokens,
            "cached_input_tokens": totals.cached_input_tokens,
            "output_tokens": totals.output_tokens,
            "cost": money_json(totals.cost_nanos, currency)}


def visible_accounts(conn: psycopg.Connection[Any], access: TeamAccess) -> set[str] | None:
    """None when the caller sees every account; else the ids of the accounts they hold (from
    the read models, on the request's connection)."""
    if access.sees_all_accounts:
        return None
    return held_accounts(conn, access.team.id, access.principal.user_id)


def _check_account_filter(access: TeamAccess, account_id: UUID | None,
                          visible: set[str] | None) -> set[str] | None:
    if account_id is None:
        return visible
    if account_id not in access.team.account_ids or (
            visible is not None and str(account_id) not in visible):
        raise ProblemError(404, "not_found", "Not found", f"account {account_id} does not exist "
                           "or is not visible to this token; check the id")
    return {str(account_id)}


@router.get("/v1/teams/{team_id}/usage", response_model=Usage)
async def usage(team_id: UUID, request: Request,
                window: Annotated[Literal["today", "week", "month", "total"], Query()] = "today",
                account_id: UUID | None = None) -> Response:
    """Requests, successes, success rate, tokens and cost in a calendar window of the team's
    time zone, in total, by account and by model (a member: their accounts only)."""
    return await in_thread(_usage, request, team_id, window, account_id)


def _usage(request: Request, team_id: UUID, window: str, account_id: UUID | None) -> Response:
    """A lean read (`fast_answers`): one hop to the thread pool, JSON written here."""
    principal = require_principal(request)
    access = team_access(aggregates(request), principal, team_id)
    now = request.app.state.clock()
    assert window in WINDOW_NAMES
    days = window_ranges(now, access.team.timezone)[window]
    with views(request) as store:
        visible = _check_account_filter(access, account_id,
                                        visible_accounts(store.conn, access))
        fresh, rows = window_rows(store.conn, team_id, days, visible)
    totals = UsageTotals()
    by_account: dict[str, UsageTotals] = {}
    by_model: dict[str, UsageTotals] = {}
    for account, model, sums in rows:
        totals.add(sums)
        by_account.setdefault(account, UsageTotals()).add(sums)
        by_model.setdefault(model, UsageTotals()).add(sums)
    currency = access.team.currency
    return json_answer({
        **fresh.as_dict(), "team_id": str(team_id), "window": window,
        "start_date": days.start, "end_date": days.end,
        "totals": _totals(totals, currency),
        "by_account": [{"key": k, **_totals(t, currency)} for k, t in sorted(by_account.items())],
        "by_model": [{"key": k, **_totals(t, currency)} for k, t in sorted(by_model.items())],
    })


class Day(Totals):
    date: date


class Daily(Freshness):
    team_id: str
    start_date: date
    end_date: date = Field(description="Last date of the series (inclusive)")
    days: list[Day] = Field(description="One entry per local date with usage; days without "
                            "usage are left out")


@router.get("/v1/teams/{team_id}/usage/daily", response_model=Daily)
def daily(team_id: UUID, request: Request, start_date: Annotated[date, Query(alias="from")],
          end_date: Annotated[date, Query(alias="to")], account_id: UUID | None = None,
          principal: Principal = PrincipalDep) -> Any:
    """Usage per local date from `from` to `to` (inclusive, at most 366 days)."""
    if end_date < start_date or (end_date - start_date).days >= DAILY_SERIES_DAYS_MAX:
        raise ProblemError(422, "invalid_range", "Invalid request",
                           f"`to` must be on or after `from`, and the range at most "
                           f"{DAILY_SERIES_DAYS_MAX} days",
                           [FieldError(field="query.to", message="within 366 days after from")])
    access = team_access(aggregates(request), principal, team_id)
    with views(request) as store:
        visible = _check_account_filter(access, account_id,
                                        visible_accounts(store.conn, access))
        fresh = daily_rows(store.conn, team_id, start_date, end_date, visible)
    currency = access.team.currency
    return {**fresh.freshness.as_dict(), "team_id": str(team_id), "start_date": start_date,
            "end_date": end_date,
            "days": [{"date": r[0], **_totals(UsageTotals(*(int(v) for v in r[1:])), currency)}
                     for r in fresh.rows]}
