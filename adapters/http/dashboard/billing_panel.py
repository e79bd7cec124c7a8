"""The team page's billing panel: the latest payments (amount, status, receipt), a "Top up" form
that goes to Stripe Checkout, and a "Billing portal" button, each shown only to the roles that
may use them; and what the panel says when Stripe is not configured.

The forms post here (CSRF-checked like the admin forms) and are answered with a 303 to Stripe's
page: a navigation, never a script, so the page's Content-Security-Policy stays as it is except
for `form-action`, which browsers also apply to the redirect that follows a form's POST. That
directive names this origin and the configured Stripe origins (`LEDGER_STRIPE_REDIRECT_ORIGINS`)
on the team page only.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import Request

from adapters.http.dashboard.money_display import format_money
from adapters.http.dashboard.page_security import CONTENT_SECURITY_POLICY
from adapters.http.dashboard.team_page import Viewer
from adapters.http.problems import ProblemError
from adapters.http.routes_billing import stripe_billing
from adapters.stripe.billing import StripeBilling
from domain.money import format_nanos
from domain.payment import Payment
from domain.roles import Action

# Payments the panel lists (the newest); the API lists more.
DASHBOARD_PAYMENTS_SHOWN = 10
FORM_ACTION_SELF = "form-action 'self'"

assert FORM_ACTION_SELF in CONTENT_SECURITY_POLICY, "the dashboard's policy changed its form-action"


def billing_or_problem(request: Request) -> tuple[StripeBilling | None, str]:
    """The configured Stripe billing, or None and why not (for people)."""
    try:
        return stripe_billing(request), ""
    except ProblemError as problem:
        return None, problem.detail


def payment_row(payment: Payment) -> dict[str, Any]:
    return {"id": str(payment.id), "started_at": payment.created_on,
            "amount": format_money(payment.amount_nanos, payment.currency),
            "amount_exact": format_nanos(payment.amount_nanos, payment.currency),
            "status": payment.status.value, "receipt_url": payment.receipt_url,
            "method": "Checkout" if payment.is_checkout else "Saved card",
            "failure": payment.failure_message or payment.failure_code or ""}


def billing_panel(request: Request, team_id: UUID, currency: str,
                  viewer: Viewer) -> dict[str, Any] | None:
    """The panel's context; None for roles that do not see billing."""
    if not viewer.sees_billing:
        return None
    billing, problem = billing_or_problem(request)
    if billing is None:
        return {"configured": False, "problem": problem, "payments": [],
                "may_top_up": False, "may_portal": False}
    checkout_ready = billing.checkout_or_none is not None
    limits = billing.settings.top_up_limits(currency)
    return {
        "configured": True,
        "problem": "" if checkout_ready else
        "Stripe Checkout and the customer portal are not configured on this server "
        "(LEDGER_STRIPE_CHECKOUT_SUCCESS_URL, LEDGER_STRIPE_CHECKOUT_CANCEL_URL, "
        "LEDGER_STRIPE_PORTAL_RETURN_URL; see docs/stripe.md).",
        "payments": [payment_row(p) for p in
                     billing.top_ups.payments_of(team_id, DASHBOARD_PAYMENTS_SHOWN)],
        "may_top_up": checkout_ready and viewer.may(Action.TOP_UP),
        "may_portal": checkout_ready and viewer.may(Action.OPEN_BILLING_PORTAL),
        "minimum": format_money(limits.minimum_nanos, currency),
        "maximum": format_money(limits.maximum_nanos, currency),
    }


def page_policy(request: Request) -> str | None:
    """The team page's Content-Security-Policy with Stripe's origins in `form-action`, or None
    (the standard policy) when Stripe is not configured."""
    billing, _ = billing_or_problem(request)
    if billing is None or billing.checkout_or_none is None:
        return None
    origins = " ".join(billing.settings.redirect_origins)
    return CONTENT_SECURITY_POLICY.replace(FORM_ACTION_SELF, f"{FORM_ACTION_SELF} {origins}")
