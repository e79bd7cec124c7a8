"""The audit page (filters, pages backwards by position) and its export, on the same queries as
the API's audit routes (`adapters.http.audit_queries`)."""


from collections.abc import Iterator
from io import StringIO
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from adapters.http.audit_queries import (
    AuditFilters,
    FilterError,
    actors,
    audit_page,
    event_types,
    export_rows,
)
from adapters.http.dashboard.pages import (
    base_context,
    page_access,
    page_router,
    problem_page,
    render,
)
from adapters.http.problems import ProblemError
from adapters.http.views import views
from adapters.postgres.audit_queries import export
from domain.roles import Action

router = page_router()


# The audit trail -------------------------------------------------------------------------

def audit_filters(request: Request) -> AuditFilters:
    q = request.query_params
    return AuditFilters.parse(q.get("event_type"), q.get("actor"), q.get("q"), q.get("since"),
                              q.get("until"))


@router.get("/dashboard/teams/{team_id}/audit")
def audit(request: Request, team_id: UUID, before: int | None = None) -> Response:
    checked = page_access(request, team_id)
    if isinstance(checked, Response):
        return checked
    access, viewer, session = checked
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
    checked = page_access(request, team_id)
    if isinstance(checked, Response):
        return checked
    _, viewer, _session = checked
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
