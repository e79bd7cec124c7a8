"""The answers people read: a team's balance and usage windows, with the log position behind them.

Both the live read models and `ledger balance --as-of` (a replay in memory) answer through
`balance_answer`, so "as of" and "now" cannot disagree on how an answer is put together.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from projections.authorization import Freshness
from projections.fold import AccountView, BatchChanges, TeamView, ViewFolder
from projections.runner import FailureKind, ProjectionFailure
from projections.windows import BucketKey, UsageTotals, report_from_buckets


def balance_answer(team: TeamView, accounts: list[AccountView],
                   buckets: dict[BucketKey, UsageTotals], now: datetime,
                   freshness: Freshness) -> dict[str, Any]:
    report = report_from_buckets(buckets, now, team.timezone)
    return {
        **freshness.as_dict(),
        "as_of": now.isoformat(),
        "balance": team.as_dict(),
        "accounts": [{"account_id": str(a.account_id), "account_key": a.account_key,
                      "name": a.name, "status": a.status, "usage_count": a.usage_count,
                      "spent_nanos": a.spent_nanos} for a in accounts],
        "usage": report.as_dict(),
    }


class MemoryViewStore:
    """Read models in memory: what `ledger balance --as-of` folds the history into."""

    def __init__(self) -> None:
        self.folder = ViewFolder()
        self.buckets: dict[tuple[Any, ...], UsageTotals] = {}
        self.recorded_failure: ProjectionFailure | None = None

    def load_folder(self) -> ViewFolder:
        # The runner reloads after a failed batch; memory has nothing committed to reload.
        return self.folder

    def stage(self, changes: BatchChanges) -> BatchChanges:
        return changes

    def finish(self, staged: BatchChanges) -> None:
        self.commit(staged)

    def abort(self, staged: BatchChanges) -> None:
        """Nothing was written; the runner reloads the folder (memory's own) after a failure."""

    def failure(self) -> ProjectionFailure | None:
        return self.recorded_failure

    def record_failure(self, failure: ProjectionFailure) -> None:
        self.recorded_failure = failure

    def clear_failure(self) -> None:
        self.recorded_failure = None

    @staticmethod
    def failure_kind(error: BaseException) -> FailureKind:
        return FailureKind.EVENT  # memory has no connection to lose

    def reconnect(self) -> None:
        """Nothing to reconnect."""

    def commit(self, changes: BatchChanges) -> None:
        for key, sums in changes.usage.items():
            self.buckets.setdefault(key, UsageTotals()).add(UsageTotals(*sums))

    def team_buckets(self, team: TeamView) -> dict[BucketKey, UsageTotals]:
        return {(str(account_id), model, day): totals
                for (team_id, account_id, model, day), totals in self.buckets.items()
                if team_id == team.team_id}

    def accounts_of(self, team: TeamView) -> list[AccountView]:
        return sorted((a for a in self.folder.accounts.values() if a.team_id == team.team_id),
                      key=lambda a: a.account_key)
