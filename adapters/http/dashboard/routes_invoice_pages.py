"""The invoice page (`/dashboard/teams/{team_id}/invoices/{invoice_id}`) and its actions,
"Finalize and collect", "Void" and "Issue credit note", for owners and billing members
(`manage_invoices`); owners, admins, billing and auditors see it (`view_billing`). The actions
run the API's own handlers (`adapters.http.routes_invoices.finalize`, `void` and `credit_note`,
whose idempotency key is the form's nonce) as the signed-in person, so the rules are exactly the
API's: Stripe must be configured before an amount due is numbered, a Stripe outage
is retried by sending the form again, a paid invoice is not voided. Forms carry the session's
CSRF token; a refusal is answered on the page itself (never through a URL)."""

from __future__ import annotations

import secrets
from typing import Any
from uuid import UUID

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from adapters.http.auth import TeamAccess
from adapters.http.dashboard.admin_actions import FormError, parse_amount
from adapters.http.dashboard.invoice_page import OUTCOMES, invoice_context
from adapters.http.dashboard.page_security import CSRF_FIELD
from adapters.http.dashboard.pages import (
    FORM_NONCE_LENGTH_MAX,
    base_context,
    form_access,
    page_access,
    page_router,
    problem_page,
    render,
)
from adapters.http.dashboard.team_page import Viewer
from adapters.http.problems import ProblemError
from adapters.http.routes_invoices import (
    REASON_LENGTH_MAX,
    CreditNote,
    VoidInvoice,
    credit_note,
    finalize,
    void,
)
from adapters.runtime.settings import ConfigurationError
from adapters.stripe.billing import StripeBilling
from domain.errors import InvoiceNotFoundError, LedgerError
from domain.invoice import Invoice
from domain.roles import Action
from services.ledger import Ledger

FORM_FIELDS_MAX = 5
INVOICE_ACTIONS = ("finalize", "void", "credit")
router = page_router()

NOT_FOUND = ProblemError(404, "not_found", "No such invoice",
                         "this team has no invoice with that id; open it from the team page")
NOT_FOR_ROLE = ProblemError(403, "forbidden", "Not for your role",
                            "invoices are for owners, admins, billing and auditors")


def _invoice_of(request: Request, team_id: UUID, invoice_id: UUID) -> Invoice | None:
    ledger: Ledger = request.app.state.ledger
    try:
        invoice = ledger.get_invoice(invoice_id)
    except InvoiceNotFoundError:
        return None
    return invoice if invoice.team_id == team_id else None


def _hosted_url(request: Request, stripe_invoice_id: str) -> str | None:
    billing: StripeBilling | None = getattr(request.app.state, "stripe_billing", None)
    if billing is None:
        try:
            billing = StripeBilling.from_env(request.app.state.ledger)
        except ConfigurationError:
            return None
        if billing is None:
            return None
        request.app.state.stripe_billing = billing
    return billing.invoices.port.retrieve(stripe_invoice_id).hosted_invoice_url


def invoice_page(request: Request, access: TeamAccess, viewer: Viewer, session: str,
                 invoice_id: UUID, *, done: str = "", error: str = "",
                 status_code: int = 200) -> Response:
    if not viewer.sees_billing:
        return problem_page(request, NOT_FOR_ROLE, session)
    invoice = _invoice_of(request, access.team.id, invoice_id)
    if invoice is None:
        return problem_page(request, NOT_FOUND, session)
    context = invoice_context(invoice, viewer.may(Action.MANAGE_INVOICES),
                              lambda stripe_id: _hosted_url(request, stripe_id))
    return render(request, "invoice.html", {
        **base_context(access, viewer, session, "usage"), **context,
        "outcome": OUTCOMES.get(done, ""), "error": error, "nonce": secrets.token_hex(16),
        "reason_length_max": REASON_LENGTH_MAX}, status_code)


@router.get("/dashboard/teams/{team_id}/invoices/{invoice_id}")
def show_invoice(request: Request, team_id: UUID, invoice_id: UUID, done: str = "") -> Response:
    checked = page_access(request, team_id)
    if isinstance(checked, Response):
        return checked
    access, viewer, session = checked
    return invoice_page(request, access, viewer, session, invoice_id, done=done)


def _run(request: Request, access: TeamAccess, invoice_id: UUID, action: str,
         form: Any) -> str:
    """Run the action; returns the outcome's name. Raises ProblemError or LedgerError."""
    principal = access.principal
    if action == "finalize":
        finalize(access.team.id, invoice_id, request, None, principal)
        return "finalized"
    reason = str(form.get("reason", "")).strip()
    if not reason or len(reason) > REASON_LENGTH_MAX:
        raise ProblemError(400, "invalid_input", "Reason needed",
                           f"a reason of 1 to {REASON_LENGTH_MAX} characters says why the "
                           f"invoice is {'credited' if action == 'credit' else 'voided'}")
    if action == "credit":
        try:
            amount_nanos = parse_amount("amount", str(form.get("amount", "")))
        except FormError as error:
            raise ProblemError(400, "invalid_input", "Amount needed", str(error)) from None
        # The form's nonce is the idempotency key: sending the form twice makes one note.
        nonce = str(form.get("nonce", ""))
        if not nonce.isalnum() or len(nonce) > FORM_NONCE_LENGTH_MAX:
            raise ProblemError(400, "invalid_input", "Form expired",
                               "reload the invoice page and send the form again")
        credit_note(access.team.id, invoice_id,
                    CreditNote(amount_nanos=str(amount_nanos), reason=reason), request,
                    f"dashboard:{nonce}", principal)
        return "credited"
    void(access.team.id, invoice_id, VoidInvoice(reason=reason), request, principal)
    return "voided"


@router.post("/dashboard/teams/{team_id}/invoices/{invoice_id}/{action}")
async def invoice_action(request: Request, team_id: UUID, invoice_id: UUID,
                         action: str) -> Response:
    form = await request.form(max_fields=FORM_FIELDS_MAX)
    checked = await form_access(request, team_id, str(form.get(CSRF_FIELD, "")))
    if isinstance(checked, Response):
        return checked
    access, viewer, session = checked
    if action not in INVOICE_ACTIONS:
        return problem_page(request, ProblemError(404, "not_found", "No such action",
                                                  f"there is no invoice action {action[:40]!r}"),
                            session)
    if not viewer.sees_billing or \
            await run_in_threadpool(_invoice_of, request, team_id, invoice_id) is None:
        return problem_page(request, NOT_FOR_ROLE if not viewer.sees_billing else NOT_FOUND,
                            session)
    try:
        done = await run_in_threadpool(_run, request, access, invoice_id, action, form)
    except ProblemError as problem:
        return await run_in_threadpool(invoice_page, request, access, viewer, session,
                                       invoice_id, error=problem.detail,
                                       status_code=problem.status)
    except LedgerError as error:
        return await run_in_threadpool(invoice_page, request, access, viewer, session,
                                       invoice_id, error=str(error), status_code=400)
    return RedirectResponse(f"/dashboard/teams/{team_id}/invoices/{invoice_id}?done={done}"
                            "#result", status_code=303)
