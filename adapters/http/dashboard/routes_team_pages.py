"""The team's usage and balance page, the fragment that live updates re-render, and the stream of
server-sent events that tells the page when to fetch it."""


import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from adapters.http.auth import (
    TeamAccess,
)
from adapters.http.dashboard.live_updates import STREAMS_MAX, LiveHub, sse_event
from adapters.http.dashboard.pages import (
    LoginRequired,
    access_of,
    base_context,
    now_of,
    page_router,
    problem_page,
    render,
    to_login,
)
from adapters.http.dashboard.team_page import Viewer, parse_window, team_page
from adapters.http.problems import ProblemError
from adapters.http.read_queries import held_accounts
from adapters.http.views import views

# Seconds between comment lines on an idle event stream, so proxies keep it open.
SSE_KEEPALIVE_SECONDS = 15.0
SSE_RETRY_MILLISECONDS = 2000

router = page_router()


def dashboard_context(request: Request, access: TeamAccess, viewer: Viewer,
                      window: str) -> dict[str, Any] | None:
    with views(request) as store:
        held = None if viewer.sees_all_accounts else held_accounts(
            store.conn, access.team.id, viewer.user_id)
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
