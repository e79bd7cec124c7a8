"""The dashboard's pages: login, a team's usage and balance, the admin entry, the audit trail.

Served by the same FastAPI app as the API (`adapters.http.app` includes `router`). Pages are
rendered on the server with Jinja2; the only script (`static/live.js`) follows server-sent events
and swaps in the re-rendered numbers. Who may see and do what comes from the API's `team_access`
(404 for a team that is not yours, as for one that does not exist) and `domain.roles`; every
command runs through the Ledger service with the signed-in actor, so the server refuses what the
role may not do even if a form is forged. See docs/dashboard.md.
"""


import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from adapters.http.auth import aggregates
from adapters.http.dashboard import (
    routes_admin_pages,
    routes_audit_pages,
    routes_invoice_pages,
    routes_team_pages,
)
from adapters.http.dashboard.live_updates import LiveHub
from adapters.http.dashboard.page_security import (
    CSRF_FIELD,
    SecureHeadersRoute,
    csrf_token,
    csrf_valid,
)
from adapters.http.dashboard.pages import (
    LoginRequired,
    render,
    signed_in,
    to_login,
)
from adapters.http.dashboard.static_files import static_response
from adapters.http.problems import ProblemError
from adapters.http.sessions import SESSION_COOKIE_NAME, SESSION_LIFETIME
from adapters.http.views import views

LOGIN_CSRF_COOKIE = "ledger_login_csrf"
TOKEN_LENGTH_MAX = 200
FORM_FIELDS_MAX = 20
# The team list after login scans at most this many teams (cached by version, see auth_cache).
TEAMS_LISTED_MAX = 200


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
    teams = []
    with views(request) as store:
        team_ids = [r[0] for r in store.conn.execute(
            store.q("SELECT team_id FROM {s}.teams ORDER BY name LIMIT %s"),
            (TEAMS_LISTED_MAX,)).fetchall()]
    for team in aggregates(request).get_teams(team_ids):
        role = team.role_of(principal.subject)
        if role is not None or principal.is_operator:
            teams.append({"id": str(team.id), "name": team.name,
                          "role": role.value if role else "operator (reads as auditor)"})
    if len(teams) == 1:
        return RedirectResponse(f"/dashboard/teams/{teams[0]['id']}", status_code=303)
    return render(request, "teams.html", {"teams": teams, "csrf": csrf_token(session),
                                          "csrf_field": CSRF_FIELD, "user": principal.subject})


for _pages in (routes_team_pages, routes_admin_pages, routes_audit_pages,
               routes_invoice_pages):
    router.include_router(_pages.router)
