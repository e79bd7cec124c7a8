"""Billing lists: a team's top-ups and invoices from the read models (the Stripe actions live in
`routes_billing`). Each answer is one statement that also says the log position it reflects."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request
from pydantic import BaseModel

from adapters.http.auth import Principal, PrincipalDep, aggregates, team_access
from adapters.http.problems import PROBLEM_RESPONSES
from adapters.http.read_queries import table_rows
from adapters.http.schemas import Freshness, Money, money
from adapters.http.views import views
from domain.roles import Action

router = APIRouter(tags=["reads"], responses=PROBLEM_RESPONSES)


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
    access = team_access(aggregates(request), principal, team_id, Action.VIEW_BILLING)
    with views(request) as store:
        fresh, rows = table_rows(store.conn, "top_ups", team_id, "q.credited_at, q.top_up_id")
    c = access.team.currency
    return {**fresh.as_dict(), "team_id": str(team_id), "top_ups": [{
        "top_up_id": r["top_up_id"], "amount": money(r["amount_nanos"], c).model_dump(),
        "amount_minor": r["amount_minor"], "refunded": money(r["refunded_nanos"], c).model_dump(),
        "credited_at": r["credited_at"], "position": r["position"]} for r in rows]}


@router.get("/v1/teams/{team_id}/invoices", response_model=Invoices)
def invoices(team_id: UUID, request: Request, principal: Principal = PrincipalDep) -> Any:
    """The team's invoices: draft, finalized, paid, void."""
    access = team_access(aggregates(request), principal, team_id, Action.VIEW_BILLING)
    with views(request) as store:
        fresh, rows = table_rows(store.conn, "invoices", team_id,
                                 "q.period_start, q.invoice_id")
    c = access.team.currency
    return {**fresh.as_dict(), "team_id": str(team_id), "invoices": [{
        "invoice_id": str(r["invoice_id"]), "period_start": r["period_start"],
        "period_end": r["period_end"], "status": r["status"],
        "subtotal": money(r["subtotal_nanos"], c).model_dump(), "number": r["number"],
        "total_minor": r["total_minor"], "credited": money(r["credited_nanos"], c).model_dump(),
        "payment_reference": r["payment_reference"], "position": r["position"]} for r in rows]}
