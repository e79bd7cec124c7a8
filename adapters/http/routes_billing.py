"""Money in through Stripe: start a top-up (saved card or Checkout), list a team's payments,
open the customer portal, and Stripe's webhook.

`POST /v1/stripe/webhook` takes no token: a delivery is believed only if its Stripe-Signature
signs the raw body with a configured webhook secret within the tolerance (both directions; see
`adapters.stripe.webhook_signature`). A refused delivery is a 400 and records nothing; a handled
event is recorded under its Stripe event id, so a repeat is acknowledged and changes nothing; a
failure while handling is a 500, so that Stripe delivers it again later.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from adapters.http.auth import Principal, PrincipalDep, aggregates, team_access
from adapters.http.commands import run_idempotent
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
from adapters.stripe.webhook_events import handle_event
from adapters.stripe.webhook_signature import WebhookRejected, verify_webhook
from domain.payment import Payment, PaymentStatus
from domain.roles import Action
from services.ledger import Ledger
from services.payments.checkout import Checkout
from services.payments.port import PaymentProviderError
from services.payments.top_ups import PAYMENTS_LISTED_MAX, TOP_UP_ACTION

log = logging.getLogger("ledger.http.billing")

BILLING_RESPONSES: dict[int | str, dict[str, Any]] = {
    **PROBLEM_RESPONSES,
    500: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}},
          "description": "Webhook: the event was not recorded; Stripe delivers it again"},
    502: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}},
          "description": "Stripe could not be reached: nothing was charged twice; send the "
                         "same request again with the same Idempotency-Key"},
}
router = APIRouter(tags=["billing"], responses=BILLING_RESPONSES)
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key",
                                              description=IDEMPOTENCY_KEY_DESCRIPTION)]
PAYMENT_METHOD_PATTERN = r"^pm_[A-Za-z0-9_]{1,200}$"


class StartTopUp(Body):
    amount_nanos: NanosString = Field(description="The top-up in nanos of the team's currency; "
                                      "a whole number of minor units, within the configured "
                                      "minimum and maximum")
    payment_method_id: str | None = Field(
        default=None, pattern=PAYMENT_METHOD_PATTERN, description="A saved card of the team's "
        "Stripe customer (pm_...), charged off-session. Leave it out to pay through Stripe "
        "Checkout instead: the answer's `checkout_url` is where the payer goes")


class PaymentInfo(BaseModel):
    payment_id: str
    team_id: str
    status: PaymentStatus
    amount: Money
    credited: Money
    refunded: Money
    disputes_lost: Money
    stripe_object_id: str | None
    failure_code: str | None
    failure_message: str | None
    started_by: str
    checkout_session_id: str | None = None
    receipt_url: str | None = Field(default=None, description="Stripe's receipt of the charge, "
                                    "once the payment succeeded")


class StartedTopUp(PaymentInfo):
    checkout_url: str | None = Field(default=None, description="Checkout top-ups: Stripe's "
                                     "payment page (null once the payment is final)")


class PortalSession(BaseModel):
    url: str = Field(description="Stripe's customer portal for the team, valid for minutes")


class PaymentList(BaseModel):
    payments: list[PaymentInfo]


def stripe_billing(request: Request) -> StripeBilling:
    billing: StripeBilling | None = getattr(request.app.state, "stripe_billing", None)
    if billing is None:
        ledger: Ledger = request.app.state.ledger
        try:
            billing = StripeBilling.from_env(ledger)
        except ConfigurationError as error:  # its message names the variable, never a secret
            raise ProblemError(409, "stripe_misconfigured", "Stripe is misconfigured",
                               f"{error}; an operator fixes it and restarts") from None
        if billing is None:
            # A state of this installation that its operator changes, not an outage: 409.
            raise ProblemError(409, "stripe_not_configured", "Stripe is not configured",
                               "this ledger has no Stripe account configured; an operator sets "
                               "LEDGER_STRIPE_API_KEY and LEDGER_STRIPE_WEBHOOK_SECRETS (see "
                               "docs/stripe.md) and restarts")
        request.app.state.stripe_billing = billing
    return billing


def payment_info(payment: Payment) -> dict[str, Any]:
    return {
        "payment_id": str(payment.id), "team_id": str(payment.team_id),
        "status": payment.status.value,
        "amount": money(payment.amount_nanos, payment.currency).model_dump(),
        "credited": money(payment.credited_nanos, payment.currency).model_dump(),
        "refunded": money(payment.refunded_nanos, payment.currency).model_dump(),
        "disputes_lost": money(payment.reversed_nanos - payment.refunded_nanos,
                               payment.currency).model_dump(),
        "stripe_object_id": payment.stripe_object_id, "failure_code": payment.failure_code,
        "failure_message": payment.failure_message, "started_by": payment.started_by,
        "checkout_session_id": payment.checkout_session_id, "receipt_url": payment.receipt_url}


def checkout_of(billing: StripeBilling) -> Checkout:
    try:
        return billing.checkout
    except ConfigurationError as error:
        raise ProblemError(409, "stripe_checkout_not_configured",
                           "Stripe Checkout is not configured",
                           f"{error}; an operator sets them (see docs/stripe.md) and restarts") \
            from None


def provider_problem(error: PaymentProviderError) -> ProblemError:
    return ProblemError(502, error.code, "Stripe unavailable",
                        f"{error.message}; send the same request again with the same "
                        "Idempotency-Key")


@router.post("/v1/teams/{team_id}/top-ups", status_code=201, response_model=StartedTopUp)
def start_top_up(team_id: UUID, body: StartTopUp, request: Request,
                 idempotency_key: IdempotencyKey = None,
                 principal: Principal = PrincipalDep) -> JSONResponse:
    """Top up the team (owner or billing): charge a saved card (`payment_method_id`), or,
    without one, open a Stripe Checkout page (`checkout_url`) where the payer pays and the card
    is saved. The answer is the payment as it stands: `processing` (or `started`, for Checkout)
    until Stripe reports the money received (then `succeeded` and the balance credited),
    `failed` for a declined card, `expired` for a Checkout page nobody paid. Send an
    Idempotency-Key: a retry with it resumes the same payment and never charges twice."""
    team_access(aggregates(request), principal, team_id, TOP_UP_ACTION)
    amount_nanos = parse_nanos(body.amount_nanos, "amount_nanos")
    billing = stripe_billing(request)
    checkout = checkout_of(billing) if body.payment_method_id is None else None
    request_key = f"http:{principal.token_id}:{idempotency_key}" if idempotency_key else None

    def run() -> tuple[int, Any]:
        try:
            if checkout is not None:
                started = checkout.start_checkout_top_up(team_id, amount_nanos,
                                                         principal.actor(), request_key)
                return 201, {**payment_info(started.payment),
                             "checkout_url": started.checkout_url}
            assert body.payment_method_id is not None
            payment = billing.top_ups.start_top_up(
                team_id, amount_nanos, body.payment_method_id, principal.actor(),
                request_key=request_key)
        except PaymentProviderError as error:
            raise provider_problem(error) from None
        return 201, payment_info(payment)

    return run_idempotent(request, principal, idempotency_key, body.model_dump(), run)


@router.get("/v1/teams/{team_id}/payments", response_model=PaymentList)
def list_payments(team_id: UUID, request: Request, principal: Principal = PrincipalDep,
                  limit: Annotated[int, Query(ge=1, le=PAYMENTS_LISTED_MAX)] = 50) -> Any:
    """The team's latest payments, newest first, with failed and cancelled ones."""
    team_access(aggregates(request), principal, team_id, Action.VIEW_BILLING)
    billing = stripe_billing(request)
    return {"payments": [payment_info(p) for p in billing.top_ups.payments_of(team_id, limit)]}


@router.post("/v1/teams/{team_id}/billing-portal", response_model=PortalSession)
def open_billing_portal(team_id: UUID, request: Request,
                        principal: Principal = PrincipalDep) -> Any:
    """A link to Stripe's customer portal for the team (owner or billing): saved cards,
    receipts and billing details. The link is for the caller alone and lasts minutes: open it
    at once, never share it."""
    team_access(aggregates(request), principal, team_id, Action.OPEN_BILLING_PORTAL)
    checkout = checkout_of(stripe_billing(request))
    try:
        return {"url": checkout.open_portal(team_id, principal.actor())}
    except PaymentProviderError as error:
        raise provider_problem(error) from None


class WebhookAnswer(BaseModel):
    received: bool
    event_id: str
    result: str = Field(description="What the ledger did: credited, failed, unchanged (a "
                        "repeat), ignored (a type or object that is not ours)...")


# Stripe's callback, not part of the client API: left out of the OpenAPI document (Stripe's
# own documentation describes what it sends).
@router.post("/v1/stripe/webhook", response_model=WebhookAnswer, include_in_schema=False)
async def stripe_webhook(request: Request) -> JSONResponse:
    """Stripe's deliveries (signed with the webhook secret; no bearer token). 400: the delivery
    cannot be trusted (bad or missing signature, timestamp outside the tolerance, or no webhook
    secret configured here) and nothing was recorded."""
    # The app's body limit (64 KiB) bounds the payload before it is read here.
    payload = await request.body()
    try:
        billing = stripe_billing(request)
    except ProblemError:
        # Without secrets no delivery can be trusted: refuse it as such (Stripe retries).
        log.warning("stripe webhook refused: Stripe is not configured")
        raise ProblemError(400, "webhook_refused", "Webhook refused",
                           "no webhook secret is configured; nothing was recorded") from None
    try:
        event = verify_webhook(payload, request.headers.get("stripe-signature"),
                               billing.settings.webhook_secrets,
                               billing.settings.webhook_tolerance_seconds)
    except WebhookRejected as error:
        log.warning("stripe webhook refused: %s", error)
        raise ProblemError(400, "webhook_refused", "Webhook refused", str(error)) from None
    try:
        result = await run_in_threadpool(handle_event, event, billing.top_ups.settlement,
                                         billing.gateway, billing.checkout_or_none)
    except Exception as error:
        # Stripe delivers again (for days) on any 5xx: a passing outage heals itself.
        log.exception("stripe event %s (%s) failed: %s", event.event_id, event.event_type,
                      error)
        raise ProblemError(500, "webhook_failed", "Webhook handling failed",
                           f"event {event.event_id} was not recorded; Stripe will retry") \
            from None
    return JSONResponse({"received": True, "event_id": event.event_id, "result": result})
