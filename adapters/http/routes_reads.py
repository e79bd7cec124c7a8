"""Reads from the read models: balance, usage windows, the daily series, the audit trail (with
filters, cursor pagination and export), top-ups, invoices, and "may this account spend?".

Every answer carries `position` (the log position the read models reflect), `head_position` and
`lag_events`, so a caller knows how fresh it is. A member's usage is folded from the buckets of
the accounts they hold only; the team totals they see are theirs."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from adapters.http.auth import (
    Principal,
    PrincipalDep,
    TeamAccess,
    account_access,
    team_access,
)
from adapters.http.problems import PROBLEM_RESPONSES, FieldError, ProblemError, forbidden
from adapters.http.schemas import Freshness, Money, freshness, money
from adapters.http.views import ViewReader, views
from adapters.postgres.audit_queries import EXPORT_COLUMNS, team_audit_rows
from domain.roles import Action
from domain.tokens import Scope
from projections.windows import WINDOW_NAMES, UsageTotals, report_from_buckets, window_ranges
from services.ledger import Ledger

router = APIRouter(tags=["reads"], responses=PROBLEM_RESPONSES)

DAILY_SERIES_DAYS_MAX = 366
AUDIT_PAGE_SIZE_DEFAULT = 100
AUDIT_PAGE_SIZE_MAX = 1000
FILTER_TEXT_LENGTH_MAX = 200


def _ledger(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


# Balance ---------------------------------------------------------------------------------

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
    access = team_access(_ledger(request), principal, team_id, Action.VIEW_BILLING)
    with views(request) as store, store.snapshot() as (position, head):
        view = store.team(team_id)
    currency = access.team.currency
    values = view.as_dict() if view is not None else {}

    def m(name: str) -> dict[str, str]:
        return money(int(values.get(name, 0)), currency).model_dump()

    return {**freshness(position, head), "team_id": str(team_id), "currency": currency,
            "balance": m("balance_nanos"), "available": m("available_nanos"),
            "credit_limit": m("credit_limit_nanos"),
            "low_balance_threshold": m("low_balance_threshold_nanos"),
            "low_balance": bool(values.get("low_balance", False)),
            "suspended": bool(values.get("suspended", access.team.suspended)),
            "credited": m("credited_nanos"), "refunded": m("refunded_nanos"),
            "adjusted": m("adjusted_nanos"), "spent": m("spent_nanos")}


# Usage windows -----------------------------------------------------------------------------

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
            "cost": money(totals.cost_nanos, currency).model_dump()}


def _visible_accounts(ledger: Ledger, access: TeamAccess) -> set[str] | None:
    """None when the caller sees every account; else the ids of the accounts they hold."""
    if access.sees_all_accounts:
        return None
    return {str(a) for a in access.team.account_ids
            if access.may_see_account(ledger.get_account(a))}


def _check_account_filter(ledger: Ledger, access: TeamAccess, account_id: UUID | None,
                          visible: set[str] | None) -> set[str] | None:
    if account_id is None:
        return visible
    if account_id not in access.team.account_ids or (
            visible is not None and str(account_id) not in visible):
        raise ProblemError(404, "not_found", "Not found", f"account {account_id} does not exist "
                           "or is not visible to this token; check the id")
    return {str(account_id)}


@router.get("/v1/teams/{team_id}/usage", response_model=Usage)
def usage(team_id: UUID, request: Request,
          window: Annotated[Literal["today", "week", "month", "total"], Query()] = "today",
          account_id: UUID | None = None, principal: Principal = PrincipalDep) -> Any:
    """Requests, successes, success rate, tokens and cost in a calendar window of the team's
    time zone, in total, by account and by model (a member: their accounts only)."""
    ledger = _ledger(request)
    access = team_access(ledger, principal, team_id)
    visible = _check_account_filter(ledger, access, account_id,
                                    _visible_accounts(ledger, access))
    now = request.app.state.clock()
    with views(request) as store, store.snapshot() as (position, head):
        view = store.team(team_id)
        buckets = store.usage_buckets(view, now) if view is not None else {}
    if visible is not None:
        buckets = {k: v for k, v in buckets.items() if k[0] in visible}
    timezone = access.team.timezone
    report = report_from_buckets(buckets, now, timezone)
    assert window in WINDOW_NAMES
    currency = access.team.currency
    days = window_ranges(now, timezone)[window]
    return {
        **freshness(position, head), "team_id": str(team_id), "window": window,
        "start_date": days.start, "end_date": days.end,
        "totals": _totals(report.windows[window], currency),
        "by_account": [{"key": k, **_totals(t, currency)}
                       for k, t in sorted(report.by_account[window].items())],
        "by_model": [{"key": k, **_totals(t, currency)}
                     for k, t in sorted(report.by_model[window].items())],
    }


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
    ledger = _ledger(request)
    access = team_access(ledger, principal, team_id)
    visible = _check_account_filter(ledger, access, account_id,
                                    _visible_accounts(ledger, access))
    with views(request) as store, store.snapshot() as (position, head):
        rows = _daily_rows(store, team_id, start_date, end_date, visible)
    currency = access.team.currency
    return {**freshness(position, head), "team_id": str(team_id), "start_date": start_date,
            "end_date": end_date,
            "days": [{"date": r[0], **_totals(UsageTotals(*(int(v) for v in r[1:])), currency)}
                     for r in rows]}


def _daily_rows(store: ViewReader, team_id: UUID, start: date, end: date,
                accounts: set[str] | None) -> list[Any]:
    where = "team_id = %s AND local_date >= %s AND local_date < %s"
    params: list[Any] = [team_id, start, end + timedelta(days=1)]
    if accounts is not None:
        where += " AND account_id = ANY(%s::uuid[])"
        params.append(sorted(accounts))
    return store.conn.execute(store.q(
        "SELECT local_date, sum(requests), sum(successes), sum(input_tokens), "
        "sum(cached_input_tokens), sum(output_tokens), sum(cost_nanos) FROM {s}.usage_daily "
        f"WHERE {where} GROUP BY local_date ORDER BY local_date"), params).fetchall()


# Audit trail -----------------------------------------------------------------------------

class AuditEntry(BaseModel):
    position: int
    recorded_at: datetime
    aggregate_id: str
    aggregate_version: int
    event_type: str
    actor: str | None
    summary: str
    balance_before: Money | None
    balance_after: Money | None
    hash: str


class AuditPage(Freshness):
    team_id: str
    entries: list[AuditEntry]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at "
                                    "the end")


class AuditFilters(BaseModel):
    event_type: str | None = Field(default=None, max_length=FILTER_TEXT_LENGTH_MAX,
                                   description="e.g. Team.AdjustmentRecorded")
    actor: str | None = Field(default=None, max_length=FILTER_TEXT_LENGTH_MAX)
    aggregate_id: UUID | None = None
    since: datetime | None = Field(default=None, description="recorded at or after")
    until: datetime | None = Field(default=None, description="recorded before")


def _audit_where(team_id: UUID, filters: AuditFilters) -> tuple[str, list[Any]]:
    where = ["team_id = %s"]
    params: list[Any] = [team_id]
    for column, value in (("event_type", filters.event_type), ("actor", filters.actor),
                          ("aggregate_id", filters.aggregate_id)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if filters.since is not None:
        where.append("recorded_at >= %s")
        params.append(filters.since)
    if filters.until is not None:
        where.append("recorded_at < %s")
        params.append(filters.until)
    return " AND ".join(where), params


def _audit_filters(event_type: Annotated[str | None, Query(max_length=200)] = None,
                   actor: Annotated[str | None, Query(max_length=200)] = None,
                   aggregate_id: UUID | None = None, since: datetime | None = None,
                   until: datetime | None = None) -> AuditFilters:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.utcoffset() is None:
            raise ProblemError(422, "invalid_time", "Invalid request",
                               f"{name} needs a UTC offset, e.g. 2026-11-24T00:00:00Z",
                               [FieldError(field=f"query.{name}", message="add an offset")])
    return AuditFilters(event_type=event_type, actor=actor, aggregate_id=aggregate_id,
                        since=since, until=until)


FiltersDep = Depends(_audit_filters)


@router.get("/v1/teams/{team_id}/audit", response_model=AuditPage)
def audit(team_id: UUID, request: Request,
          cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,19}$",
                                              description="From `next_cursor`")] = None,
          limit: Annotated[int, Query(ge=1, le=AUDIT_PAGE_SIZE_MAX)] = AUDIT_PAGE_SIZE_DEFAULT,
          filters: AuditFilters = FiltersDep, principal: Principal = PrincipalDep) -> Any:
    """The team's audit trail in log order: who did what, money before and after, hash chain."""
    access = team_access(_ledger(request), principal, team_id, Action.VIEW_AUDIT)
    where, params = _audit_where(team_id, filters)
    after = int(cursor) if cursor is not None else 0
    with views(request) as store, store.snapshot() as (position, head):
        rows = store.conn.execute(store.q(
            "SELECT position, recorded_at, aggregate_id, aggregate_version, event_type, actor, "
            f"summary, balance_before_nanos, balance_after_nanos, hash FROM {{s}}.audit "
            f"WHERE {where} AND position > %s ORDER BY position LIMIT %s"),
            [*params, after, limit + 1]).fetchall()
    currency = access.team.currency
    page = rows[:limit]
    entries = [{
        "position": r[0], "recorded_at": r[1], "aggregate_id": str(r[2]),
        "aggregate_version": r[3], "event_type": r[4], "actor": r[5], "summary": r[6],
        "balance_before": money(int(r[7]), currency).model_dump() if r[7] is not None else None,
        "balance_after": money(int(r[8]), currency).model_dump() if r[8] is not None else None,
        "hash": bytes(r[9]).hex()} for r in page]
    return {**freshness(position, head), "team_id": str(team_id), "entries": entries,
            "next_cursor": str(page[-1][0]) if len(rows) > limit else None}


@router.get("/v1/teams/{team_id}/audit/export", response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}},
                             "description": "The whole audit trail of the team"}})
def audit_export(team_id: UUID, request: Request,
                 format: Literal["csv", "jsonl"] = "csv",
                 principal: Principal = PrincipalDep) -> StreamingResponse:
    """Every audit row of the team, streamed, as CSV or JSON lines (what `ledger audit export`
    writes)."""
    team_access(_ledger(request), principal, team_id, Action.VIEW_AUDIT)
    rows = team_audit_rows(request.app.state.database_url, team_id)
    media = "text/csv" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(_export_lines(rows, format), media_type=media, headers={
        "Content-Disposition": f'attachment; filename="audit-{team_id}.{format}"'})


def _plain(value: Any) -> Any:
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(int(value)) if hasattr(value, "as_integer_ratio") else str(value)


def _export_lines(rows: Iterator[dict[str, Any]], fmt: str) -> Iterator[str]:
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(EXPORT_COLUMNS)
        for row in rows:
            writer.writerow(["" if v is None else _plain(v) for v in row.values()])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue()
    else:
        for row in rows:
            yield json.dumps({k: _plain(v) for k, v in row.items()}) + "\n"


# Top-ups and invoices ----------------------------------------------------------------------

class TopUp(BaseModel):
    top_up_id: str
    amount: Money
    amount_minor: int
    refunded: Money
    credited_at: datetime
    position: int


class TopUps(Freshness):
    team_id: str
    top_ups: list[TopUp]


class Invoice(BaseModel):
    invoice_id: str
    period_start: str
    period_end: str
    status: str
    subtotal: Money
    number: str | None
    total_minor: int | None
    credited: Money
    payment_reference: str | None
    position: int


class Invoices(Freshness):
    team_id: str
    invoices: list[Invoice]


@router.get("/v1/teams/{team_id}/top-ups", response_model=TopUps)
def top_ups(team_id: UUID, request: Request, principal: Principal = PrincipalDep) -> Any:
    """Top-ups credited to the team (Stripe actions arrive with the Stripe adapter)."""
    access = team_access(_ledger(request), principal, team_id, Action.VIEW_BILLING)
    with views(request) as store, store.snapshot() as (position, head):
        rows = store.top_ups_of(team_id)
    c = access.team.currency
    return {**freshness(position, head), "team_id": str(team_id), "top_ups": [{
        "top_up_id": r["top_up_id"], "amount": money(r["amount_nanos"], c).model_dump(),
        "amount_minor": r["amount_minor"], "refunded": money(r["refunded_nanos"], c).model_dump(),
        "credited_at": r["credited_at"], "position": r["position"]} for r in rows]}


@router.get("/v1/teams/{team_id}/invoices", response_model=Invoices)
def invoices(team_id: UUID, request: Request, principal: Principal = PrincipalDep) -> Any:
    """The team's invoices: draft, finalized, paid, void."""
    access = team_access(_ledger(request), principal, team_id, Action.VIEW_BILLING)
    with views(request) as store, store.snapshot() as (position, head):
        rows = store.invoices_of(team_id)
    c = access.team.currency
    return {**freshness(position, head), "team_id": str(team_id), "invoices": [{
        "invoice_id": str(r["invoice_id"]), "period_start": r["period_start"],
        "period_end": r["period_end"], "status": r["status"],
        "subtotal": money(r["subtotal_nanos"], c).model_dump(), "number": r["number"],
        "total_minor": r["total_minor"], "credited": money(r["credited_nanos"], c).model_dump(),
        "payment_reference": r["payment_reference"], "position": r["position"]} for r in rows]}


# Authorization -----------------------------------------------------------------------------

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
    ledger = _ledger(request)
    currency = None
    if not (principal.is_operator or principal.has_scope(Scope.READ_AUTHORIZATION)):
        if principal.is_service:
            raise forbidden("this needs a service token with scope 'authorization:read'")
        _account, access = account_access(ledger, principal, account_id)
        currency = access.team.currency
    with views(request) as store:
        answer = store.authorize(account_id)
    if currency is None and answer.team_id is not None:
        currency = ledger.get_team(UUID(answer.team_id)).currency
    data = answer.as_dict()
    return {**freshness(data["position"], data["head_position"]), "account_id": str(account_id),
            "allowed": answer.allowed, "blocked_by": answer.blocked_by, "team_id": answer.team_id,
            "balance": money(answer.balance_nanos, currency).model_dump()
            if answer.balance_nanos is not None and currency else None,
            "available": money(answer.available_nanos, currency).model_dump()
            if answer.available_nanos is not None and currency else None}
