"""The auto-recharge watcher: a loop beside the usage path, not in it.

Why here and not in the usage hot path: recording usage is the ledger's throughput-critical path
(batches of thousands of records per commit); a check there would add a policy load to every
batch and, worse, a Stripe call inside or after a usage commit. A watcher instead reads the
balance the projections already keep (the `teams` read model), a bounded number of teams per
pass, every `poll`: a recharge starts within one poll interval plus the projections' lag
of the crossing, and usage never waits for Stripe. Any number of watchers may run (one per
`ledger up`): the policy's optimistic writes make them agree on each crossing.

Which teams: the policies are found in the notification log (their `Created` event, read with a
topic filter from the last position seen, a bounded number per pass), so the watcher needs no
index of its own; each pass then takes the next `teams_per_pass` of them, round robin.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol
from uuid import UUID

from eventsourcing.utils import get_topic

from domain.auto_recharge import AutoRechargePolicy
from domain.errors import LedgerError
from services.payments.auto_recharge import AutoRecharges, Observation
from services.payments.port import PaymentProviderError

log = logging.getLogger("ledger.auto_recharge")

TEAMS_PER_PASS_DEFAULT = 200
TEAMS_PER_PASS_MAX = 10_000
POLL_DEFAULT = timedelta(seconds=5)
POLL_MIN = timedelta(milliseconds=50)
POLL_MAX = timedelta(hours=1)
# Policy creations read from the log per pass (more are found in the following passes).
DISCOVERIES_PER_PASS = 1_000
# Teams a watcher follows at most; beyond this, raise it (memory: one pair of UUIDs a team).
WATCHED_TEAMS_MAX = 1_000_000
# Results worth a log line (a step that changed something); the others repeat every pass.
LOGGED_RESULTS = ("charged", "closed", "rearmed")
CREATED_TOPIC = get_topic(AutoRechargePolicy.Created)


class BalanceReader(Protocol):
    def observe(self, team_ids: Sequence[UUID]) -> dict[UUID, Observation]:
        """The balances the read model shows for these teams (absent: not projected yet)."""
        ...


class AutoRechargeWatcher:
    def __init__(self, recharges: AutoRecharges, balances: BalanceReader,
                 teams_per_pass: int = TEAMS_PER_PASS_DEFAULT) -> None:
        if not 1 <= teams_per_pass <= TEAMS_PER_PASS_MAX:
            raise ValueError(f"teams_per_pass must be 1 to {TEAMS_PER_PASS_MAX}")
        self.recharges = recharges
        self.balances = balances
        self.teams_per_pass = teams_per_pass
        self.team_ids: list[UUID] = []
        self.known: set[UUID] = set()
        self.position = 0  # the last log position searched for new policies
        self.cursor = 0  # where the next pass starts in `team_ids`

    def discover(self) -> int:
        """Find policies created since the last look; returns how many were new."""
        recorder = self.recharges.ledger.recorder
        head = recorder.max_notification_id() or 0
        if head <= self.position:
            return 0
        found = recorder.select_notifications(
            self.position, DISCOVERIES_PER_PASS, stop=head, topics=[CREATED_TOPIC],
            inclusive_of_start=False)
        for notification in found:
            policy: AutoRechargePolicy = self.recharges.ledger.repository.get(
                UUID(str(notification.originator_id)))
            if policy.team_id in self.known:
                continue
            if len(self.team_ids) >= WATCHED_TEAMS_MAX:
                log.error("auto-recharge watches %d teams, its most (WATCHED_TEAMS_MAX); team "
                          "%s is not watched: raise the limit", WATCHED_TEAMS_MAX,
                          policy.team_id)
                continue
            self.team_ids.append(policy.team_id)
            self.known.add(policy.team_id)
        full = len(found) == DISCOVERIES_PER_PASS
        self.position = found[-1].id if full else head
        return len(found)

    def run_pass(self) -> dict[UUID, str]:
        """Discover, then one trigger step for each of the next `teams_per_pass` teams."""
        self.discover()
        if not self.team_ids:
            return {}
        count = min(self.teams_per_pass, len(self.team_ids))
        start = self.cursor % len(self.team_ids)
        chosen = (self.team_ids[start:] + self.team_ids[:start])[:count]
        self.cursor = start + count
        seen = self.balances.observe(chosen)
        results: dict[UUID, str] = {}
        for team_id in chosen:
            if team_id not in seen:
                results[team_id] = "balance not projected yet"
                continue
            try:
                results[team_id] = self.recharges.observe(team_id, seen[team_id])
            except (LedgerError, PaymentProviderError) as error:
                # One team's problem (suspended, Stripe down...) never stops the others.
                results[team_id] = f"error: {error}"
                log.warning("auto-recharge of team %s: %s", team_id, error)
                continue
            if results[team_id].startswith(LOGGED_RESULTS) or \
                    results[team_id] == "daily cap reached":
                log.info("auto-recharge of team %s: %s", team_id, results[team_id])
        return results

    def run(self, stop: threading.Event, poll: timedelta = POLL_DEFAULT) -> None:
        """Pass after pass until `stop` is set. A server failure propagates: the runner that
        wraps this loop starts it again with backoff (adapters/runtime/processes.py)."""
        if not POLL_MIN <= poll <= POLL_MAX:
            raise ValueError(f"poll must be {POLL_MIN} to {POLL_MAX}, got {poll}")
        while not stop.is_set():
            self.run_pass()
            stop.wait(poll.total_seconds())
