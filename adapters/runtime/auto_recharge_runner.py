"""The auto-recharge watcher as a process of `ledger up` (see services/payments/auto_recharge_
watcher.py for why it is a watcher of the read model and not part of the usage path).

Settings (environment):
LEDGER_AUTO_RECHARGE_POLL_SECONDS      seconds between passes (default 5; 0.05 to 3600).
LEDGER_AUTO_RECHARGE_TEAMS_PER_PASS    teams whose balance one pass checks (default 200; the
                                       others are checked in the following passes, round robin).
Without Stripe configured (LEDGER_STRIPE_API_KEY unset) the watcher logs that once and idles.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from adapters.postgres.view_schema import LIVE_SCHEMA
from adapters.runtime.composition import open_ledger
from adapters.runtime.processes import Runtime, thread_runner
from adapters.runtime.settings import ConfigurationError
from adapters.stripe.billing import StripeBilling
from projections.views import TeamView
from services.ledger import Ledger
from services.payments.auto_recharge import AutoRecharges, Observation
from services.payments.auto_recharge_watcher import (
    POLL_DEFAULT,
    POLL_MAX,
    POLL_MIN,
    TEAMS_PER_PASS_DEFAULT,
    TEAMS_PER_PASS_MAX,
    AutoRechargeWatcher,
)

log = logging.getLogger(__name__)

_BALANCE_QUERY = ("SELECT team_id, credit_limit_nanos, credited_nanos, refunded_nanos, "
                  "adjusted_nanos, spent_nanos FROM {s}.teams WHERE team_id = ANY(%s)")


class PostgresBalances:
    """The `teams` read model's balance of each team, read in one statement per pass."""

    def __init__(self, database_url: str, schema: str = LIVE_SCHEMA) -> None:
        self.conn: psycopg.Connection[Any] = psycopg.connect(database_url, autocommit=True)
        self.query = sql.SQL(_BALANCE_QUERY).format(s=sql.Identifier(schema))

    def observe(self, team_ids: Sequence[UUID]) -> dict[UUID, Observation]:
        rows = self.conn.execute(self.query, [list(team_ids)]).fetchall()
        seen: dict[UUID, Observation] = {}
        for team_id, limit, credited, refunded, adjusted, spent in rows:
            view = TeamView(team_id, "", "", "", credit_limit_nanos=int(limit),
                            credited_nanos=int(credited), refunded_nanos=int(refunded),
                            adjusted_nanos=int(adjusted), spent_nanos=int(spent))
            seen[team_id] = Observation(view.available_nanos, view.credited_nanos)
        return seen

    def close(self) -> None:
        self.conn.close()


def _setting(env: Mapping[str, str], name: str, default: float, low: float,
             high: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)  # a duration or a count, never money
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be a number from {low} to {high}, got {raw!r}")
    return value


def watcher_settings(env: Mapping[str, str] | None = None) -> tuple[timedelta, int]:
    """(poll interval, teams per pass) from the environment."""
    env = os.environ if env is None else env
    poll = _setting(env, "LEDGER_AUTO_RECHARGE_POLL_SECONDS", POLL_DEFAULT.total_seconds(),
                    POLL_MIN.total_seconds(), POLL_MAX.total_seconds())
    teams = _setting(env, "LEDGER_AUTO_RECHARGE_TEAMS_PER_PASS", TEAMS_PER_PASS_DEFAULT, 1,
                     TEAMS_PER_PASS_MAX)
    if teams != int(teams):
        raise ConfigurationError("LEDGER_AUTO_RECHARGE_TEAMS_PER_PASS must be a whole number")
    return timedelta(seconds=poll), int(teams)


def make_watcher(ledger: Ledger, billing: StripeBilling, balances: PostgresBalances,
                 teams_per_pass: int = TEAMS_PER_PASS_DEFAULT) -> AutoRechargeWatcher:
    return AutoRechargeWatcher(AutoRecharges(ledger, billing.top_ups), balances, teams_per_pass)


def run_watcher(runtime: Runtime, stop: threading.Event) -> None:
    poll, teams_per_pass = watcher_settings()
    ledger = open_ledger(runtime.database_url)
    try:
        try:
            billing = StripeBilling.from_env(ledger)
        except ConfigurationError as error:  # the message names the variable, not a secret
            log.error("auto-recharge is off: %s", error)
            billing = None
        if billing is None:
            log.info("auto-recharge is off: Stripe is not configured (LEDGER_STRIPE_API_KEY)")
            stop.wait()
            return
        balances = PostgresBalances(runtime.database_url)
        try:
            make_watcher(ledger, billing, balances, teams_per_pass).run(stop, poll)
        finally:
            balances.close()
    finally:
        ledger.close()


auto_recharge_up_runner = thread_runner(run_watcher)
