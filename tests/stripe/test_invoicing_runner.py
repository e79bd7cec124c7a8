"""The monthly invoicing job `ledger up` runs (adapters/runtime/invoicing_runner.py): months
drafted in order once they ended and never before the team existed, finalized after the grace,
collected through the SDK-level Stripe double (localstripe has no one-off invoices), zero due
marked paid, no Stripe leaves it uncollected until Stripe is there, two concurrent passes make
one invoice per month, and one failing team does not stop the others."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from adapters.http.app import create_app
from adapters.nats.ingest_settings import IngestSettings
from adapters.runtime.composition import open_ledger
from adapters.runtime.invoicing_runner import (
    STATUS_FILE_NAME,
    PassReport,
    finalize_after,
    interval_seconds,
    invoicing_pass,
    run_invoicing,
    write_status,
)
from adapters.runtime.processes import UP_RUNNERS, Runtime
from adapters.runtime.projection_process import open_runner
from adapters.runtime.settings import ConfigurationError
from adapters.stripe.settings import StripeSettings
from domain.invoice import InvoiceStatus
from domain.usage import UsageRecord
from services.actor import Actor
from services.invoicing.drafting import monthly_invoice_id
from services.invoicing.monthly import month_period
from services.invoicing.monthly_job import month_end
from services.ledger import Ledger
from services.tokens import ensure_first_operator_token
from tests.http.conftest import Api
from tests.http.support import make_team
from tests.stripe.stripe_invoice_double import StripeInvoiceDouble

SETTINGS = StripeSettings(api_key="sk_test_double", webhook_secrets=("whsec_invoicing",))
GRACE = timedelta(hours=72)
ZONE = ZoneInfo("Europe/Berlin")  # make_team's timezone
RUNNER_PASS_SECONDS = 60.0


@dataclass
class Teams:
    ledger: Ledger
    database_url: str
    busy: UUID  # usage a day ago: an amount due
    idle: UUID  # no usage: zero due

    def month_after_registration(self, months: int) -> str:
        registered = self.ledger.get_team(self.busy).created_on.astimezone(ZONE)
        index = registered.year * 12 + registered.month - 1 + months
        return f"{index // 12:04d}-{index % 12 + 1:02d}"

    def set_clock(self, at: datetime) -> None:
        self.ledger.clock = lambda: at

    def catch_up(self) -> None:
        with open_runner(self.database_url) as runner:
            runner.catch_up()


@pytest.fixture
def teams(database_url: str) -> Iterator[Teams]:
    ledger = open_ledger(database_url)
    issued = ensure_first_operator_token(ledger)
    assert issued is not None
    app = create_app(ledger, database_url, include_dashboard=False)
    with TestClient(app) as client:
        api = Api(client, ledger, database_url, issued.secret)
        busy = make_team(api, "busy")
        idle = make_team(api, "idle", busy.package_id)
        at = max(datetime.now(UTC) - timedelta(hours=1),
                 datetime.combine(datetime.now(ZONE).date().replace(day=1), datetime.min.time(),
                                  ZONE).astimezone(UTC) + timedelta(minutes=1))
        ledger.record_usage_batch([UsageRecord(
            usage_id=f"u{i}", account_id=UUID(account), occurred_at=at, model="m1",
            success=True, input_tokens=1_234_567 + i, output_tokens=10)
            for i, account in enumerate((busy.member_account, busy.other_account))])
        found = Teams(ledger, database_url, UUID(busy.team_id), UUID(idle.team_id))
        found.catch_up()
        yield found
    ledger.close()


def test_months_are_drafted_in_order_once_ended_never_before_the_team(teams: Teams) -> None:
    first = teams.month_after_registration(0)
    before_team = teams.month_after_registration(-1)
    teams.set_clock(datetime.now(UTC))  # the registration month has not ended
    report = invoicing_pass(teams.ledger, teams.database_url, SETTINGS, StripeInvoiceDouble())
    assert (report.teams, report.drafted, report.failures) == (2, [], [])

    third_end = month_end(teams.month_after_registration(2), "Europe/Berlin")
    teams.set_clock(third_end + timedelta(hours=1))  # three months over, the last one just
    report = invoicing_pass(teams.ledger, teams.database_url, None, grace=GRACE)
    months = [teams.month_after_registration(n) for n in range(3)]
    assert [d["invoice"] for d in report.drafted if d["team_id"] == str(teams.busy)] == months
    assert report.failures == []
    assert not teams.ledger.exists(monthly_invoice_id(teams.busy, before_team))
    invoices = [teams.ledger.get_invoice(monthly_invoice_id(teams.busy, m)) for m in months]
    # The first two months are past the grace: finalized, numbered in month order.
    assert [i.number for i in invoices] == ["BUSY-000001", "BUSY-000002", None]
    assert invoices[2].status == InvoiceStatus.DRAFT
    assert invoices[0].usage_basis is not None and invoices[0].usage_basis["previous"] is None
    assert invoices[1].usage_basis is not None
    assert invoices[1].usage_basis["previous"] == f"for {months[0]}"  # drafted before
    assert sum(int(line["amount_nanos"]) for line in invoices[0].lines) > 0
    assert first == months[0]
    # Without Stripe the first month's amount due waits, finalized and uncollected.
    assert invoices[0].status == InvoiceStatus.FINALIZED
    assert {"team_id": str(teams.busy), "invoice": "BUSY-000001"} in report.uncollected
    assert not report.clean

    again = invoicing_pass(teams.ledger, teams.database_url, None, grace=GRACE)
    assert again.drafted == [] and again.finalized == []  # idempotent


def test_finalized_after_the_grace_collected_through_stripe_and_zero_due_paid(
        teams: Teams, tmp_path: Path) -> None:
    month = teams.month_after_registration(0)
    end = month_end(month, "Europe/Berlin")
    double = StripeInvoiceDouble()
    teams.set_clock(end + GRACE - timedelta(minutes=1))
    report = invoicing_pass(teams.ledger, teams.database_url, SETTINGS, double, grace=GRACE)
    assert {d["team_id"] for d in report.drafted} == {str(teams.busy), str(teams.idle)}
    assert report.finalized == [] and double.of_kind("in_") == []
    busy = teams.ledger.get_invoice(monthly_invoice_id(teams.busy, month))
    assert busy.status == InvoiceStatus.DRAFT  # late usage may still land on it

    teams.set_clock(end + GRACE)
    report = invoicing_pass(teams.ledger, teams.database_url, SETTINGS, double, grace=GRACE)
    assert report.clean, report
    busy = teams.ledger.get_invoice(monthly_invoice_id(teams.busy, month))
    idle = teams.ledger.get_invoice(monthly_invoice_id(teams.idle, month))
    assert (busy.status, busy.number) == (InvoiceStatus.FINALIZED, "BUSY-000001")
    [stripe_id] = double.of_kind("in_")
    assert busy.stripe_invoice_id == stripe_id
    assert double.created[stripe_id]["status"] == "open"
    assert double.created[stripe_id]["total"] == busy.total_minor
    assert double.created[stripe_id]["metadata"]["ledger_invoice_id"] == str(busy.id)
    assert (idle.status, idle.total_minor, idle.payment_reference) == (
        InvoiceStatus.PAID, 0, "prepaid_credit")
    assert report.sent_to_stripe == [{"team_id": str(teams.busy), "invoice": "BUSY-000001"}]
    assert report.paid_by_prepaid_credit == [{"team_id": str(teams.idle),
                                             "invoice": "IDLE-000001"}]
    status = json.loads(write_status(tmp_path, report).read_text())
    assert status["clean"] is True and status["stripe_configured"] is True

    quiet = invoicing_pass(teams.ledger, teams.database_url, SETTINGS, double, grace=GRACE)
    assert quiet.finalized == [] and quiet.sent_to_stripe == []
    assert len(double.of_kind("in_")) == 1


def test_uncollected_without_stripe_is_collected_once_stripe_is_configured(
        teams: Teams) -> None:
    month = teams.month_after_registration(0)
    teams.set_clock(month_end(month, "Europe/Berlin") + GRACE)
    first = invoicing_pass(teams.ledger, teams.database_url, None, grace=GRACE)
    assert first.uncollected == [{"team_id": str(teams.busy), "invoice": "BUSY-000001"}]
    assert first.stripe_configured is False
    double = StripeInvoiceDouble()
    later = invoicing_pass(teams.ledger, teams.database_url, SETTINGS, double, grace=GRACE)
    assert later.uncollected == [] and later.finalized == []
    assert later.sent_to_stripe == [{"team_id": str(teams.busy), "invoice": "BUSY-000001"}]
    [stripe_id] = double.of_kind("in_")
    assert teams.ledger.get_invoice(monthly_invoice_id(teams.busy, month)
                                    ).stripe_invoice_id == stripe_id


def test_two_concurrent_passes_make_one_invoice_per_month(teams: Teams) -> None:
    months = [teams.month_after_registration(n) for n in range(2)]
    at = month_end(months[-1], "Europe/Berlin") + GRACE
    double = StripeInvoiceDouble()
    ledgers = [open_ledger(teams.database_url) for _ in range(2)]
    reports: list[PassReport] = []
    start = threading.Barrier(2)

    def one_pass(ledger: Ledger) -> None:
        ledger.clock = lambda: at
        start.wait()
        reports.append(invoicing_pass(ledger, teams.database_url, SETTINGS, double,
                                      grace=GRACE))

    try:
        threads = [threading.Thread(target=one_pass, args=(ledger,)) for ledger in ledgers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(RUNNER_PASS_SECONDS)
    finally:
        for ledger in ledgers:
            ledger.close()
    assert len(reports) == 2
    assert all(r.failures == [] for r in reports), reports
    for team_id, key in ((teams.busy, "BUSY"), (teams.idle, "IDLE")):
        invoices = [teams.ledger.get_invoice(monthly_invoice_id(team_id, m)) for m in months]
        assert [i.number for i in invoices] == [f"{key}-000001", f"{key}-000002"]
        assert teams.ledger.get_team(team_id).invoices_finalized == 2
    busy = [teams.ledger.get_invoice(monthly_invoice_id(teams.busy, m)) for m in months]
    stripe_ids = double.of_kind("in_")
    assert sorted(stripe_ids) == sorted(str(i.stripe_invoice_id) for i in busy
                                        if (i.total_minor or 0) > 0)
    assert len(stripe_ids) == len(set(stripe_ids)) >= 1


def test_one_failing_team_does_not_stop_the_pass(teams: Teams) -> None:
    month = teams.month_after_registration(0)
    # Drafted with lines given by hand: the drafting from usage cannot follow it.
    start, end = month_period(month)
    teams.ledger.draft_invoice(teams.busy, period_start=start, period_end=end, lines=[{
        "description": "by hand", "quantity": 1, "amount_nanos": 0}],
        actor=Actor.system("invoicing"))
    teams.set_clock(month_end(teams.month_after_registration(1), "Europe/Berlin") +
                    timedelta(hours=1))
    report = invoicing_pass(teams.ledger, teams.database_url, None, grace=GRACE)
    assert [f["team_id"] for f in report.failures] == [str(teams.busy)]
    assert "lines given by hand" in report.failures[0]["error"]
    assert {d["team_id"] for d in report.drafted} == {str(teams.idle)}
    assert teams.ledger.exists(monthly_invoice_id(teams.idle, teams.month_after_registration(1)))


async def test_the_runner_is_registered_writes_its_status_and_stops(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "adapters.runtime.invoicing_runner:run_invoicing" in UP_RUNNERS
    monkeypatch.delenv("LEDGER_STRIPE_API_KEY", raising=False)
    with open_runner(database_url) as runner:
        runner.catch_up()
    runtime = Runtime(database_url=database_url, nats_url="", data_dir=tmp_path,
                      ingest=IngestSettings())
    stop = asyncio.Event()
    running = asyncio.create_task(run_invoicing(runtime, stop))
    status = tmp_path / STATUS_FILE_NAME
    deadline = asyncio.get_running_loop().time() + RUNNER_PASS_SECONDS
    while not status.exists():
        assert asyncio.get_running_loop().time() < deadline, "no pass within the bound"
        await asyncio.sleep(0.1)
    written = json.loads(status.read_text())
    assert (written["clean"], written["teams"], written["stripe_configured"]) == (True, 0, False)
    stop.set()
    await asyncio.wait_for(running, RUNNER_PASS_SECONDS)


def test_the_settings_are_named_and_bounded() -> None:
    assert interval_seconds({}) == 3600.0
    assert interval_seconds({"LEDGER_INVOICING_INTERVAL_SECONDS": "60"}) == 60.0
    assert finalize_after({}) == timedelta(hours=72)
    assert finalize_after({"LEDGER_INVOICE_FINALIZE_AFTER_HOURS": "0"}) == timedelta(0)
    for bad in ("soon", "1", "99999999"):
        with pytest.raises(ConfigurationError, match="LEDGER_INVOICING_INTERVAL_SECONDS"):
            interval_seconds({"LEDGER_INVOICING_INTERVAL_SECONDS": bad})
    for bad in ("later", "-1", "10000"):
        with pytest.raises(ConfigurationError, match="LEDGER_INVOICE_FINALIZE_AFTER_HOURS"):
            finalize_after({"LEDGER_INVOICE_FINALIZE_AFTER_HOURS": bad})


def test_a_pass_before_the_read_models_exist_finds_no_teams(database_url: str) -> None:
    ledger = open_ledger(database_url)
    try:
        report = invoicing_pass(ledger, database_url, None)
    finally:
        ledger.close()
    assert (report.teams, report.failures, report.clean) == (0, [], True)
