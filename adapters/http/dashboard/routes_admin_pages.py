"""The admin entry: the page (members, roles, the account pool, limits) and its actions, each run
through the Ledger as the signed-in actor and answered with the balance before and after."""


import secrets
import time
from typing import Any
from uuid import UUID

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from adapters.http.audit_queries import (
    audit_row,
    first_row_after,
)
from adapters.http.auth import (
    TeamAccess,
)
from adapters.http.dashboard.admin_actions import ADMIN_ACTIONS, FormError
from adapters.http.dashboard.admin_page import admin_context
from adapters.http.dashboard.money_display import format_money
from adapters.http.dashboard.page_security import (
    CSRF_FIELD,
)
from adapters.http.dashboard.pages import (
    access_of,
    base_context,
    form_access,
    now_of,
    page_access,
    page_router,
    problem_page,
    render,
)
from adapters.http.dashboard.team_page import Viewer
from adapters.http.problems import ProblemError
from adapters.http.views import views
from domain.errors import LedgerError
from services.ledger import Ledger

FORM_FIELDS_MAX = 20
# After an admin command, wait at most this long for the projections to show its effect.
PROJECTION_WAIT_SECONDS = 5.0
PROJECTION_WAIT_STEP_SECONDS = 0.05

router = page_router()


@router.get("/dashboard/teams/{team_id}/admin")
def admin(request: Request, team_id: UUID, done: int | None = None,
          pending: str = "") -> Response:
    checked = page_access(request, team_id)
    if isinstance(checked, Response):
        return checked
    access, viewer, session = checked
    return admin_page(request, access, viewer, session, done=done, pending=bool(pending))


def admin_page(request: Request, access: TeamAccess, viewer: Viewer, session: str, *,
               done: int | None = None, pending: bool = False, error: str = "",
               status_code: int = 200) -> Response:
    """The admin page; `done` names the audit row of the action just taken, `error` why an
    action was refused (rendered in the POST's answer, never taken from the URL)."""
    if not viewer.sees_admin:
        return problem_page(request, ProblemError(403, "forbidden", "Not for your role",
                                                  "the admin page is for owners, admins, "
                                                  "billing and auditors"), session)
    team_id = access.team.id
    now = now_of(request)
    with views(request) as store:
        answer = store.balance(team_id, now)
        accounts, assignments = store.accounts_of(team_id), store.assignments_of(team_id)
        outcome = audit_row(store.conn, team_id, done) if done is not None else None
    if answer is None:
        return render(request, "pending.html", base_context(access, viewer, session, "admin"))
    context = admin_context(access.team, accounts, assignments, answer, viewer, now)
    currency = access.team.currency
    balance = answer["balance"]
    return render(request, "admin.html", {
        **base_context(access, viewer, session, "admin"), **context,
        "balance": format_money(balance["balance_nanos"], currency),
        "available": format_money(balance["available_nanos"], currency),
        "currency": currency, "outcome": outcome, "error": error,
        "pending": pending, "nonce": secrets.token_hex(16)}, status_code)


@router.post("/dashboard/teams/{team_id}/admin/{action}")
async def admin_action(request: Request, team_id: UUID, action: str) -> Response:
    form = await request.form(max_fields=FORM_FIELDS_MAX)
    checked = await form_access(request, team_id, str(form.get(CSRF_FIELD, "")))
    if isinstance(checked, Response):
        return checked
    access, _, session = checked
    spec = ADMIN_ACTIONS.get(action)
    if spec is None:
        return problem_page(request, ProblemError(404, "not_found", "No such action",
                                                  f"there is no admin action {action!r}"),
                            session)
    target = f"/dashboard/teams/{team_id}/admin"
    try:
        position = await run_in_threadpool(run_admin_action, request, access, spec.run, form)
    except (FormError, LedgerError) as error:
        # Answered here, not through a redirect: the message never travels in a URL, so no
        # link can make the page show text of someone else's choosing.
        access, viewer, session = await run_in_threadpool(access_of, request, team_id)
        return await run_in_threadpool(admin_page, request, access, viewer, session,
                                       error=str(error), status_code=400)
    if position is None:
        return RedirectResponse(f"{target}?pending=1#result", status_code=303)
    return RedirectResponse(f"{target}?done={position}#result", status_code=303)


def run_admin_action(request: Request, access: TeamAccess, run: Any, form: Any) -> int | None:
    """Run the command, then wait (bounded) until its first audit row is projected.

    The audit row carries the balance before and after the event and its log position, which
    is what the page shows; None if the projections did not catch up in time.
    """
    ledger: Ledger = request.app.state.ledger
    actor = access.principal.actor()
    with views(request) as store:
        _, head_before = store.freshness()
    run(ledger, access.team.id, form, actor)
    deadline = time.monotonic() + PROJECTION_WAIT_SECONDS
    while True:
        with views(request) as store:
            found = first_row_after(store.conn, access.team.id, head_before, actor.user_id)
        if found is not None or time.monotonic() > deadline:
            return found
        time.sleep(PROJECTION_WAIT_STEP_SECONDS)
