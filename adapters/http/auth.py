"""Who is calling, and may they: bearer tokens, dashboard sessions, and team access.

`require_principal` is the FastAPI dependency every protected route takes: it reads
`Authorization: Bearer ldg_...`, or else the `ledger_session` cookie the dashboard sets at login
(`create_session`), and answers 401 for anything that is not a valid, unexpired, unrevoked token.
Tokens and session values are never logged or echoed.

`team_access` answers "may this principal do `action` in this team?" from the team aggregate at
this moment (so a role change applies to the next request). Tokens and teams come from
`auth_cache.AuthorizationSource`, which keeps them in memory but checks their stored version on
every request, so this costs one indexed statement, not an aggregate load: a principal outside the
team gets 404, the same answer as for a team that does not exist, so ids of other teams cannot be
probed; a member whose role does not allow the action gets 403. Operators read every team as an
auditor would, and change a team only where they are members (the domain checks the same matrix).

One module of ~320 lines on purpose: who the caller is and what they may do are read together
by every route, and splitting the principal from its access check would put the role matrix's
HTTP half in two places.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
from uuid import UUID

from fastapi import Depends, Request

from adapters.http.auth_cache import AuthorizationSource, RequestAggregates
from adapters.http.problems import ProblemError, forbidden, not_found, unauthorized
from adapters.http.sessions import SESSION_COOKIE_NAME, SessionStore
from domain.account import Account
from domain.errors import AccountNotFoundError, TeamNotFoundError
from domain.roles import Action, Role, may
from domain.team import Team
from domain.tokens import (
    ApiToken,
    PrincipalKind,
    Scope,
    looks_like_token,
    token_digest,
    token_id_for_digest,
)
from services.actor import Actor
from services.tokens import TokenNotFoundError

log = logging.getLogger("ledger.http.auth")

Versions = dict[UUID, int | None]

BEARER_PREFIX = "bearer "
AUTHORIZATION_HEADER_LENGTH_MAX = 200

# What operators may read in any team: what an auditor may read.
OPERATOR_READ_ROLE = Role.AUDITOR


@dataclass(frozen=True)
class Principal:
    """The caller behind a token: an operator, a team user, or an internal service."""

    kind: PrincipalKind
    subject: str  # the user id (operator, user) or the service's name
    token_id: UUID
    scopes: frozenset[Scope] = field(default_factory=frozenset)

    @property
    def user_id(self) -> str | None:
        return self.subject if self.kind != PrincipalKind.SERVICE else None

    @property
    def is_operator(self) -> bool:
        return self.kind == PrincipalKind.OPERATOR

    @property
    def is_service(self) -> bool:
        return self.kind == PrincipalKind.SERVICE

    def actor(self) -> Actor:
        """The actor recorded in events for what this principal does."""
        if self.kind == PrincipalKind.OPERATOR:
            return Actor.operator(self.subject)
        if self.kind == PrincipalKind.SERVICE:
            return Actor(user_id=f"service:{self.subject}")
        return Actor(user_id=self.subject)

    def has_scope(self, scope: Scope) -> bool:
        return scope in self.scopes

    @classmethod
    def of(cls, token: ApiToken) -> Principal:
        return cls(kind=token.kind, subject=token.subject, token_id=token.id,
                   scopes=frozenset(Scope(s) for s in token.scopes))


class AggregateSource(Protocol):
    """Where authorization reads tokens, teams and accounts (`auth_cache.AuthorizationSource`:
    the stored state now, cached by version)."""

    def get_token(self, token_id: UUID) -> ApiToken: ...

    def get_team(self, team_id: UUID) -> Team: ...

    def get_teams(self, team_ids: Sequence[UUID]) -> list[Team]: ...

    def get_account(self, account_id: UUID) -> Account: ...


class Authenticator:
    """Token and session checks for one app; `request.app.state.auth`."""

    def __init__(self, source: AuthorizationSource, sessions: SessionStore,
                 clock: Callable[[], datetime]) -> None:
        self.source = source
        self.sessions = sessions
        self.clock = clock

    def valid_token(self, secret: str, versions: Versions | None = None) -> ApiToken | None:
        """The token this secret is, if it is valid now; None for anything else."""
        if not looks_like_token(secret):
            return None
        digest = token_digest(secret)
        token = self._token(token_id_for_digest(digest), versions)
        if token is None or not token.matches(digest):
            return None
        return token

    def _token(self, token_id: UUID, versions: Versions | None = None) -> ApiToken | None:
        try:
            token = self.source.get_token(token_id, versions)
        except TokenNotFoundError:
            return None
        return token if token.is_valid_at(self.clock()) else None

    def authenticate_token(self, token: str, also: Sequence[UUID] = ()
                           ) -> tuple[Principal | None, Versions]:
        """The principal of a bearer token, and the stored versions of the token and of the
        aggregates `also` (the team of the request), read in one statement."""
        versions: Versions = {}
        if looks_like_token(token):
            versions = self.source.versions([token_id_for_digest(token_digest(token)), *also])
        found = self.valid_token(token, versions)
        if found is None:
            return None, versions
        self.sessions.touch(found.id, self.clock())
        return Principal.of(found), versions

    def authenticate_session(self, value: str, also: Sequence[UUID] = ()
                             ) -> tuple[Principal | None, Versions]:
        token_id = self.sessions.token_of(value, self.clock())
        if token_id is None:
            return None, {}
        versions = self.source.versions([token_id, *also])
        token = self._token(token_id, versions)
        if token is None:
            return None, versions
        self.sessions.touch(token.id, self.clock())
        return Principal.of(token), versions

    def create_session(self, token: str) -> str:
        """A new session cookie value for a valid token; raises 401 for any other."""
        found = self.valid_token(token.strip())
        if found is None:
            raise unauthorized("the token is not valid (unknown, expired or revoked); ask an "
                               "operator for a new one (`ledger token create`)")
        return self.sessions.create(found.id, self.clock())

    def end_session(self, value: str) -> None:
        self.sessions.end(value)


def authenticator(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


def authenticate_token(request: Request, token: str) -> Principal | None:
    return authenticator(request).authenticate_token(token)[0]


def create_session(request: Request, token: str) -> str:
    return authenticator(request).create_session(token)


def end_session(request: Request, value: str) -> None:
    authenticator(request).end_session(value)


def require_principal(request: Request) -> Principal:
    """The caller's principal, from the bearer token or the session cookie; else 401."""
    auth = authenticator(request)
    also = path_team(request)
    header = request.headers.get("authorization")
    if header is not None:
        if len(header) > AUTHORIZATION_HEADER_LENGTH_MAX or \
                not header.lower().startswith(BEARER_PREFIX):
            raise unauthorized("send `Authorization: Bearer <token>` with a token that starts "
                               "with ldg_")
        principal, versions = auth.authenticate_token(header[len(BEARER_PREFIX):].strip(), also)
        if principal is None:
            raise unauthorized("the bearer token is not valid (unknown, expired or revoked); "
                               "ask an operator for a new one")
    else:
        cookie = request.cookies.get(SESSION_COOKIE_NAME)
        principal, versions = auth.authenticate_session(cookie, also) if cookie else (None, {})
        if principal is None:
            raise unauthorized("send `Authorization: Bearer <token>`, or log in to the "
                               "dashboard at /login")
    request.state.principal = principal
    request.state.versions = versions
    return principal


def path_team(request: Request) -> list[UUID]:
    """The team id of the path, if any: its version is read with the token's."""
    value = request.path_params.get("team_id")
    if not isinstance(value, str):
        return []
    try:
        return [UUID(value)]
    except ValueError:
        return []


PrincipalDep = Depends(require_principal)


def require_operator(principal: Principal = PrincipalDep) -> Principal:
    if not principal.is_operator:
        raise forbidden("only an operator token may do this; ask a platform operator")
    return principal


def require_scope(scope: Scope) -> Callable[[Principal], Principal]:
    """A dependency: a service token with `scope`, or an operator."""
    def check(principal: Principal = PrincipalDep) -> Principal:
        if principal.is_operator or principal.has_scope(scope):
            return principal
        raise forbidden(f"this needs a service token with scope {scope.value!r} "
                        "(or an operator token)")
    return check


@dataclass(frozen=True)
class TeamAccess:
    team: Team
    role: Role  # the member's role; operators read as OPERATOR_READ_ROLE
    principal: Principal

    @property
    def sees_all_accounts(self) -> bool:
        return self.role != Role.MEMBER

    def may_see_account(self, account: Account) -> bool:
        return self.sees_all_accounts or account.holder_user_id == self.principal.user_id


def team_role(principal: Principal, team: Team) -> Role | None:
    """The principal's role in the team now; operators read as auditors; services: none."""
    if principal.user_id is not None:
        role = team.role_of(principal.user_id)
        if role is not None:
            return Role(role)
    if principal.is_operator:
        return OPERATOR_READ_ROLE
    return None


def aggregates(request: Request) -> AggregateSource:
    """Tokens, teams and accounts for authorizing this request: the app's cache, with the
    versions read when the request's token was checked."""
    versions: Versions = getattr(request.state, "versions", {})
    return RequestAggregates(authenticator(request).source, versions)


def team_access(source: AggregateSource, principal: Principal, team_id: UUID,
                action: Action | None = None) -> TeamAccess:
    """Load the team and check the principal may act in it (`action=None`: may read it)."""
    try:
        team = source.get_team(team_id)
    except TeamNotFoundError:
        raise not_found(f"team {team_id}") from None
    role = team_role(principal, team)
    if role is None:
        raise not_found(f"team {team_id}")
    access = TeamAccess(team=team, role=role, principal=principal)
    if action is not None:
        check_action(access, action)
    return access


def check_action(access: TeamAccess, action: Action) -> None:
    """403 unless the principal's role in the team may take `action` (domain/roles.py)."""
    if not may(access.role, action):
        raise forbidden(f"role {access.role.value!r} may not {action.value} in this team; ask "
                        f"an owner (roles allowed: {_roles_for(action)})")


def account_access(source: AggregateSource, principal: Principal, account_id: UUID,
                   action: Action | None = None) -> tuple[Account, TeamAccess]:
    """Load an account and check access through its team; a member sees only their own."""
    try:
        account = source.get_account(account_id)
    except AccountNotFoundError:
        raise not_found(f"account {account_id}") from None
    try:
        access = team_access(source, principal, account.team_id)
    except ProblemError:
        raise not_found(f"account {account_id}") from None
    if not access.may_see_account(account):
        raise not_found(f"account {account_id}")
    if action is not None:
        check_action(access, action)
    return account, access


def _roles_for(action: Action) -> str:
    from domain.roles import ROLE_MATRIX

    return ", ".join(sorted(r.value for r in ROLE_MATRIX[action]))
