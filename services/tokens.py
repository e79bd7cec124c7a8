"""Issuing, listing, revoking and checking API tokens, saved through the Ledger application.

Tokens are aggregates of the same application as teams and accounts, so issuing and revoking
are events in the one log, with their actor, and show in the audit trail like every admin action.
Only operators issue and revoke tokens; the very first operator token is issued by the system
actor `system:bootstrap` when a data folder is new (see `ensure_first_operator_token`).

The secret is returned once, from `issue`; the application keeps only its digest. Issuing runs
through `services.command_runs.CommandRunner` like every admin command (version conflicts on the
token directory retried, the idempotency key saved with the events). A retried issue with the
same key does not make a second token, but it cannot show the secret again either, so it answers
with an error naming the token already issued; the same key for a different token is an
`IdempotencyConflictError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

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
from services.command_runs import Attempt, Command
from services.ledger import Ledger

# Every issue adds to the one token directory, so issues share one command scope: inside a
# process they run one at a time, across processes `CommandRunner` retries the directory's
# version conflicts. The scope also holds their idempotency keys.
TOKEN_COMMAND_SCOPE = "token"
BOOTSTRAP_ACTOR = Actor.system("bootstrap")
FIRST_OPERATOR_USER_ID = "operator"
# The key makes the first operator token once, even when two processes start together.
FIRST_OPERATOR_TOKEN_KEY = "bootstrap:first-operator-token"


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
        issued: list[IssuedToken] = []

        def attempt() -> Attempt:
            secret = new_token_secret()
            token = ApiToken.issue(digest=token_digest(secret), kind=principal_kind,
                                   subject=subject, name=name, scopes=parsed_scopes,
                                   issued_at=self.clock(), expires_at=expires_at,
                                   actor=actor.user_id)
            directory = self._directory()
            directory.add(token.id)
            return Attempt([token, directory], str(token.id),
                           after_save=lambda: issued.append(IssuedToken(token, secret)))

        arguments = {"kind": kind, "subject": subject, "name": name, "scopes": sorted(scopes),
                     "expires_at": expires_at.isoformat() if expires_at else None}
        token_id = self.ledger.commands.run(
            Command("issue_token", TOKEN_COMMAND_SCOPE, arguments, actor.user_id,
                    idempotency_key), attempt)
        if not issued:
            # The key was recorded by an earlier issue: its token exists, its secret is gone.
            raise InvalidStateError(
                f"token {token_id} was already issued under idempotency key "
                f"{idempotency_key!r}; its secret was shown once and is not kept. Revoke it and "
                "issue a new one if the secret was lost")
        return issued[0]

    def revoke(self, token_id: UUID, reason: str, actor: Actor) -> ApiToken:
        if not actor.is_operator:
            raise PermissionDeniedError(
                f"user {actor.user_id!r} is not an operator; only operators revoke tokens")
        revoked: list[ApiToken] = []

        def attempt() -> Attempt:
            token = self.get(token_id)
            token.revoke(reason, self.clock(), actor.user_id)
            return Attempt([token], str(token.id), after_save=lambda: revoked.append(token))

        self.ledger.commands.run(Command("revoke_token", f"{TOKEN_COMMAND_SCOPE}:{token_id}",
                                         {"token_id": str(token_id), "reason": reason},
                                         actor.user_id), attempt)
        return revoked[0]

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
