"""Running one admin or money command: once per idempotency key, retried on version conflicts.

Every command is an *attempt* function that loads the aggregates it needs, checks the rules and
returns what to save and the result. `CommandRunner.run` calls it in a loop:

1. If the command carries an idempotency key, the key is looked up in its scope first: a key
   already recorded with the same command returns the earlier result, with another command it is
   an `IdempotencyConflictError`.
2. The attempt runs on freshly loaded aggregates, and its events are saved together with the key
   (one transaction).
3. If the save fails on the event store's uniqueness (another writer took the aggregate's next
   version, or the same key, first), nothing was written: the loop waits a jittered, growing
   while and goes back to 1, so the next attempt sees the winner's events (or its key).

Why commands gave up before: contention on one team is the normal case for admin commands, and
a retry without a pause loses again to the writers that were already loading, so the slowest
loader (a team with events since its last snapshot) could lose every round. Two things fix it:
commands of one scope are serialised inside a process (a striped lock: threads of one process no
longer race each other at all), and conflicts with other processes are retried with full-jitter
exponential backoff up to a generous bound. Only a domain error, or `COMMAND_ATTEMPTS_MAX`
conflicts in a row (`ConcurrentUpdateError`), ends a command without its effect.

Keys are scoped: a team command's key lives in its team's scope, a team-less command's in the
principal's (registering a team, creating a package) or the package's scope, so one team's key
never blocks another's. `usage_id` is not handled here: it is global by design (see
`services.usage`).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from domain.errors import (
    ConcurrentUpdateError,
    IdempotencyConflictError,
    InvalidInputError,
    LedgerError,
)
from services.backoff import Backoff
from services.keyed_recording import COMMAND_SCOPE, KeyedRecorder, KeyRow

# Conflicts in a row after which a command gives up. With the waits below that is several
# seconds of losing to other writers on the same aggregates, far beyond any contention seen.
COMMAND_ATTEMPTS_MAX = 60
# Full-jitter backoff (services/backoff.py): before attempt n+1, wait uniformly in
# [0, min(LONGEST, FIRST * 2**n)].
COMMAND_RETRY_FIRST_WAIT_SECONDS = 0.002
COMMAND_RETRY_LONGEST_WAIT_SECONDS = 0.2
COMMAND_RETRY_BACKOFF = Backoff(first_seconds=2 * COMMAND_RETRY_FIRST_WAIT_SECONDS,
                                longest_seconds=COMMAND_RETRY_LONGEST_WAIT_SECONDS, jitter=True)
IDEMPOTENCY_KEY_LENGTH_MAX = 200
# Locks that serialise commands of one scope inside a process (scopes hash onto the stripes).
COMMAND_LOCK_STRIPES = 64


def team_scope(team_id: object) -> str:
    return f"{COMMAND_SCOPE}:team:{team_id}"


def principal_scope(user_id: str) -> str:
    return f"{COMMAND_SCOPE}:principal:{user_id}"


def package_scope(package_id: object) -> str:
    return f"{COMMAND_SCOPE}:package:{package_id}"


def command_fingerprint(name: str, arguments: dict[str, Any]) -> str:
    canonical = json.dumps([name, arguments], sort_keys=True, default=str)
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


def check_idempotency_key(key: str) -> None:
    # Any character but NUL (PostgreSQL text cannot hold it): callers derive keys from their own
    # request ids, which we do not get to choose.
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_LENGTH_MAX or "\x00" in key:
        raise InvalidInputError(
            f"idempotency key must be 1 to {IDEMPOTENCY_KEY_LENGTH_MAX} characters, without NUL")


@dataclass(frozen=True)
class Attempt:
    """What one attempt of a command decided: the aggregates to save and the result to return
    (as text, so that it can be kept with the idempotency key)."""

    aggregates: Sequence[Aggregate]
    result: str
    after_save: Callable[[], None] | None = None


@dataclass(frozen=True)
class Command:
    name: str
    scope: str
    arguments: dict[str, Any]
    actor_id: str
    idempotency_key: str | None = None


@dataclass
class CommandStats:
    """Counts since the application started (for metrics and tests)."""

    conflicts_retried: int = 0
    gave_up: int = 0
    attempts_most: int = 0  # the most attempts one command needed
    replayed_keys: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)

    def attempted(self, attempts: int) -> None:
        with self.lock:
            self.attempts_most = max(self.attempts_most, attempts)


class CommandRunner:
    def __init__(self, save: Callable[..., object], keyed: Callable[[], KeyedRecorder]) -> None:
        self._save = save
        self._keyed = keyed
        self._locks = [threading.Lock() for _ in range(COMMAND_LOCK_STRIPES)]
        self.stats = CommandStats()

    def run(self, command: Command, attempt: Callable[[], Attempt]) -> str:
        key_row = self._key_row(command)
        with self._locks[hash(command.scope) % COMMAND_LOCK_STRIPES]:
            for number in range(1, COMMAND_ATTEMPTS_MAX + 1):
                if key_row is not None:
                    earlier = self._earlier_result(key_row)
                    if earlier is not None:
                        self.stats.add("replayed_keys")
                        return earlier
                try:
                    decided = attempt()
                except LedgerError:
                    # Refused, perhaps because the same command (same key) by another process
                    # committed between our look at the key and our look at the aggregates:
                    # then it is a repeat, answered with the first answer, not an error.
                    earlier = self._earlier_result(key_row) if key_row is not None else None
                    if earlier is None:
                        raise
                    self.stats.add("replayed_keys")
                    return earlier
                keys = [KeyRow(key_row.scope, key_row.key, key_row.fingerprint,
                               decided.result)] if key_row is not None else []
                try:
                    self._save(*decided.aggregates, idempotency_keys=keys)
                except IntegrityError:
                    self.stats.add("conflicts_retried")
                    time.sleep(COMMAND_RETRY_BACKOFF.delay_seconds(number))
                    continue
                self.stats.attempted(number)
                if decided.after_save is not None:
                    decided.after_save()
                return decided.result
        self.stats.add("gave_up")
        raise ConcurrentUpdateError(
            f"{command.name} lost to concurrent changes {COMMAND_ATTEMPTS_MAX} times in a row; "
            "nothing was changed, try again")

    @staticmethod
    def _key_row(command: Command) -> KeyRow | None:
        if command.idempotency_key is None:
            return None
        check_idempotency_key(command.idempotency_key)
        fingerprint = command_fingerprint(
            command.name, {"actor": command.actor_id, **command.arguments})
        return KeyRow(command.scope, command.idempotency_key, fingerprint, "")

    def _earlier_result(self, row: KeyRow) -> str | None:
        found = self._keyed().select_keys(row.scope, [row.key]).get(row.key)
        if found is None:
            return None
        if found.fingerprint != row.fingerprint:
            raise IdempotencyConflictError(
                f"idempotency key {row.key!r} was already used for a different command; "
                "use a new key for a new command")
        return found.result
