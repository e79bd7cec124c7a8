"""Tokens and teams for authorization, cached by aggregate version and checked on every request.

Authorizing a request needs the caller's `ApiToken` (valid? which principal?) and, for team
routes, the `Team` (the caller's role). Loading both aggregates from the event store on every
request cost most of a read's time. Here each is kept in memory together with its version, and
every request first asks PostgreSQL for the current version of the aggregates it needs, in one
statement on the primary-key index of the events table:

    SELECT max(originator_version) FROM ledger_events WHERE originator_id = <id>

An aggregate's state is a pure function of its events, which are never changed, so an aggregate
whose cached version equals the newest stored version is exactly what a fresh load would give.
Any other answer (a newer version, or none) reloads it. A request reads the versions of its
token and of the team in its path together, in one statement, when it checks the token
(`RequestAggregates`). This is why the cache is correct without
invalidation messages, across any number of processes and app instances: a revocation or a role
change commits its event before the command returns, so the very next request, in any process,
reads the new version and reloads. The price is one indexed statement per request instead of one
or two aggregate loads.

Cached aggregates are shared between request threads and must only be read: commands load their
own copies (`services.command_runs`). Both maps are bounded (least recently used out).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate
from psycopg import sql
from psycopg_pool import ConnectionPool

from adapters.postgres.view_schema import EVENTS_TABLE
from domain.account import Account
from domain.errors import TeamNotFoundError
from domain.team import Team
from domain.tokens import ApiToken
from services.ledger import Ledger
from services.tokens import TokenNotFoundError, Tokens

TOKEN_CACHE_ENTRIES_MAX = 10_000
TEAM_CACHE_ENTRIES_MAX = 2_000

A = TypeVar("A", bound=Aggregate)

_VERSIONS = sql.SQL(
    "SELECT ids.id, (SELECT max(e.originator_version) FROM public.{events} e "
    "WHERE e.originator_id = ids.id) FROM unnest(%s::uuid[]) AS ids(id)"
).format(events=sql.Identifier(EVENTS_TABLE))


def stored_versions(pool: ConnectionPool[Any], ids: Sequence[UUID]) -> dict[UUID, int | None]:
    """The newest stored version of each aggregate (None: no events), in one statement."""
    with pool.connection() as conn:
        rows = conn.execute(_VERSIONS, (list(ids),)).fetchall()
    return {row[0]: row[1] for row in rows}


class VersionedCache(Generic[A]):
    """Aggregates by id with the version they were loaded at, least recently used out."""

    def __init__(self, load: Callable[[UUID], A], entries_max: int) -> None:
        self._load = load
        self._entries: OrderedDict[UUID, A] = OrderedDict()
        self._entries_max = entries_max
        self._lock = threading.Lock()
        self.loads = 0  # aggregate loads since start (tests and metrics)

    def get(self, aggregate_id: UUID, stored_version: int | None) -> A | None:
        """The aggregate at `stored_version` (just read from the store), loaded only if the
        cached copy is older; None when nothing is stored under the id."""
        if stored_version is None:
            self.forget(aggregate_id)
            return None
        with self._lock:
            cached = self._entries.get(aggregate_id)
            if cached is not None and cached.version >= stored_version:
                self._entries.move_to_end(aggregate_id)
                return cached
        loaded = self._load(aggregate_id)  # at least `stored_version`: events only grow
        with self._lock:
            self.loads += 1
            current = self._entries.get(aggregate_id)
            if current is None or current.version < loaded.version:
                self._entries[aggregate_id] = loaded
                self._entries.move_to_end(aggregate_id)
                while len(self._entries) > self._entries_max:
                    self._entries.popitem(last=False)
        return loaded

    def forget(self, aggregate_id: UUID) -> None:
        with self._lock:
            self._entries.pop(aggregate_id, None)


class AuthorizationSource:
    """Tokens and teams as authorization sees them: checked against the store's versions.

    It also answers `get_account` (uncached: an account's version moves with every usage
    record), so that `adapters.http.auth` takes one source for teams and accounts.
    """

    def __init__(self, ledger: Ledger, tokens: Tokens, pool: ConnectionPool[Any]) -> None:
        self.ledger = ledger
        self.pool = pool
        self.tokens: VersionedCache[ApiToken] = VersionedCache(tokens.get,
                                                               TOKEN_CACHE_ENTRIES_MAX)
        self.teams: VersionedCache[Team] = VersionedCache(ledger.get_team,
                                                          TEAM_CACHE_ENTRIES_MAX)

    def versions(self, ids: Sequence[UUID]) -> dict[UUID, int | None]:
        """The stored versions of several aggregates in one statement, to pass to `get_token`
        and `get_team` (a request reads its token's and its team's together)."""
        return stored_versions(self.pool, ids)

    def get_token(self, token_id: UUID, versions: dict[UUID, int | None] | None = None
                  ) -> ApiToken:
        """The token as stored now (or at the version in `versions`, read at the start of this
        request); `TokenNotFoundError` if it was never issued."""
        if versions is None or token_id not in versions:
            versions = stored_versions(self.pool, [token_id])
        version = versions.get(token_id)
        try:
            token = self.tokens.get(token_id, version)
        except TokenNotFoundError:
            token = None
        if token is None:
            raise TokenNotFoundError(f"token {token_id} does not exist")
        return token

    def get_team(self, team_id: UUID, versions: dict[UUID, int | None] | None = None) -> Team:
        """The team as stored now (or at the version in `versions`, read at the start of this
        request); `TeamNotFoundError` if there is none."""
        if versions is None or team_id not in versions:
            versions = stored_versions(self.pool, [team_id])
        version = versions.get(team_id)
        team = self.teams.get(team_id, version)
        if team is None:
            raise TeamNotFoundError(f"team {team_id} does not exist")
        return team

    def get_teams(self, team_ids: Sequence[UUID]) -> list[Team]:
        """The teams as stored now (those that exist), their versions read in one statement:
        listing teams loads only those that changed since they were cached."""
        versions = stored_versions(self.pool, team_ids)
        teams = (self.teams.get(team_id, versions.get(team_id)) for team_id in team_ids)
        return [team for team in teams if team is not None]

    def get_account(self, account_id: UUID) -> Account:
        return self.ledger.get_account(account_id)


class RequestAggregates:
    """`AuthorizationSource` for one request, with the versions read when its token was checked
    (the token's and the team's of the path, in one statement), so that authorizing a team
    route costs that one statement."""

    def __init__(self, source: AuthorizationSource, versions: dict[UUID, int | None]) -> None:
        self.source = source
        self.versions = versions

    def get_token(self, token_id: UUID) -> ApiToken:
        return self.source.get_token(token_id, self.versions)

    def get_team(self, team_id: UUID) -> Team:
        return self.source.get_team(team_id, self.versions)

    def get_teams(self, team_ids: Sequence[UUID]) -> list[Team]:
        return self.source.get_teams(team_ids)

    def get_account(self, account_id: UUID) -> Account:
        return self.source.get_account(account_id)
