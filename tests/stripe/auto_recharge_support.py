"""Builders for the auto-recharge tests: a priced team whose usage costs one dollar a record, the
trigger wired to a Stripe (localstripe or the SDK double), the projections caught up on demand."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import stripe

from adapters.runtime.auto_recharge_runner import PostgresBalances
from adapters.runtime.composition import open_ledger
from adapters.runtime.priced_teams import open_priced_team
from adapters.runtime.projection_process import open_runner
from adapters.stripe.billing import StripeBilling
from adapters.stripe.settings import StripeSettings
from domain.auto_recharge import AutoRechargePolicy, RechargeSettings
from domain.money import NANOS_PER_UNIT
from domain.pricing import PriceTerms
from domain.usage import UsageRecord
from services.actor import Actor
from services.backoff import Backoff
from services.ledger import Ledger
from services.payments.auto_recharge import AutoRecharges
from services.payments.auto_recharge_watcher import AutoRechargeWatcher

OWNER = Actor("olivia")
OPERATOR = Actor.operator("ops")
DOLLAR = NANOS_PER_UNIT
SINCE = datetime(2026, 1, 1, tzinfo=UTC)
ONE_DOLLAR_A_REQUEST = PriceTerms(request_nanos=DOLLAR, input_token_nanos=0,
                                  cached_input_token_nanos=0, output_token_nanos=0)
FAST_BACKOFF = Backoff(first_seconds=0.3, longest_seconds=1.0)
_usage_ids = itertools.count()


@dataclass
class Trigger:
    """One process's view: its own Ledger (its own connections), the trigger and a watcher."""

    ledger: Ledger
    recharges: AutoRecharges
    watcher: AutoRechargeWatcher
    balances: PostgresBalances

    def close(self) -> None:
        self.balances.close()
        self.ledger.close()


def open_trigger(database_url: str, settings: StripeSettings,
                 http_client: stripe.HTTPClient | None = None,
                 resume_after: timedelta = timedelta(minutes=5)) -> Trigger:
    ledger = open_ledger(database_url)
    billing = StripeBilling.create(ledger, settings, http_client)
    # read_after 0: the PaymentIntent is read at the next pass (no webhook in these tests).
    recharges = AutoRecharges(ledger, billing.top_ups, backoff=FAST_BACKOFF,
                              resume_after=resume_after, read_after=timedelta(0))
    balances = PostgresBalances(database_url)
    return Trigger(ledger, recharges, AutoRechargeWatcher(recharges, balances), balances)


def priced_team(ledger: Ledger, key: str, balance_dollars: int) -> tuple[UUID, UUID]:
    """A team with one account whose every request costs a dollar, and a starting balance."""
    team = open_priced_team(ledger, team_key=key, terms=ONE_DOLLAR_A_REQUEST, owner=OWNER,
                            operator=OPERATOR, timezone="Europe/Berlin", since=SINCE,
                            account_keys=["seat-1"])
    ledger.record_adjustment(team.team_id, "opening", balance_dollars * DOLLAR, "opening",
                             OWNER)
    return team.team_id, team.account_ids[0]


def spend(ledger: Ledger, account_id: UUID, dollars: int) -> None:
    records = [UsageRecord(usage_id=f"use-{next(_usage_ids)}-{account_id}",
                           account_id=account_id, occurred_at=SINCE + timedelta(days=30),
                           model="gpt-x", success=True, input_tokens=0, output_tokens=0)
               for _ in range(dollars)]
    outcome = ledger.record_usage_batch(records)
    assert not outcome.rejections, outcome.rejections
    assert outcome.cost_nanos == dollars * DOLLAR


def set_policy(recharges: AutoRecharges, team_id: UUID, *, threshold: int, amount: int,
               cap: int, card: str = "pm_card_visa", enabled: bool = True) -> str:
    _, result = recharges.configure(team_id, RechargeSettings(
        threshold * DOLLAR, amount * DOLLAR, cap * DOLLAR, card), enabled, OWNER)
    return result


def policy_of(ledger: Ledger, team_id: UUID) -> AutoRechargePolicy:
    found = AutoRecharges(ledger, None).find(team_id)  # type: ignore[arg-type]
    assert found is not None
    return found


@contextmanager
def projecting(database_url: str, interval_seconds: float = 0.05) -> Iterator[None]:
    """The projections followed in a thread, as `ledger up` does."""
    stop = threading.Event()
    with open_runner(database_url) as runner:
        runner.catch_up()

        def follow() -> None:
            while not stop.wait(interval_seconds):
                runner.catch_up()
        thread = threading.Thread(target=follow, name="test-projections", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def catch_up(database_url: str) -> None:
    with open_runner(database_url) as runner:
        runner.catch_up()
