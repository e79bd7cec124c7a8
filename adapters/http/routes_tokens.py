"""Tokens over HTTP (operators only): issue (the secret is in this answer and nowhere else),
list, revoke."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field

from adapters.http.auth import Principal, require_operator
from adapters.http.commands import run_idempotent
from adapters.http.problems import PROBLEM_RESPONSES
from adapters.http.schemas import IDEMPOTENCY_KEY_DESCRIPTION, Reason, Text
from adapters.http.schemas import Request as Body
from domain.tokens import Scope
from services.tokens import Tokens, describe

router = APIRouter(prefix="/v1/tokens", tags=["tokens"], responses=PROBLEM_RESPONSES)
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key",
                                              description=IDEMPOTENCY_KEY_DESCRIPTION)]
OperatorDep = Depends(require_operator)


class IssueToken(Body):
    kind: Literal["operator", "user", "service"]
    subject: Text = Field(description="The user id (operator, user) or the service's name")
    name: Text = Field(description="What the token is for, to recognise it in lists")
    scopes: list[Scope] = Field(default_factory=list, max_length=len(Scope),
                                description="Service tokens only")
    expires_at: AwareDatetime | None = None


class TokenInfo(BaseModel):
    token_id: str
    kind: str
    subject: str
    name: str
    scopes: list[str]
    issued_at: datetime
    issued_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None = None


class IssuedToken(TokenInfo):
    secret: str = Field(description="The token itself, `ldg_...`: shown this once, never again")


class TokenList(BaseModel):
    tokens: list[TokenInfo]


class RevokeToken(Body):
    reason: Reason


def _tokens(request: Request) -> Tokens:
    tokens: Tokens = request.app.state.tokens
    return tokens


@router.post("", status_code=201, response_model=IssuedToken)
def issue_token(body: IssueToken, request: Request, idempotency_key: IdempotencyKey = None,
                principal: Principal = OperatorDep) -> JSONResponse:
    """Issue a token. The answer holds the secret; the ledger keeps only its SHA-256."""
    def run() -> tuple[int, Any]:
        issued = _tokens(request).issue(
            kind=body.kind, subject=body.subject, name=body.name,
            scopes=[s.value for s in body.scopes], expires_at=body.expires_at,
            actor=principal.actor(), idempotency_key=idempotency_key)
        return 201, {**describe(issued.token), "last_used_at": None, "secret": issued.secret}

    # Never stored for replay: the answer holds the secret. The Tokens service keeps the key.
    status, payload = run()
    return JSONResponse(jsonable_encoder(payload), status_code=status)


@router.get("", response_model=TokenList)
def list_tokens(request: Request, principal: Principal = OperatorDep) -> Any:
    """Every token ever issued (never a secret), with its last use."""
    last_uses = request.app.state.auth.sessions.last_uses()
    return {"tokens": [{**describe(t), "last_used_at": last_uses.get(t.id)}
                       for t in _tokens(request).list()]}


@router.post("/{token_id}/revoke", response_model=TokenInfo)
def revoke_token(token_id: UUID, body: RevokeToken, request: Request,
                 idempotency_key: IdempotencyKey = None,
                 principal: Principal = OperatorDep) -> JSONResponse:
    """Revoke a token: it and the dashboard sessions made with it stop working at once."""
    def run() -> tuple[int, Any]:
        token = _tokens(request).revoke(token_id, body.reason, principal.actor())
        return 200, {**describe(token), "last_used_at": None}

    return run_idempotent(request, principal, idempotency_key, body.model_dump(), run)
