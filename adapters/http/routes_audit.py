"""The audit trail over the API: filtered pages in log order with a cursor, and the export.

The queries are `adapters.http.audit_queries`, the ones the dashboard's audit page uses too: one
filter language (an event type with or without its aggregate, e.g. `Team.AdjustmentRecorded` or
`AdjustmentRecorded`; actor; aggregate; time range) for both."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from adapters.http.audit_queries import (
    FILTER_TEXT_LENGTH_MAX,
    AuditFilters,
    api_page,
    export_lines,
    export_rows,
)
from adapters.http.auth import Principal, PrincipalDep, aggregates, team_access
from adapters.http.problems import PROBLEM_RESPONSES, FieldError, ProblemError
from adapters.http.schemas import Freshness, Money, money
from adapters.http.views import views
from domain.roles import Action

router = APIRouter(tags=["reads"], responses=PROBLEM_RESPONSES)

AUDIT_PAGE_SIZE_DEFAULT = 100
AUDIT_PAGE_SIZE_MAX = 1000


class AuditEntry(BaseModel):
    position: int
    recorded_at: datetime
    aggregate_id: str
    aggregate_version: int
    event_type: str
    actor: str | None
    summary: str
    balance_before: Money | None
    balance_after: Money | None
    hash: str


class AuditPage(Freshness):
    team_id: str
    entries: list[AuditEntry]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at "
                                    "the end")


def _audit_filters(
        event_type: Annotated[str | None, Query(
            max_length=FILTER_TEXT_LENGTH_MAX,
            description="e.g. Team.AdjustmentRecorded, or AdjustmentRecorded")] = None,
        actor: Annotated[str | None, Query(max_length=FILTER_TEXT_LENGTH_MAX)] = None,
        aggregate_id: UUID | None = None,
        since: Annotated[datetime | None, Query(description="recorded at or after")] = None,
        until: Annotated[datetime | None, Query(description="recorded before")] = None,
) -> AuditFilters:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.utcoffset() is None:
            raise ProblemError(422, "invalid_time", "Invalid request",
                               f"{name} needs a UTC offset, e.g. 2026-11-24T00:00:00Z",
                               [FieldError(field=f"query.{name}", message="add an offset")])
    return AuditFilters(event_type=event_type or "", actor=actor or "", since=since,
                        until=until, aggregate_id=aggregate_id)


FiltersDep = Depends(_audit_filters)


@router.get("/v1/teams/{team_id}/audit", response_model=AuditPage)
def audit(team_id: UUID, request: Request,
          cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,19}$",
                                              description="From `next_cursor`")] = None,
          limit: Annotated[int, Query(ge=1, le=AUDIT_PAGE_SIZE_MAX)] = AUDIT_PAGE_SIZE_DEFAULT,
          filters: AuditFilters = FiltersDep, principal: Principal = PrincipalDep) -> Any:
    """The team's audit trail in log order: who did what, money before and after, hash chain."""
    access = team_access(aggregates(request), principal, team_id, Action.VIEW_AUDIT)
    after = int(cursor) if cursor is not None else 0
    with views(request) as store:
        fresh = api_page(store.conn, team_id, filters, after, limit)
    currency = access.team.currency
    rows = fresh.rows
    page = rows[:limit]
    entries = [{
        "position": r[0], "recorded_at": r[1], "aggregate_id": str(r[2]),
        "aggregate_version": r[3], "event_type": r[4], "actor": r[5], "summary": r[6],
        "balance_before": money(int(r[7]), currency).model_dump() if r[7] is not None else None,
        "balance_after": money(int(r[8]), currency).model_dump() if r[8] is not None else None,
        "hash": bytes(r[9]).hex()} for r in page]
    return {**fresh.freshness.as_dict(), "team_id": str(team_id), "entries": entries,
            "next_cursor": str(page[-1][0]) if len(rows) > limit else None}


@router.get("/v1/teams/{team_id}/audit/export", response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}},
                             "description": "The whole audit trail of the team"}})
def audit_export(team_id: UUID, request: Request,
                 format: Literal["csv", "jsonl"] = "csv",
                 principal: Principal = PrincipalDep) -> StreamingResponse:
    """Every audit row of the team, streamed, as CSV or JSON lines (the columns `ledger audit
    export` writes; money as decimal strings)."""
    team_access(aggregates(request), principal, team_id, Action.VIEW_AUDIT)
    rows = export_rows(request.app.state.database_url, team_id, AuditFilters())
    media = "text/csv" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(export_lines(rows, format), media_type=media, headers={
        "Content-Disposition": f'attachment; filename="audit-{team_id}.{format}"'})
