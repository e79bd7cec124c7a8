"""API tokens: who may call the HTTP API, and as whom.

A token is 256 random bits, written `ldg_` + URL-safe base64 (43 characters), shown once when it
is issued. The ledger keeps only its SHA-256 digest (plenty for 256 random bits: there is nothing
to brute-force), and derives the token aggregate's id from that digest, so authenticating a
caller is one aggregate load, with no table of secrets to scan.

Three kinds of principal hold tokens:
- an operator (platform staff): manages packages and tokens, registers teams, reads every team;
- a team user: a user id whose role comes from team membership at the moment of each request, so
  a role change or removal applies at once;
- an internal service: no user, only scopes (publish usage, ask authorization), across teams.

Issuing and revoking are events with the actor, like every admin action. Expiry is a moment
fixed at issue; a revoked or expired token authenticates nobody.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from enum import StrEnum
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidInputError, InvalidStateError
from domain.ids import LEDGER_NAMESPACE

TOKEN_PREFIX = "ldg_"
TOKEN_RANDOM_BYTES = 32  # 256 bits
# 32 bytes in URL-safe base64 without padding are 43 characters.
TOKEN_LENGTH = len(TOKEN_PREFIX) + 43
TOKEN_NAME_LENGTH_MAX = 200
SUBJECT_LENGTH_MAX = 200
REASON_LENGTH_MAX = 1000
# The directory of tokens is one aggregate; this bounds its size and the cost of listing.
TOKENS_MAX = 10_000
DIRECTORY_ID = uuid5(LEDGER_NAMESPACE, "token-directory")


class PrincipalKind(StrEnum):
    OPERATOR = "operator"
    USER = "user"
    SERVICE = "service"


class Scope(StrEnum):
    """What an internal service may do (operators and users are governed by roles instead)."""

    PUBLISH_USAGE = "usage:publish"
    READ_AUTHORIZATION = "authorization:read"


def new_token_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_RANDOM_BYTES)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_id_for_digest(digest: str) -> UUID:
    return uuid5(LEDGER_NAMESPACE, f"api-token:{digest}")


def looks_like_token(token: str) -> bool:
    """A cheap shape check before any lookup: prefix, length, URL-safe alphabet."""
    if len(token) != TOKEN_LENGTH or not token.startswith(TOKEN_PREFIX):
        return False
    body = token[len(TOKEN_PREFIX):]
    return all(c.isascii() and (c.isalnum() or c in "-_") for c in body)


def parse_scopes(values: list[str]) -> tuple[Scope, ...]:
    scopes = []
    for value in values:
        try:
            scopes.append(Scope(value))
        except ValueError:
            allowed = ", ".join(s.value for s in Scope)
            raise InvalidInputError(f"scope {value!r} is not a scope; use any of: {allowed}"
                                    ) from None
    return tuple(sorted(set(scopes)))


def _check_text(name: str, value: str, length_max: int) -> None:
    if not value.strip() or len(value) > length_max or not value.isprintable():
        raise InvalidInputError(f"{name} must be 1 to {length_max} printable characters")


class ApiToken(Aggregate):
    @staticmethod
    def create_id(digest: str) -> UUID:
        return token_id_for_digest(digest)

    @event("Issued")
    def __init__(self, digest: str, kind: PrincipalKind, subject: str, name: str,
                 scopes: list[str], issued_at: datetime, expires_at: datetime | None,
                 actor: str) -> None:
        self.digest = digest
        self.kind = PrincipalKind(kind)
        self.subject = subject
        self.name = name
        self.scopes = tuple(scopes)
        self.issued_at = issued_at
        self.expires_at = expires_at
        self.revoked_at: datetime | None = None
        self.issued_by = actor

    @classmethod
    def issue(cls, *, digest: str, kind: PrincipalKind, subject: str, name: str,
              scopes: tuple[Scope, ...], issued_at: datetime, expires_at: datetime | None,
              actor: str) -> ApiToken:
        _check_text("subject", subject, SUBJECT_LENGTH_MAX)
        _check_text("name", name, TOKEN_NAME_LENGTH_MAX)
        if kind == PrincipalKind.SERVICE and not scopes:
            raise InvalidInputError("a service token needs at least one scope")
        if kind != PrincipalKind.SERVICE and scopes:
            raise InvalidInputError("scopes are for service tokens; operators and users act "
                                    "under their roles")
        if expires_at is not None:
            if expires_at.utcoffset() is None:
                raise InvalidInputError("expires_at needs a UTC offset, e.g. "
                                        "2027-01-01T00:00:00Z")
            if expires_at <= issued_at:
                raise InvalidInputError("expires_at must be in the future")
        return cls(digest=digest, kind=kind, subject=subject, name=name,
                   scopes=[s.value for s in scopes], issued_at=issued_at,
                   expires_at=expires_at, actor=actor)

    def matches(self, digest: str) -> bool:
        return hmac.compare_digest(self.digest, digest)

    def is_valid_at(self, now: datetime) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at

    def revoke(self, reason: str, at: datetime, actor: str) -> None:
        _check_text("reason", reason, REASON_LENGTH_MAX)
        if self.revoked_at is not None:
            raise InvalidStateError(f"token {self.id} was already revoked at "
                                    f"{self.revoked_at.isoformat()}")
        self._revoked(reason=reason, revoked_at=at, actor=actor)

    @event("Revoked")
    def _revoked(self, reason: str, revoked_at: datetime, actor: str) -> None:
        self.revoked_at = revoked_at


class TokenDirectory(Aggregate):
    """The ids of every token ever issued, so that tokens can be listed without a log scan."""

    @staticmethod
    def create_id() -> UUID:
        return DIRECTORY_ID

    @event("Started")
    def __init__(self) -> None:
        self.token_ids: list[UUID] = []

    def add(self, token_id: UUID) -> None:
        if len(self.token_ids) >= TOKENS_MAX:
            raise InvalidStateError(f"at most {TOKENS_MAX} tokens can be issued; revoke and "
                                    "reuse service tokens instead of issuing one per call")
        self._added(token_id=token_id)

    @event("TokenAdded")
    def _added(self, token_id: UUID) -> None:
        self.token_ids.append(token_id)
