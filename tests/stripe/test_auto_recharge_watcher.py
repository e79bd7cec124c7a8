"""The watcher's bounds: policies found in the log a bounded number per pass, teams checked a
bounded number per pass in turn, a team whose balance is not projected yet skipped, and one
team's failure kept from the others."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import pytest

from adapters.stripe.gateway import StripeGateway, make_client
from adapters.stripe.settings import StripeSettings
from domain.money import NANOS_PER_UNIT
from services.ledger import Ledger
from services.payments import auto_recharge_watcher
from services.payments.auto_recharge import AutoRecharges, Observation
from services.payments.auto_recharge_watcher import AutoRechargeWatcher
from services.payments.port import PaymentProviderError
from services.payments.top_ups import TopUps
from tests.stripe.auto_recharge_support import priced_team, set_policy
from tests.stripe.stripe_http_double import StripeHttpDouble

SETTINGS = StripeSettings(api_key="sk_test_double", webhook_secrets=("whsec_x",),
                          network_retries=0)
HIGH = Observation(available_nanos=100 * NANOS_PER_UNIT, credited_nanos=0)


class Balances:
    def __init__(self) -> None:
        self.seen: dict[UUID, Observation] = {}
        self.asked: list[list[UUID]] = []

    def observe(self, team_ids: Sequence[UUID]) -> dict[UUID, Observation]:
        self.asked.append(list(team_ids))
        return {t: self.seen[t] for t in team_ids if t in self.seen}


def test_discovery_and_passes_are_bounded_and_round_robin(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auto_recharge_watcher, "DISCOVERIES_PER_PASS", 2)
    top_ups = TopUps(ledger, StripeGateway(make_client(SETTINGS, StripeHttpDouble())),
                     SETTINGS.top_up_limits)
    recharges = AutoRecharges(ledger, top_ups)
    teams = []
    for number in range(5):
        team_id, _ = priced_team(ledger, f"t{number}", balance_dollars=100)
        set_policy(recharges, team_id, threshold=20, amount=20, cap=100)
        teams.append(team_id)
    balances = Balances()
    balances.seen = {t: HIGH for t in teams[:4]}  # the last one is not projected yet
    watcher = AutoRechargeWatcher(recharges, balances, teams_per_pass=2)

    assert watcher.run_pass() == {teams[0]: "above threshold", teams[1]: "above threshold"}
    assert watcher.discover() == 2 and watcher.discover() == 1 and watcher.discover() == 0
    assert watcher.team_ids == teams
    assert set(watcher.run_pass()) == {teams[2], teams[3]}
    assert watcher.run_pass() == {teams[4]: "balance not projected yet",
                                  teams[0]: "above threshold"}
    assert all(len(asked) <= 2 for asked in balances.asked)

    def failing(team_id: UUID, seen: Observation) -> str:
        if team_id == teams[1]:
            raise PaymentProviderError("Stripe did not answer")
        return "above threshold"
    monkeypatch.setattr(recharges, "observe", failing)
    results = watcher.run_pass()
    assert results == {teams[1]: "error: Stripe did not answer", teams[2]: "above threshold"}
