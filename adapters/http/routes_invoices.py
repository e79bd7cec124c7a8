"""Invoices: draft a team's month from priced usage, finalize (and collect through Stripe),
void, credit notes, and one invoice with its lines. Changes need `manage_invoices`, reads
`view_billing`; the list is `GET /v1/teams/{team_id}/invoices` (routes_billing_lists).

Stripe is needed only to collect an amount due above zero (finalize, collect), to void an
invoice Stripe collects and for a credit note on one; a Stripe outage is a 502 after which the
same request (or `POST .../collect`) resumes without a second Stripe invoice.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from adapters.http.auth import Principal, PrincipalDep, aggregates, team_access
from adapters.http.commands import ledger_key, run_idempotent
from adapters.http.problems import PROBLEM_MEDIA_TYPE, PROBLEM_RESPONSES, Problem, ProblemError
from adapters.http.schemas import (
    IDEMPOTENCY_KEY_DESCRIPTION,
    Money,
    NanosString,
    money,
    parse_nanos,
)
from adapters.http.schemas import Request as Body
from adapters.runtime.settings import ConfigurationError
from adapters.stripe.billing import StripeBilling
from domain.errors import InvoiceNotFoundError
from domain.invoice import Invoice
from domain.money import round_to_minor_units
from domain.roles import Action
from services.invoicing.collection import InvoiceCollection
from services.invoicing.drafting import draft_monthly_invoice
from services.ledger import Ledger
from services.payments.port import PaymentProviderError

REASON_LENGTH_MAX = 1000
router = APIRouter(tags=["invoices"], responses={
    **PROBLEM_RESPONSES,
    502: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}},
          "description": "Stripe could not be reached: send the same request again"}})
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key",
                                              description=IDEMPOTENCY_KEY_DESCRIPTION)]


class DraftMonth(Body):
    month: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
                       description="The calendar month in the team's timezone, YYYY-MM")


class VoidInvoice(Body):
    reason: str = Field(min_length=1, max_length=REASON_LENGTH_MAX)


class CreditNote(Body):
    amount_nanos: NanosString = Field(description="A whole number of minor units, in nanos")
    reason: str = Field(min_length=1, max_length=REASON_LENGTH_MAX)


class Line(BaseModel):
    kind: str | None = Field(description="usage, correction or prepaid_credit (none: by hand)")
    description: str
    amount: Money
    quantity: int
    account_id: str | None = None
    account_name: str | None = None
    model: str | None = None
    requests: int | None = None
    input_tokens: int | None = None
    cached_input_tokens: int | None = None
    output_tokens: int | None = None
    usage_month: str | None = Field(default=None, description="A correction's month, YYYY-MM")
    reason: str | None = Field(default=None, description="Why a correction line is here")


class InvoiceDetail(BaseModel):
    invoice_id: str
    team_id: str
    status: str
    period_start: str
    period_end: str
    number: str | None
    lines: list[Line]
    subtotal: Money = Field(description="The sum of the lines, exact")
    prepaid_applied: Money
    total: Money | None = Field(description="Rounded once when finalized: the amount due")
    total_minor: int | None
    rounding_difference: Money
    credited: Money
    stripe_invoice_id: str | None
    payment_reference: str | None


def invoice_detail(invoice: Invoice) -> dict[str, Any]:
    c = invoice.currency
    basis = invoice.usage_basis or {}
    lines = [{**{k: v for k, v in line.items() if k != "amount_nanos"},
              "kind": line.get("kind"), "quantity": int(line.get("quantity", 1)),
              "amount": money(int(line["amount_nanos"]), c).model_dump()}
             for line in invoice.lines]
    finalized = invoice.total_minor is not None
    return {"invoice_id": str(invoice.id), "team_id": str(invoice.team_id),
            "status": str(invoice.status), "period_start": invoice.period_start,
            "period_end": invoice.period_end, "number": invoice.number, "lines": lines,
            "subtotal": money(invoice.subtotal_nanos, c).model_dump(),
            "prepaid_applied": money(int(basis.get("prepaid_applied_nanos", 0)), c).model_dump(),
            "total": money(invoice.total_nanos, c).model_dump() if finalized else None,
            "total_minor": invoice.total_minor,
            "rounding_difference": money(invoice.rounding_difference_nanos, c).model_dump(),
            "credited": money(invoice.credited_nanos, c).model_dump(),
            "stripe_invoice_id": invoice.stripe_invoice_id,
            "payment_reference": invoice.payment_reference}


def _ledger(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


def _invoice_of(request: Request, team_id: UUID, invoice_id: UUID) -> Invoice:
    invoice = _ledger(request).get_invoice(invoice_id)
    if invoice.team_id != team_id:
        raise InvoiceNotFoundError(f"invoice {invoice_id} is not an invoice of team {team_id}")
    return invoice


def _collection(request: Request) -> InvoiceCollection:
    billing: StripeBilling | None = getattr(request.app.state, "stripe_billing", None)
    if billing is None:
        try:
            billing = StripeBilling.from_env(_ledger(request))
        except ConfigurationError as error:
            raise ProblemError(409, "stripe_misconfigured", "Stripe is misconfigured",
                               f"{error}; an operator fixes it and restarts") from None
        if billing is None:
            raise ProblemError(409, "stripe_not_configured", "Stripe is not configured",
                               "collecting an invoice needs Stripe: an operator sets "
                               "LEDGER_STRIPE_API_KEY and LEDGER_STRIPE_WEBHOOK_SECRETS "
                               "(docs/stripe.md) and restarts")
        request.app.state.stripe_billing = billing
    return billing.invoices


def _stripe_call(run: Callable[[], Invoice], retry: str) -> dict[str, Any]:
    try:
        return invoice_detail(run())
    except PaymentProviderError as error:
        raise ProblemError(502, error.code, "Stripe unavailable",
                           f"{error.message}; {retry}") from None


@router.post("/v1/teams/{team_id}/invoices", status_code=201, response_model=InvoiceDetail)
def draft_month(team_id: UUID, body: DraftMonth, request: Request,
                idempotency_key: IdempotencyKey = None,
                principal: Principal = PrincipalDep) -> JSONResponse:
    """Draft the team's invoice for a month that has ended, from its priced usage: lines per
    account and model, corrections for late usage of earlier months, prepaid credit applied."""
    team_access(aggregates(request), principal, team_id, Action.MANAGE_INVOICES)

    def run() -> tuple[int, Any]:
        invoice_id = draft_monthly_invoice(_ledger(request), team_id, body.month,
                                           principal.actor())
        return 201, invoice_detail(_ledger(request).get_invoice(invoice_id))

    return run_idempotent(request, principal, idempotency_key, body.model_dump(), run)


@router.get("/v1/teams/{team_id}/invoices/{invoice_id}", response_model=InvoiceDetail)
def get_invoice(team_id: UUID, invoice_id: UUID, request: Request,
                principal: Principal = PrincipalDep) -> Any:
    """One invoice with its lines, from the event store (not a read model: exact and current)."""
    team_access(aggregates(request), principal, team_id, Action.VIEW_BILLING)
    return invoice_detail(_invoice_of(request, team_id, invoice_id))


@router.post("/v1/teams/{team_id}/invoices/{invoice_id}/finalize", response_model=InvoiceDetail)
def finalize(team_id: UUID, invoice_id: UUID, request: Request,
             idempotency_key: IdempotencyKey = None,
             principal: Principal = PrincipalDep) -> Any:
    """Number the invoice (gapless per team), round its total once, and collect an amount due
    above zero through a Stripe invoice (zero: settled by prepaid credit). Repeating it resumes
    a collection that Stripe's outage interrupted."""
    team_access(aggregates(request), principal, team_id, Action.MANAGE_INVOICES)
    invoice = _invoice_of(request, team_id, invoice_id)
    actor = principal.actor()
    if invoice.status == "draft" and round_to_minor_units(
            invoice.subtotal_nanos, invoice.currency).amount_minor > 0:
        _collection(request)  # Stripe must be there before a number is taken
    if invoice.status == "draft":
        _ledger(request).finalize_invoice(invoice_id, actor,
                                          ledger_key(principal, idempotency_key))
        invoice = _ledger(request).get_invoice(invoice_id)
    if (invoice.total_minor or 0) <= 0:
        return invoice_detail(InvoiceCollection(_ledger(request)).collect(invoice_id, actor))
    collection = _collection(request)
    return _stripe_call(lambda: collection.collect(invoice_id, actor),
                        "the invoice is finalized; send the same request again to collect it")


@router.post("/v1/teams/{team_id}/invoices/{invoice_id}/void", response_model=InvoiceDetail)
def void(team_id: UUID, invoice_id: UUID, body: VoidInvoice, request: Request,
         principal: Principal = PrincipalDep) -> Any:
    """Void a draft or finalized, unpaid invoice with a reason (its Stripe invoice too)."""
    team_access(aggregates(request), principal, team_id, Action.MANAGE_INVOICES)
    invoice = _invoice_of(request, team_id, invoice_id)
    actor = principal.actor()
    if invoice.stripe_invoice_id is None and (invoice.total_minor or 0) <= 0:
        _ledger(request).void_invoice(invoice_id, body.reason, actor)
        return invoice_detail(_ledger(request).get_invoice(invoice_id))
    collection = _collection(request)
    return _stripe_call(lambda: collection.void(invoice_id, body.reason, actor),
                        "send the same request again")


@router.post("/v1/teams/{team_id}/invoices/{invoice_id}/credit-notes",
             response_model=InvoiceDetail)
def credit_note(team_id: UUID, invoice_id: UUID, body: CreditNote, request: Request,
                idempotency_key: IdempotencyKey = None,
                principal: Principal = PrincipalDep) -> Any:
    """Correct a finalized or paid invoice by a credit note (a Stripe credit note when Stripe
    collects it; refunded when it was paid). Send an Idempotency-Key: a retry with it gets the
    same credit note."""
    team_access(aggregates(request), principal, team_id, Action.MANAGE_INVOICES)
    invoice = _invoice_of(request, team_id, invoice_id)
    amount_nanos = parse_nanos(body.amount_nanos, "amount_nanos")
    request_key = ledger_key(principal, idempotency_key) or uuid.uuid4().hex
    collection = _collection(request) if invoice.stripe_invoice_id is not None else \
        InvoiceCollection(_ledger(request))
    return _stripe_call(lambda: collection.credit_note(invoice_id, request_key, amount_nanos,
                                                       body.reason, principal.actor()),
                        "send the same request again with the same Idempotency-Key")
