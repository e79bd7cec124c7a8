"""What every dashboard page shares: the templates, the signed-in principal of the session
cookie and its access to the team, rendering, problem pages, and the router class that adds the
pages' security headers."""


from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from adapters.http.auth import (
    Authenticator,
    Principal,
    TeamAccess,
    aggregates,
    path_team,
    team_access,
)
from adapters.http.dashboard.money_display import exact_money, format_money
from adapters.http.dashboard.page_security import (
    CSRF_FIELD,
    SecureHeadersRoute,
    csrf_token,
    csrf_valid,
)
from adapters.http.dashboard.team_page import Viewer
from adapters.http.problems import ProblemError
from adapters.http.sessions import SESSION_COOKIE_NAME

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"

templates = Jinja2Templates(directory=TEMPLATES_DIR)
templates.env.globals["format_money"] = format_money
templates.env.globals["exact_money"] = exact_money


def page_router() -> APIRouter:
    """A router for dashboard pages: security headers on every answer, not in the OpenAPI."""
    return APIRouter(route_class=SecureHeadersRoute, include_in_schema=False)


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


# A form's nonce (its idempotency key: sending it twice does the thing once) is at most this long.
FORM_NONCE_LENGTH_MAX = 64
FORM_EXPIRED = ProblemError(403, "csrf", "Form expired", "this form was not sent from your "
                           "current session; reload the page and try again")


async def form_access(request: Request, team_id: UUID, csrf: str
                      ) -> tuple[TeamAccess, Viewer, str] | Response:
    """Who posted a dashboard form, and may they reach the team: their access, or the answer to
    give instead (the login page, a problem page, or "form expired" for a bad CSRF token). The
    action itself checks the role again, in the service."""
    checked = await run_in_threadpool(page_access, request, team_id)
    if isinstance(checked, Response):
        return checked
    if not csrf_valid(checked[2], csrf):
        return problem_page(request, FORM_EXPIRED, checked[2])
    return checked


def page_access(request: Request, team_id: UUID) -> tuple[TeamAccess, Viewer, str] | Response:
    """Who asks for a team's page and may they see the team: their access, or the answer to
    give instead (the login page, or a problem page)."""
    try:
        return access_of(request, team_id)
    except LoginRequired:
        return to_login(request)
    except ProblemError as problem:
        return problem_page(request, problem)


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
