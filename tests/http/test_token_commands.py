"""Token commands run through `CommandRunner` like every admin command: two processes issuing at
the same moment both succeed (the token directory's version conflicts are retried), a repeated
idempotency key never shows a second secret, and a reused key for another token is a conflict."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from adapters.runtime.composition import open_ledger
from domain.errors import IdempotencyConflictError, InvalidStateError
from services.actor import Actor
from services.tokens import IssuedToken, Tokens

ISSUES_PER_PROCESS = 6
OPERATOR = Actor.operator("ops")


def issue(tokens: Tokens, subject: str, key: str | None = None) -> IssuedToken:
    return tokens.issue(kind="user", subject=subject, name=f"token of {subject}", scopes=[],
                        expires_at=None, actor=OPERATOR, idempotency_key=key)


def test_concurrent_issues_from_two_processes_all_succeed(database_url: str) -> None:
    ledgers = [open_ledger(database_url), open_ledger(database_url)]
    try:
        def issue_many(n: int) -> list[IssuedToken]:
            tokens = Tokens(ledgers[n])
            return [issue(tokens, f"user-{n}-{i}") for i in range(ISSUES_PER_PROCESS)]

        with ThreadPoolExecutor(max_workers=2) as pool:
            issued = [t for batch in pool.map(issue_many, range(2)) for t in batch]
        listed = {t.id for t in Tokens(ledgers[0]).list()}
        assert {t.token.id for t in issued} <= listed
        assert len(listed) == 2 * ISSUES_PER_PROCESS
    finally:
        for ledger in ledgers:
            ledger.close()


def test_a_repeated_key_shows_no_second_secret_and_a_reused_key_conflicts(
        database_url: str) -> None:
    ledger = open_ledger(database_url)
    try:
        tokens = Tokens(ledger)
        first = issue(tokens, "dana", key="dana-1")
        with pytest.raises(InvalidStateError, match=str(first.token.id)):
            issue(tokens, "dana", key="dana-1")
        with pytest.raises(IdempotencyConflictError):
            issue(tokens, "erin", key="dana-1")
        assert [t.id for t in tokens.list()] == [first.token.id]
    finally:
        ledger.close()
