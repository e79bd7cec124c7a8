"""The dashboard's pages: login, a team's usage and balance, the admin entry, the audit trail.

Served by the same FastAPI app as the API (`adapters.http.app` includes `router`). Pages are
rendered on the server with Jinja2; the only script (`static/live.js`) follows server-sent events
and swaps in the re-rendered numbers. Who may see and do what comes from the API's `team_access`
(404 for a team that is not yours, as for one that does not exist) and `domain.roles`; every
command runs through the Ledger service with the signed-in actor, so the server refuses what the
role may not do even if a form is forged. See docs/dashboard.md.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode
from uuid import UUID

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from adapters.http.audit_queries import (
    AuditFilters,
    FilterError,
    actors,
    audit_page,
    audit_row,
    event_types,
    export_rows,
    first_row_after,
)
from adapters.http.auth import (
    Authenticator,
    Principal,
    TeamAccess,
    aggregates,
    path_team,
    team_access,
)
from adapters.http.dashboard.admin_actions import ADMIN_ACTIONS, FormError
from adapters.http.dashboard.admin_page import admin_context
from adapters.http.dashboard.live_updates import STREAMS_MAX, LiveHub, sse_event
from adapters.http.dashboard.money_display import exact_money, format_money
from adapters.http.dashboard.page_security import (
    CSRF_FIELD,
    SecureHeadersRoute,
    csrf_token,
    csrf_valid,
)
from adapters.http.dashboard.static_files import static_response
from adapters.http.dashboard.team_page import Viewer, parse_window, team_page
from adapters.http.problems import ProblemError
from adapters.http.sessions import SESSION_COOKIE_NAME, SESSION_LIFETIME
from adapters.http.views import views
from adapters.postgres.audit_queries import export
from domain.errors import LedgerError
from domain.roles import Action
from services.ledger import Ledger

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
LOGIN_CSRF_COOKIE = "ledger_login_csrf"
TOKEN_LENGTH_MAX = 200
FORM_FIELDS_MAX = 20
# The team list after login scans at most this many teams (each is loaded to read its members).
TEAMS_LISTED_MAX = 200
# Seconds between comment lines on an idle event stream, so proxies keep it open.
SSE_KEEPALIVE_SECONDS = 15.0
SSE_RETRY_MILLISECONDS = 2000
# After an admin command, wait at most this long for the projections to show its effect.
PROJECTION_WAIT_SECONDS = 5.0
PROJECTION_WAIT_STEP_SECONDS = 0.05


@asynccontextmanager
async def dashboard_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the live-update hub with the app; FastAPI merges this into the app's lifespan."""
    hub = LiveHub(getattr(app.state, "nats_url", None), getattr(app.state, "database_url", None))
    await hub.start()
    app.state.dashboard_hub = hub
    try:
        yield
    finally:
        await hub.stop()


router = APIRouter(route_class=SecureHeadersRoute, lifespan=dashboard_lifespan,
                   include_in_schema=False)
templates = Jinja2Templates(directory=TEMPLATES_DIR)
templates.env.globals["format_money"] = format_money
templates.env.globals["exact_money"] = exact_money


# Sessions and access ---------------------------------------------------------------------

class LoginRequired(Exception):
    pass


def signed_in(request: Request) -> tuple[Principal, str]:
    """The principal of the session cookie and the cookie's value; else `LoginRequired`."""
    value = request.cookies.get(SESSION_COOKIE_NAME)
    principal = None
    if value:
        auth: Authenticator = request.app.state.auth
        principal, request.state.versions = auth.authenticate_session(value, path_team(request))
    if principal is None or principal.is_service:
        raise LoginRequired
    return principal, value or ""


def to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target)}", status_code=303)


def access_of(request: Request, team_id: UUID) -> tuple[TeamAccess, Viewer, str]:
    principal, session = signed_in(request)
    access = team_access(aggregates(request), principal, team_id)
    return access, Viewer(principal.subject, access.role), session


def render(request: Request, name: str, context: dict[str, Any],
           status_code: int = 200) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def problem_page(request: Request, error: ProblemError, session: str = "") -> HTMLResponse:
    return render(request, "problem.html", {"title": error.title, "detail": error.detail,
                                            "csrf": csrf_token(session) if session else ""},
                  error.status)


def base_context(access: TeamAccess, viewer: Viewer, session: str, page: str) -> dict[str, Any]:
    return {"csrf": csrf_token(session), "csrf_field": CSRF_FIELD, "viewer": viewer,
            "team_id": str(access.team.id), "team_name": access.team.name, "page": page}


def now_of(request: Request) -> datetime:
    moment: datetime = request.app.state.clock()
    return moment


# Static files, login, logout -------------------------------------------------------------

@router.get("/static/{name}")
def static(name: str) -> Response:
    return static_response(name)


@router.get("/login")
def login_page(request: Request, next: str = "") -> Response:
    nonce = secrets.token_urlsafe(32)
    response = render(request, "login.html", {"login_csrf": nonce, "next": safe_next(next),
                                              "csrf_field": CSRF_FIELD, "error": ""})
    set_cookie(request, response, LOGIN_CSRF_COOKIE, nonce, max_age=3600)
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form(max_fields=FORM_FIELDS_MAX)
    target = safe_next(str(form.get("next", "")))
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    submitted = str(form.get(CSRF_FIELD, ""))
    token = str(form.get("token", "")).strip()
    error = ""
    if not cookie or not secrets.compare_digest(cookie, submitted):
        error = "The login form expired; it has been reloaded, please try again."
    elif not token or len(token) > TOKEN_LENGTH_MAX:
        error = f"Paste your token (it starts with ldg_, at most {TOKEN_LENGTH_MAX} characters)."
    else:
        try:
            session = await run_in_threadpool(request.app.state.auth.create_session, token)
        except ProblemError as problem:
            error = problem.detail
        else:
            done = RedirectResponse(target or "/dashboard", status_code=303)
            set_cookie(request, done, SESSION_COOKIE_NAME, session,
                       max_age=int(SESSION_LIFETIME.total_seconds()))
            done.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
            return done
    nonce = secrets.token_urlsafe(32)
    response = render(request, "login.html", {"login_csrf": nonce, "next": target,
                                              "csrf_field": CSRF_FIELD, "error": error}, 400)
    set_cookie(request, response, LOGIN_CSRF_COOKIE, nonce, max_age=3600)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await request.form(max_fields=FORM_FIELDS_MAX)
    value = request.cookies.get(SESSION_COOKIE_NAME, "")
    if value and csrf_valid(value, str(form.get(CSRF_FIELD, ""))):
        await run_in_threadpool(request.app.state.auth.end_session, value)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE_NAME, path="/")
    return response


def safe_next(target: str) -> str:
    """Only our own dashboard paths: never an open redirect to another site."""
    if target.startswith("/dashboard") and "//" not in target and "\\" not in target:
        return target[:500]
    return ""


def set_cookie(request: Request, response: Response, name: str, value: str,
               max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


# The team dashboard ----------------------------------------------------------------------

@router.get("/dashboard")
def teams_index(request: Request) -> Response:
    try:
        principal, session = signed_in(request)
    except LoginRequired:
        return to_login(request)
    ledger: Ledger = request.app.state.ledger
    teams = []
    with views(request) as store:
        team_ids = [r[0] for r in store.conn.execute(
            store.q("SELECT team_id FROM {s}.teams ORDER BY name LIMIT %s"),
            (TEAMS_LISTED_MAX,)).fetchall()]
    for team_id in team_ids:
        team = ledger.get_team(team_id)
        role = team.role_of(principal.subject)
        if role is not None or principal.is_operator:
            teams.append({"id": str(team_id), "name": team.name,
                          "role": role.value if role else "operator (reads as auditor)"})
    if len(teams) == 1:
        return RedirectResponse(f"/dashboard/teams/{teams[0]['id']}", status_code=303)
    return render(request, "teams.html", {"teams": teams, "csrf": csrf_token(session),
                                          "csrf_field": CSRF_FIELD, "user": principal.subject})


def dashboard_context(request: Request, access: TeamAccess, viewer: Viewer,
                      window: str) -> dict[str, Any] | None:
    held = None
    if not viewer.sees_all_accounts:
        held = {str(a) for a in access.team.account_ids
                if request.app.state.ledger.get_account(a).holder_user_id == viewer.user_id}
    with views(request) as store:
        return team_page(store, access.team.id, viewer, window, now_of(request), held)


@router.get("/dashboard/teams/{team_id}")
def team_dashboard(request: Request, team_id: UUID, window: str = "today") -> Response:
    try:
        access, viewer, session = access_of(request, team_id)
    except LoginRequired:
        return to_login(request)
    except ProblemError as error:
        return problem_page(request, error)
    page = dashboard_context(request, access, viewer, parse_window(window))
    if page is None:
        return render(request, "pending.html", base_context(access, viewer, session, "usage"))
    return render(request, "dashboard.html",
                  {**base_context(access, viewer, session, "usage"), **page})


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


# The admin entry -------------------------------------------------------------------------

@router.get("/dashboard/teams/{team_id}/admin")
def admin(request: Request, team_id: UUID, done: int | None = None,
          pending: str = "") -> Response:
    try:
        access, viewer, session = access_of(request, team_id)
    except LoginRequired:
        return to_login(request)
    except ProblemError as problem:
        return problem_page(request, problem)
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
    ledger: Ledger = request.app.state.ledger
    now = now_of(request)
    with views(request) as store:
        answer = store.balance(team_id, now)
        outcome = audit_row(store.conn, team_id, done) if done is not None else None
    if answer is None:
        return render(request, "pending.html", base_context(access, viewer, session, "admin"))
    context = admin_context(ledger, access.team, answer, viewer, now)
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
    try:
        access, _, session = await run_in_threadpool(access_of, request, team_id)
    except LoginRequired:
        return to_login(request)
    except ProblemError as problem:
        return problem_page(request, problem)
    if not csrf_valid(session, str(form.get(CSRF_FIELD, ""))):
        return problem_page(request, ProblemError(
            403, "csrf", "Form expired", "this form was not sent from your current session; "
            "reload the page and try again"), session)
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


# The audit trail -------------------------------------------------------------------------

def audit_filters(request: Request) -> AuditFilters:
    q = request.query_params
    return AuditFilters.parse(q.get("event_type"), q.get("actor"), q.get("q"), q.get("since"),
                              q.get("until"))


@router.get("/dashboard/teams/{team_id}/audit")
def audit(request: Request, team_id: UUID, before: int | None = None) -> Response:
    try:
        access, viewer, session = access_of(request, team_id)
    except LoginRequired:
        return to_login(request)
    except ProblemError as problem:
        return problem_page(request, problem)
    if not viewer.may(Action.VIEW_AUDIT):
        return problem_page(request, ProblemError(403, "forbidden", "Not for your role",
                                                  "the audit trail is for owners, admins and "
                                                  "auditors"), session)
    error, next_cursor = "", None
    rows: list[dict[str, Any]] = []
    try:
        filters = audit_filters(request)
    except FilterError as problem:
        filters, error = AuditFilters(), str(problem)
    with views(request) as store:
        types: list[str] = event_types(store.conn, team_id)
        # Usage is attributed to `account:<id>`; people read the account's name.
        actor_names = {f"account:{a.account_id}": f"{a.name} (account)"
                       for a in store.accounts_of(team_id)}
        actor_choices = actors(store.conn, team_id)
        if not error:
            rows, next_cursor = audit_page(store.conn, team_id, filters, before)
    query = filters.as_query()
    return render(request, "audit.html", {
        **base_context(access, viewer, session, "audit"), "rows": rows, "error": error,
        "filters": filters, "event_types": types, "currency": access.team.currency,
        "actor_names": actor_names, "actors": actor_choices,
        "next_url": f"?{urlencode({**query, 'before': next_cursor})}" if next_cursor else "",
        "export_query": urlencode(query)})


@router.get("/dashboard/teams/{team_id}/audit/export")
def audit_export(request: Request, team_id: UUID, format: str = "csv") -> Response:
    try:
        _, viewer, _session = access_of(request, team_id)
    except LoginRequired:
        return to_login(request)
    except ProblemError as problem:
        return problem_page(request, problem)
    if not viewer.may(Action.VIEW_AUDIT):
        return Response("the audit trail is for owners, admins and auditors", status_code=403)
    if format not in ("csv", "jsonl"):
        return Response("format must be csv or jsonl", status_code=400)
    try:
        filters = audit_filters(request)
    except FilterError as problem:
        return Response(str(problem), status_code=400)
    rows = export_rows(request.app.state.database_url, team_id, filters)
    media = "text/csv" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(
        export_chunks(rows, format), media_type=media,
        headers={"Content-Disposition": f'attachment; filename="audit-{team_id}.{format}"'})


def export_chunks(rows: Iterator[dict[str, Any]], fmt: str) -> Iterator[str]:
    """The export written in chunks of rows, so a long trail streams in bounded memory."""
    buffer = StringIO()
    chunk: list[dict[str, Any]] = []
    first = True
    for row in rows:
        chunk.append(row)
        if len(chunk) == 1000:
            yield write_chunk(buffer, chunk, fmt, first)
            first, chunk = False, []
    if chunk or first:
        yield write_chunk(buffer, chunk, fmt, first)


def write_chunk(buffer: StringIO, chunk: list[dict[str, Any]], fmt: str, header: bool) -> str:
    buffer.seek(0)
    buffer.truncate()
    export(iter(chunk), buffer, fmt)
    text = buffer.getvalue()
    if fmt == "csv" and not header:
        text = text.split("\n", 1)[1] if "\n" in text else ""
    return text
