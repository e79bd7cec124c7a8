"""The periodic reconciliation `ledger up` runs (adapters/runtime/stripe_reconciler.py), against
localstripe: it heals a paid top-up whose webhook never came, finds a difference Stripe alone
knows, records both sides in its status file, and runs as a `ledger up` runner until stopped."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from adapters.nats.ingest_settings import IngestSettings
from adapters.runtime.composition import open_ledger
from adapters.runtime.processes import Runtime
from adapters.runtime.projection_process import open_runner
from adapters.runtime.settings import ConfigurationError
from adapters.runtime.stripe_reconciler import (
    STATUS_FILE_NAME,
    interval_seconds,
    reconcile_all,
    run_stripe_reconciler,
    teams_with_payments,
    write_status,
)
from adapters.stripe.gateway import StripeGateway, make_client
from domain.money import NANOS_PER_UNIT
from services.actor import Actor
from services.payments.top_ups import TopUps
from tests.stripe.conftest import API_KEY, WEBHOOK_SECRET, settings_for

OWNER = Actor("owner-1")
TWENTY_USD_NANOS = 20 * NANOS_PER_UNIT
CENT_NANOS = NANOS_PER_UNIT // 100
RUNNER_PASS_SECONDS = 60.0


def test_a_pass_heals_a_lost_webhook_and_lists_what_only_stripe_knows(
        database_url: str, localstripe_url: str, localstripe: httpx.Client,
        tmp_path: Path) -> None:
    settings = settings_for(localstripe_url)
    gateway = StripeGateway(make_client(settings))
    ledger = open_ledger(database_url)
    try:
        team_id = ledger.register_team(team_key="periodic", name="Periodic", currency="USD",
                                       timezone="UTC", actor=OWNER)
        quiet = ledger.register_team(team_key="no-payments", name="Quiet", currency="USD",
                                     timezone="UTC", actor=OWNER)
        # Paid at Stripe, but its webhook never came: the ledger has not credited it.
        unsettled = TopUps(ledger, gateway, settings.top_up_limits).start_top_up(
            team_id, TWENTY_USD_NANOS, "pm_card_visa", OWNER, "lost-webhook")
        assert ledger.get_team(team_id).top_ups == {}
        with open_runner(database_url) as runner:
            runner.catch_up()
        assert teams_with_payments(database_url) == [team_id]  # `quiet` has none
        assert quiet not in teams_with_payments(database_url)

        healed = reconcile_all(database_url, settings)
        assert (healed.teams, healed.refreshed_payments) == (1, 1)
        assert healed.clean, healed
        assert ledger.get_team(team_id).top_ups == {
            str(unsettled.stripe_object_id): TWENTY_USD_NANOS}

        only_stripe = gateway.client.v1.refunds.create(
            params={"payment_intent": str(unsettled.stripe_object_id), "amount": 250})
        found = reconcile_all(database_url, settings)
        assert not found.clean and found.failures == []
        assert found.differences == [{
            "team_id": str(team_id), "currency": "USD", "kind": "refund",
            "stripe_object_id": only_stripe.id, "ledger_nanos": None,
            "stripe_nanos": str(250 * CENT_NANOS), "ledger_status": None,
            "stripe_status": None}]
        status = json.loads(write_status(tmp_path, found).read_text())
        assert status["clean"] is False
        assert status["differences"][0]["stripe_nanos"] == "2500000000"
    finally:
        ledger.close()


async def test_the_runner_writes_its_status_and_stops_when_told(
        database_url: str, localstripe_url: str, localstripe: httpx.Client,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_STRIPE_API_KEY", API_KEY)
    monkeypatch.setenv("LEDGER_STRIPE_WEBHOOK_SECRETS", WEBHOOK_SECRET)
    monkeypatch.setenv("LEDGER_STRIPE_API_BASE", localstripe_url)
    runtime = Runtime(database_url=database_url, nats_url="", data_dir=tmp_path,
                      ingest=IngestSettings())
    with open_runner(database_url) as runner:  # the read models exist, with no payments
        runner.catch_up()
    stop = asyncio.Event()
    running = asyncio.create_task(run_stripe_reconciler(runtime, stop))
    status = tmp_path / STATUS_FILE_NAME
    deadline = asyncio.get_running_loop().time() + RUNNER_PASS_SECONDS
    while not status.exists():
        assert asyncio.get_running_loop().time() < deadline, "no pass within the bound"
        await asyncio.sleep(0.1)
    assert json.loads(status.read_text())["clean"] is True
    stop.set()
    await asyncio.wait_for(running, RUNNER_PASS_SECONDS)


def test_the_interval_setting_is_bounded_and_named() -> None:
    assert interval_seconds({}) == 3600.0
    assert interval_seconds({"LEDGER_STRIPE_RECONCILE_INTERVAL_SECONDS": "60"}) == 60.0
    for bad in ("soon", "1", "99999999"):
        with pytest.raises(ConfigurationError, match="LEDGER_STRIPE_RECONCILE_INTERVAL"):
            interval_seconds({"LEDGER_STRIPE_RECONCILE_INTERVAL_SECONDS": bad})


def test_a_new_ledger_without_read_models_has_no_teams_to_reconcile(database_url: str) -> None:
    """`ledger up` on a new data folder starts this job before the projections made their
    tables: the pass finds nothing (and the runner does not fail `ledger up`)."""
    assert teams_with_payments(database_url) == []
