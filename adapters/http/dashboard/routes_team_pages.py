"""The team's usage and balance page, the fragment that live updates re-render, the stream of
server-sent events that tells the page when to fetch it, and the billing panel's two actions
(a Checkout top-up, the customer portal), each answered by a 303 to Stripe's page."""


import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import UUID

from fastapi import Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from adapters.http.auth import (
    TeamAccess,
)
from adapters.http.dashboard.admin_actions import FormError, parse_amount
from adapters.http.dashboard.auto_recharge_block import auto_recharge_context
from adapters.http.dashboard.billing_panel import billing_panel, page_policy
from adapters.http.dashboard.live_updates import STREAMS_MAX, LiveHub, sse_event
from adapters.http.dashboard.page_security import CSRF_FIELD
from adapters.http.dashboard.pages import (
    FORM_NONCE_LENGTH_MAX,
    LoginRequired,
    access_of,
    base_context,
    form_access,
    now_of,
    page_access,
    page_router,
    problem_page,
    render,
)
from adapters.http.dashboard.team_page import Viewer, parse_window, team_page
from adapters.http.problems import ProblemError
from adapters.http.read_queries import held_accounts
from adapters.http.routes_billing import checkout_of, stripe_billing
from adapters.http.views import views
from adapters.runtime.settings import ConfigurationError
from domain.errors import LedgerError, PermissionDeniedError
from services.payments.checkout import Checkout

# Seconds between comment lines on an idle event stream, so proxies keep it open.
SSE_KEEPALIVE_SECONDS = 15.0
SSE_RETRY_MILLISECONDS = 2000
BILLING_FORM_FIELDS_MAX = 5

router = page_router()


def dashboard_context(request: Request, access: TeamAccess, viewer: Viewer,
                      window: str) -> dict[str, Any] | None:
    with views(request) as store:
        held = None if viewer.sees_all_accounts else held_accounts(
            store.conn, access.team.id, viewer.user_id)
        page = team_page(store, access.team.id, viewer, window, now_of(request), held)
    if page is not None:
        page["billing"] = billing_panel(request, access.team.id, access.team.currency, viewer)
    return page


@router.get("/dashboard/teams/{team_id}")
def team_dashboard(request: Request, team_id: UUID, window: str = "today") -> Response:
    checked = page_access(request, team_id)
    if isinstance(checked, Response):
        return checked
    access, viewer, session = checked
    page = dashboard_context(request, access, viewer, parse_window(window))
    if page is None:
        return render(request, "pending.html", base_context(access, viewer, session, "usage"))
    response = render(request, "dashboard.html",
                      {**base_context(access, viewer, session, "usage"), **page,
                       **auto_recharge_context(request.app.state.ledger, access.team, viewer,
                                               now_of(request)),
                       "nonce": secrets.token_hex(16)})
    policy = page_policy(request)
    if policy is not None:
        response.headers["Content-Security-Policy"] = policy
    return response


@router.get("/dashboard/teams/{team_id}/live")
def team_live_fragment(request: Request, team_id: UUID, window: str = "today") -> Response:
    """The part of the dashboard that live updates replace, rendered alone."""
    try:
        access, viewer, session = access_of(request, team_id)
    except LoginRequired:
        return Response(status_code=401)
    except ProblemError as error:
        return Response(status_code=error.status)
    page = dashboard_context(request, access, viewer, parse_window(window))
    if page is None:
        return Response(status_code=404)
    return render(request, "_live.html", {**base_context(access, viewer, session, "usage"),
                                          **page})


@router.get("/dashboard/teams/{team_id}/events")
async def team_events(request: Request, team_id: UUID) -> Response:
    """Server-sent events: one per view change of this team, as the projections publish them."""
    try:
        await run_in_threadpool(access_of, request, team_id)
    except LoginRequired:
        return Response(status_code=401)
    except ProblemError as error:
        return Response(status_code=error.status)
    hub: LiveHub = request.app.state.dashboard_hub
    if hub.stream_count() >= STREAMS_MAX:
        return Response("too many live streams on this server", status_code=503)
    return StreamingResponse(event_stream(request, hub, team_id),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def event_stream(request: Request, hub: LiveHub, team_id: UUID) -> AsyncIterator[str]:
    """Notices for one team until the browser goes; the session and the membership are checked
    again at every keepalive, so a logout, a revoked token or a removed member ends the stream
    within `SSE_KEEPALIVE_SECONDS`."""
    async with hub.stream(team_id) as queue:
        yield f"retry: {SSE_RETRY_MILLISECONDS}\nevent: ready\ndata: {{\"source\": " \
              f"\"{hub.source}\"}}\n\n"
        while True:
            try:
                notice = await asyncio.wait_for(queue.get(), SSE_KEEPALIVE_SECONDS)
            except TimeoutError:
                try:
                    await run_in_threadpool(access_of, request, team_id)
                except (LoginRequired, ProblemError):
                    yield "event: ended\ndata: {}\n\n"
                    return
                yield ": keepalive\n\n"
                continue
            yield sse_event(notice)


# The billing panel's actions --------------------------------------------------------------

@router.post("/dashboard/teams/{team_id}/billing/top-up")
async def billing_top_up(request: Request, team_id: UUID) -> Response:
    """Start a Checkout top-up and send the browser to Stripe's page. The form's nonce is the
    request key: the same form sent twice resumes the same payment and the same page."""
    form = await request.form(max_fields=BILLING_FORM_FIELDS_MAX)

    def start(checkout: Checkout, access: TeamAccess) -> str | None:
        amount_nanos = parse_amount("amount", str(form.get("amount", "")))
        nonce = str(form.get("nonce", ""))
        if not nonce.isalnum() or len(nonce) > FORM_NONCE_LENGTH_MAX:
            raise FormError("the form is incomplete; reload the page and try again")
        started = checkout.start_checkout_top_up(
            team_id, amount_nanos, access.principal.actor(),
            request_key=f"dashboard:{access.principal.subject}:{nonce}")
        return started.checkout_url

    return await billing_action(request, team_id, str(form.get(CSRF_FIELD, "")), start)


@router.post("/dashboard/teams/{team_id}/billing/portal")
async def billing_portal(request: Request, team_id: UUID) -> Response:
    form = await request.form(max_fields=BILLING_FORM_FIELDS_MAX)

    def open_portal(checkout: Checkout, access: TeamAccess) -> str | None:
        return checkout.open_portal(team_id, access.principal.actor())

    return await billing_action(request, team_id, str(form.get(CSRF_FIELD, "")), open_portal)


async def billing_action(request: Request, team_id: UUID, csrf: str,
                         action: Callable[[Checkout, TeamAccess], str | None]) -> Response:
    """Check the session and the form, run `action(checkout, access)` (the service checks the
    role again), and answer a 303 to the URL it returns (the team page if none)."""
    checked = await form_access(request, team_id, csrf)
    if isinstance(checked, Response):
        return checked
    access, _, session = checked

    def run() -> str | None:
        checkout = checkout_of(stripe_billing(request))
        return action(checkout, access)

    try:
        url = await run_in_threadpool(run)
    except ProblemError as problem:
        return problem_page(request, problem, session)
    except PermissionDeniedError as error:
        return problem_page(request, ProblemError(403, "forbidden", "Not for your role",
                                                  str(error)), session)
    except (FormError, LedgerError, ConfigurationError) as error:
        return problem_page(request, ProblemError(400, "refused", "Not done", str(error)),
                            session)
    return RedirectResponse(url or f"/dashboard/teams/{team_id}", status_code=303)


# The admin entry -------------------------------------------------------------------------
