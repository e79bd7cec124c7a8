"""Issuing, listing, revoking and checking API tokens, saved through the Ledger application.

Tokens are aggregates of the same application as teams and accounts, so issuing and revoking
are events in the one log, with their actor, and show in the audit trail like every admin action.
Only operators issue and revoke tokens; the very first operator token is issued by the system
actor `system:bootstrap` when a data folder is new (see `ensure_first_operator_token`).

The secret is returned once, from `issue`; the application keeps only its digest. An idempotency
key makes a retried issue safe: the second call does not make a second token, but it cannot show
the secret again either, so it answers with an error naming the token already issued.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from domain.errors import (
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
    PermissionDeniedError,
)
from domain.tokens import (
    ApiToken,
    PrincipalKind,
    TokenDirectory,
    looks_like_token,
    new_token_secret,
    parse_scopes,
    token_digest,
    token_id_for_digest,
)
from services.actor import Actor
from services.command_runs import command_fingerprint
from services.keyed_recording import KeyRow
from services.ledger import Ledger

TOKEN_KEY_SCOPE = "token"
BOOTSTRAP_ACTOR = Actor.system("bootstrap")
FIRST_OPERATOR_USER_ID = "operator"
# The key makes the first operator token once, even when two processes start together.
FIRST_OPERATOR_TOKEN_KEY = "bootstrap:first-operator-token"
# Two operators issuing at the same moment race on the directory's version; retry that.
ISSUE_ATTEMPTS_MAX = 5


class TokenNotFoundError(NotFoundError):
    code = "unknown_token"


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str  # shown once, never stored


class Tokens:
    def __init__(self, ledger: Ledger, clock: Callable[[], datetime] | None = None) -> None:
        self.ledger = ledger
        self.clock = clock or ledger.clock

    # Commands ------------------------------------------------------------------------------

    def issue(self, *, kind: str, subject: str, name: str, scopes: list[str],
              expires_at: datetime | None, actor: Actor,
              idempotency_key: str | None = None) -> IssuedToken:
        if not (actor.is_operator or actor == BOOTSTRAP_ACTOR):
            raise PermissionDeniedError(
                f"user {actor.user_id!r} is not an operator; only operators issue tokens")
        principal_kind = _parse_kind(kind)
        parsed_scopes = parse_scopes(scopes)
        key_row = None
        if idempotency_key is not None:
            fingerprint = command_fingerprint("issue_token", {
                "kind": kind, "subject": subject, "name": name, "scopes": sorted(scopes),
                "expires_at": expires_at.isoformat() if expires_at else None})
            self._check_key_unused(idempotency_key, fingerprint)
        for attempt in range(1, ISSUE_ATTEMPTS_MAX + 1):
            secret = new_token_secret()
            digest = token_digest(secret)
            token = ApiToken.issue(digest=digest, kind=principal_kind, subject=subject,
                                   name=name, scopes=parsed_scopes, issued_at=self.clock(),
                                   expires_at=expires_at, actor=actor.user_id)
            directory = self._directory()
            directory.add(token.id)
            extras: dict[str, list[KeyRow]] = {}
            if idempotency_key is not None:
                key_row = KeyRow(TOKEN_KEY_SCOPE, idempotency_key, fingerprint, str(token.id))
                extras["idempotency_keys"] = [key_row]
            try:
                self.ledger.save(token, directory, **extras)
            except IntegrityError:
                if idempotency_key is not None:
                    self._check_key_unused(idempotency_key, fingerprint)
                if attempt == ISSUE_ATTEMPTS_MAX:
                    raise
                continue
            return IssuedToken(token=token, secret=secret)
        raise AssertionError("unreachable")

    def revoke(self, token_id: UUID, reason: str, actor: Actor) -> ApiToken:
        if not actor.is_operator:
            raise PermissionDeniedError(
                f"user {actor.user_id!r} is not an operator; only operators revoke tokens")
        token = self.get(token_id)
        token.revoke(reason, self.clock(), actor.user_id)
        self.ledger.save(token)
        return token

    # Queries -------------------------------------------------------------------------------

    def get(self, token_id: UUID) -> ApiToken:
        try:
            aggregate: object = self.ledger.repository.get(token_id)
        except AggregateNotFoundError:
            raise TokenNotFoundError(f"token {token_id} does not exist") from None
        if not isinstance(aggregate, ApiToken):
            raise TokenNotFoundError(f"{token_id} is not a token")
        return aggregate

    def list(self) -> list[ApiToken]:
        return [self.get(token_id) for token_id in self._directory().token_ids]

    def authenticate(self, secret: str) -> ApiToken | None:
        """The token this secret is, if it is valid now; None for anything else."""
        if not looks_like_token(secret):
            return None
        digest = token_digest(secret)
        try:
            token = self.get(token_id_for_digest(digest))
        except TokenNotFoundError:
            return None
        if not token.matches(digest) or not token.is_valid_at(self.clock()):
            return None
        return token

    def has_operator_token(self) -> bool:
        return any(t.kind == PrincipalKind.OPERATOR for t in self.list())

    # Helpers -------------------------------------------------------------------------------

    def _directory(self) -> TokenDirectory:
        try:
            aggregate: object = self.ledger.repository.get(TokenDirectory.create_id())
        except AggregateNotFoundError:
            return TokenDirectory()
        assert isinstance(aggregate, TokenDirectory)
        return aggregate

    def _check_key_unused(self, idempotency_key: str, fingerprint: str) -> None:
        row = self.ledger.keyed.select_keys(TOKEN_KEY_SCOPE, [idempotency_key]).get(
            idempotency_key)
        if row is None:
            return
        if row.fingerprint != fingerprint:
            raise InvalidStateError(
                f"idempotency key {idempotency_key!r} was already used for a different token; "
                "use a new key for a new token")
        raise InvalidStateError(
            f"token {row.result} was already issued under idempotency key {idempotency_key!r}; "
            "its secret was shown once and is not kept. Revoke it and issue a new one if the "
            "secret was lost")


def ensure_first_operator_token(ledger: Ledger, *, user_id: str = FIRST_OPERATOR_USER_ID,
                                name: str = "first operator token (ledger up)"
                                ) -> IssuedToken | None:
    """Issue an operator token if the ledger has none yet; return it (secret shown once).

    `ledger up` calls this on start: on a new data folder it returns the first operator token,
    to be printed once; afterwards (an operator token exists, even a revoked one) it returns None.
    """
    tokens = Tokens(ledger)
    if tokens.has_operator_token():
        return None
    try:
        return tokens.issue(kind=PrincipalKind.OPERATOR.value, subject=user_id, name=name,
                            scopes=[], expires_at=None, actor=BOOTSTRAP_ACTOR,
                            idempotency_key=FIRST_OPERATOR_TOKEN_KEY)
    except InvalidStateError:
        # Another process starting on the same database issued it a moment ago; its secret
        # was shown there, not here.
        return None


def _parse_kind(kind: str) -> PrincipalKind:
    try:
        return PrincipalKind(kind)
    except ValueError:
        allowed = ", ".join(k.value for k in PrincipalKind)
        raise InvalidInputError(f"kind {kind!r} is not a principal kind; use one of: {allowed}"
                                ) from None


def describe(token: ApiToken) -> dict[str, object]:
    """A token as lists and answers show it: never the secret, never the digest."""
    return {
        "token_id": str(token.id), "kind": token.kind.value, "subject": token.subject,
        "name": token.name, "scopes": list(token.scopes),
        "issued_at": token.issued_at.isoformat(), "issued_by": token.issued_by,
        "expires_at": token.expires_at.isoformat() if token.expires_at else None,
        "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None,
    }


__all__ = ["BOOTSTRAP_ACTOR", "IssuedToken", "TokenNotFoundError", "Tokens", "describe",
           "ensure_first_operator_token"]
