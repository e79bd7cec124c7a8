"""Errors as RFC 9457 problem details (`application/problem+json`).

Every error the API answers is a `Problem`: `type` (a stable URI per kind of problem), `title`
(the kind, for people), `status`, `detail` (what went wrong and what to change), `instance`
(the request path) and, for invalid requests, `errors`: one entry per field with where it is
(`body.amount_nanos`, `query.window`) and what to fix. Domain errors map to statuses here, in one
table, so the same mistake always gets the same answer.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain.errors import (
    ConcurrentUpdateError,
    IdempotencyConflictError,
    InvalidInputError,
    InvalidStateError,
    LedgerError,
    NotFoundError,
    PermissionDeniedError,
)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://ledger.invalid/problems/"
# Validation answers list at most this many field errors (a huge bad body gets a bounded answer).
FIELD_ERRORS_MAX = 50
FIELD_MESSAGE_LENGTH_MAX = 300


class FieldError(BaseModel):
    field: str = Field(description="Where the bad value is: `body.x`, `query.y`, `header.z`.")
    message: str = Field(description="What is wrong with it and what is accepted.")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(description="A URI naming the kind of problem; stable across versions.")
    title: str
    status: int
    detail: str = Field(description="What went wrong and what to change to succeed.")
    instance: str | None = None
    code: str = Field(description="A stable machine-readable code, e.g. `permission_denied`.")
    errors: list[FieldError] | None = None


class ProblemError(Exception):
    """Raise to answer with a problem."""

    def __init__(self, status: int, code: str, title: str, detail: str,
                 errors: list[FieldError] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.errors = errors
        self.headers = headers


def not_found(what: str) -> ProblemError:
    """The same answer whether the thing does not exist or belongs to another team."""
    return ProblemError(404, "not_found", "Not found",
                        f"{what} does not exist or is not visible to this token; check the id")


def forbidden(detail: str) -> ProblemError:
    return ProblemError(403, "permission_denied", "Permission denied", detail)


def unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, "unauthenticated", "Authentication required", detail,
                        headers={"WWW-Authenticate": 'Bearer realm="ledger"'})


def problem_response(request: Request, error: ProblemError) -> JSONResponse:
    body = Problem(type=PROBLEM_TYPE_BASE + error.code, title=error.title, status=error.status,
                   detail=error.detail, instance=request.url.path, code=error.code,
                   errors=error.errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=error.status,
                        media_type=PROBLEM_MEDIA_TYPE, headers=error.headers)


_DOMAIN_STATUS: list[tuple[type[LedgerError], int, str]] = [
    (NotFoundError, 404, "Not found"),
    (PermissionDeniedError, 403, "Permission denied"),
    (IdempotencyConflictError, 409, "Idempotency key reused"),
    (InvalidStateError, 409, "Not possible in the current state"),
    (InvalidInputError, 422, "Invalid input"),
]


# A command that kept losing to concurrent changes changed nothing; the same request (with the
# same Idempotency-Key) may be sent again after this many seconds.
CONCURRENT_UPDATE_RETRY_AFTER_SECONDS = 1


def from_domain(error: LedgerError) -> ProblemError:
    if isinstance(error, ConcurrentUpdateError):
        return ProblemError(503, error.code, "Busy: concurrent changes",
                            f"{error.message}; nothing was changed, send the same request "
                            "again with the same Idempotency-Key",
                            headers={"Retry-After": str(CONCURRENT_UPDATE_RETRY_AFTER_SECONDS)})
    for kind, status, title in _DOMAIN_STATUS:
        if isinstance(error, kind):
            if status == 404:
                # Never echo the domain's message: it could say which team an id belongs to.
                return not_found("the resource")
            return ProblemError(status, error.code, title, error.message)
    return ProblemError(400, error.code, "Request refused", error.message)


def _field_errors(error: RequestValidationError) -> list[FieldError]:
    found = []
    for item in error.errors()[:FIELD_ERRORS_MAX]:
        where = ".".join(str(part) for part in item.get("loc", ())) or "body"
        message = str(item.get("msg", "invalid"))[:FIELD_MESSAGE_LENGTH_MAX]
        found.append(FieldError(field=where, message=message))
    return found


async def handle_problem(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ProblemError)
    return problem_response(request, error)


async def handle_domain(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, LedgerError)
    return problem_response(request, from_domain(error))


async def handle_validation(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    errors = _field_errors(error)
    summary = "; ".join(f"{e.field}: {e.message}" for e in errors[:3])
    return problem_response(request, ProblemError(
        422, "invalid_request", "Invalid request",
        f"the request does not match the schema at /openapi.json; fix: {summary}", errors))


async def handle_http(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    detail = str(error.detail) if error.detail else "see the API documentation"
    codes = {404: ("not_found", "Not found", "no such route; see /openapi.json for the routes"),
             405: ("method_not_allowed", "Method not allowed",
                   "this route does not take that method; see /openapi.json")}
    code, title, default_detail = codes.get(error.status_code,
                                            ("http_error", "Request refused", detail))
    return problem_response(request, ProblemError(
        error.status_code, code, title, default_detail if error.status_code in codes else detail,
        headers=dict(error.headers) if error.headers else None))


def install(app: Any) -> None:
    app.add_exception_handler(ProblemError, handle_problem)
    app.add_exception_handler(LedgerError, handle_domain)
    app.add_exception_handler(RequestValidationError, handle_validation)
    app.add_exception_handler(StarletteHTTPException, handle_http)


# For route declarations: every route may answer these.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}, "description": text}
    for status, text in ((400, "Request refused"), (401, "No valid token"),
                         (403, "The token's principal may not do this"),
                         (404, "No such resource visible to this token"),
                         (409, "Conflict with the current state or an earlier idempotency key"),
                         (413, "Body too large"), (422, "Invalid request: see `errors`"),
                         (503, "Busy with concurrent changes: nothing changed, retry after "
                               "Retry-After seconds with the same Idempotency-Key"))
}
