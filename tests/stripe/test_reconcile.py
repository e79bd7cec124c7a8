"""`ledger reconcile --team T` against localstripe: agreeing books exit 0; a difference injected
on either side (a refund only Stripe knows, a top-up only the ledger knows) is listed with both
sides and exits 1."""

from __future__ import annotations

import httpx
import pytest

from adapters.cli.main import main
from adapters.runtime.composition import open_ledger
from adapters.stripe.gateway import StripeGateway, make_client
from domain.money import NANOS_PER_UNIT
from services.actor import Actor
from services.ledger import Ledger
from services.payments.port import ChargeInfo, DisputeInfo, RefundInfo
from services.payments.reconciliation import Difference, reconcile_team
from services.payments.top_ups import TopUps
from tests.stripe.conftest import API_KEY, WEBHOOK_SECRET, settings_for

OWNER = Actor("owner-1")
TWENTY_USD_NANOS = 20 * NANOS_PER_UNIT
CENT_NANOS = NANOS_PER_UNIT // 100


def test_reconcile_lists_a_difference_on_each_side_and_exits_non_zero(
        database_url: str, localstripe_url: str, localstripe: httpx.Client,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_for(localstripe_url)
    gateway = StripeGateway(make_client(settings))
    ledger = open_ledger(database_url)
    try:
        team_id = ledger.register_team(team_key="recon", name="Recon", currency="USD",
                                       timezone="UTC", actor=OWNER)
        top_ups = TopUps(ledger, gateway, settings.top_up_limits)
        paid = top_ups.refresh_payment(top_ups.start_top_up(
            team_id, TWENTY_USD_NANOS, "pm_card_visa", OWNER, "r1").id)
        top_ups.start_top_up(team_id, TWENTY_USD_NANOS, "pm_card_chargeCustomerFail", OWNER,
                             "r2")
        intent_id = paid.stripe_object_id
        assert intent_id is not None
        assert reconcile_team(ledger, gateway, team_id).matches

        monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
        monkeypatch.setenv("LEDGER_STRIPE_API_KEY", API_KEY)
        monkeypatch.setenv("LEDGER_STRIPE_WEBHOOK_SECRETS", WEBHOOK_SECRET)
        monkeypatch.setenv("LEDGER_STRIPE_API_BASE", localstripe_url)
        assert main(["reconcile", "--team", "recon"]) == 0
        assert "ledger and Stripe agree" in capsys.readouterr().out

        only_stripe = gateway.client.v1.refunds.create(
            params={"payment_intent": intent_id, "amount": 250})
        ledger.credit_top_up(team_id, "pi_only_in_ledger", 700, "USD", OWNER)
        report = reconcile_team(ledger, gateway, team_id)
        assert report.differences == [
            Difference("top_up", "pi_only_in_ledger", 700 * CENT_NANOS, None),
            Difference("refund", only_stripe.id, None, 250 * CENT_NANOS)]
        assert main(["reconcile", "--team", "recon"]) == 1
        out = capsys.readouterr().out
        assert "DIFFERENT top_up pi_only_in_ledger: ledger 7.000000000 USD, Stripe missing" \
            in out
        assert f"DIFFERENT refund {only_stripe.id}: ledger missing, Stripe 2.500000000 USD" \
            in out

        # A paid top-up whose webhook never came: a difference until --refresh records it.
        unsettled = top_ups.start_top_up(team_id, TWENTY_USD_NANOS, "pm_card_visa", OWNER,
                                         "r3").stripe_object_id
        assert Difference("top_up", str(unsettled), None, TWENTY_USD_NANOS) in \
            reconcile_team(ledger, gateway, team_id).differences
        assert main(["reconcile", "--team", "recon", "--refresh"]) == 1
        out = capsys.readouterr().out
        assert "refreshed 1 unfinished payment(s)" in out and str(unsettled) not in out
        assert ledger.get_team(team_id).top_ups[str(unsettled)] == TWENTY_USD_NANOS
    finally:
        ledger.close()


def test_reconcile_without_stripe_settings_says_what_to_set(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("LEDGER_STRIPE_API_KEY", raising=False)
    assert main(["reconcile", "--team", "any"]) == 2
    assert "LEDGER_STRIPE_API_KEY" in capsys.readouterr().err


class DisputedStripe:
    """Stripe's side for one disputed top-up (the parts of the port reconcile reads)."""

    def __init__(self, dispute_status: str) -> None:
        self.dispute_status = dispute_status

    def list_charges(self, customer_id: str) -> list[ChargeInfo]:
        return [ChargeInfo("ch_1", "pi_1", 1000, 0, "USD", "succeeded", disputed=True)]

    def list_refunds(self, intent_id: str) -> list[RefundInfo]:
        return []

    def list_disputes(self, intent_id: str) -> list[DisputeInfo]:
        return [DisputeInfo("dp_1", intent_id, 500, "USD", self.dispute_status)]


@pytest.mark.parametrize(("dispute_status", "differences"), [
    ("lost", []),
    ("won", [Difference("dispute", "dp_1", 500 * CENT_NANOS, None)]),
])
def test_reconcile_compares_lost_disputes(dispute_status: str,
                                          differences: list[Difference]) -> None:
    ledger = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    team_id = ledger.register_team(team_key="d", name="D", currency="USD", timezone="UTC",
                                   actor=OWNER)
    ledger.link_stripe_customer(team_id, "cus_1", OWNER)
    ledger.credit_top_up(team_id, "pi_1", 1000, "USD", OWNER)
    ledger.refund_top_up(team_id, "pi_1", "dp_1", 500, "USD", OWNER)
    gateway = DisputedStripe(dispute_status)
    report = reconcile_team(ledger, gateway, team_id)  # type: ignore[arg-type]
    assert report.differences == differences
