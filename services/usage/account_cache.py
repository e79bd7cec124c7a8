"""The accounts that usage batches are priced on, kept between batches in a bounded LRU cache.

Loading an account with a long history costs far more than pricing a batch on it, so a process
keeps the accounts it charged. The event store's version check is what keeps the cache honest,
not the cache itself: a batch prepared on a stale copy fails to commit, its accounts are
forgotten and it is prepared again from what is stored.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from domain.account import Account

ACCOUNT_CACHE_SIZE_MAX = 20_000


class AccountCache:
    """`get` returns the cached account or loads it with `load` (a repository's `get`, which
    raises `AggregateNotFoundError` for an unknown id); None when no such account exists."""

    def __init__(self, load: Callable[[UUID], object],
                 size_max: int = ACCOUNT_CACHE_SIZE_MAX) -> None:
        self._load = load
        self._size_max = size_max
        self._accounts: OrderedDict[UUID, Account] = OrderedDict()

    def get(self, account_id: UUID) -> Account | None:
        cached = self._accounts.get(account_id)
        if cached is not None:
            self._accounts.move_to_end(account_id)
            return cached
        try:
            aggregate = self._load(account_id)
        except AggregateNotFoundError:
            return None
        if not isinstance(aggregate, Account):
            return None
        self._accounts[account_id] = aggregate
        while len(self._accounts) > self._size_max:
            self._accounts.popitem(last=False)
        return aggregate

    def forget(self, account_id: UUID) -> None:
        """Drop a cached account (its in-memory state may differ from what is stored)."""
        self._accounts.pop(account_id, None)

    def forget_all(self, account_ids: Iterable[UUID]) -> None:
        for account_id in account_ids:
            self._accounts.pop(account_id, None)
