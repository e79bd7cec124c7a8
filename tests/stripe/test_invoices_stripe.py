"""Invoices collected through Stripe, tested through the HTTP API against a Stripe double at the
SDK's HTTP layer (localstripe has no one-off invoices, finalize or credit notes, and never sends
`invoice.paid`: those deliveries are signed here with the webhook secret)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

import services.invoicing.collection as collection_module
from adapters.http.app import create_app
from adapters.runtime.composition import open_ledger
from adapters.stripe.billing import StripeBilling
from adapters.stripe.invoices import StripeInvoices
from adapters.stripe.settings import StripeSettings
from domain.usage import UsageRecord
from services.actor import Actor
from services.invoicing.monthly import month_period
from services.ledger import Ledger
from services.payments.reconciliation import Difference, reconcile_team
from services.tokens import ensure_first_operator_token
from tests.http.conftest import Api
from tests.http.support import make_team
from tests.stripe.signing import event_payload, signature_header
from tests.stripe.stripe_invoice_double import StripeInvoiceDouble

SECRET = "whsec_invoices"
CENT_NANOS = 10_000_000
SYSTEM = Actor.system("test")


class Crash(Exception):
    pass


@dataclass
class Billing:
    api: Api
    double: StripeInvoiceDouble
    billing: StripeBilling
    team_id: str
    month: str

    @property
    def ledger(self) -> Ledger:
        return self.api.ledger

    def as_role(self, role: str) -> dict[str, str]:
        return self.api.headers(self.tokens[role])

    tokens: dict[str, str]

    def post(self, path: str, role: str = "owner", key: str | None = None,
             **kwargs: Any) -> Any:
        headers = self.as_role(role) | ({"Idempotency-Key": key} if key else {})
        return self.api.client.post(f"/v1/teams/{self.team_id}{path}", headers=headers,
                                    **kwargs)

    def deliver(self, event_id: str, event_type: str, data_object: dict[str, Any]) -> Any:
        payload = event_payload(event_id, event_type, data_object)
        answer = self.api.client.post("/v1/stripe/webhook", content=payload, headers={
            "Stripe-Signature": signature_header(payload, SECRET),
            "Content-Type": "application/json"})
        assert answer.status_code == 200, answer.text
        return answer.json()["result"]

    def draft_and_finalize(self) -> dict[str, Any]:
        drafted = self.post("/invoices", json={"month": self.month})
        assert drafted.status_code == 201, drafted.text
        finalized = self.post(f"/invoices/{drafted.json()['invoice_id']}/finalize")
        assert finalized.status_code == 200, finalized.text
        body: dict[str, Any] = finalized.json()
        return body


@pytest.fixture
def billing(database_url: str) -> Iterator[Billing]:
    ledger = open_ledger(database_url)
    issued = ensure_first_operator_token(ledger)
    assert issued is not None
    app = create_app(ledger, database_url, include_dashboard=False)
    double = StripeInvoiceDouble()
    settings = StripeSettings(api_key="sk_test_double", webhook_secrets=(SECRET,))
    app.state.stripe_billing = StripeBilling.create(ledger, settings, http_client=double)
    with TestClient(app) as client:
        api = Api(client, ledger, database_url, issued.secret)
        team = make_team(api, "inv")
        # Usage a day ago (the package is in force from three days ago), in a month the test
        # clock has left behind.
        at = datetime.now(UTC) - timedelta(days=1)
        ledger.record_usage_batch([UsageRecord(
            usage_id=f"u{i}", account_id=UUID(account), occurred_at=at, model="m1",
            success=True, input_tokens=1_234_567 + i, output_tokens=10)
            for i, account in enumerate((team.member_account, team.other_account))])
        ledger.clock = lambda: datetime.now(UTC) + timedelta(days=40)
        month = f"{at.astimezone(ZoneInfo('Europe/Berlin')):%Y-%m}"
        yield Billing(api, double, app.state.stripe_billing, team.team_id, month, team.tokens)
    ledger.close()


def crash_once(target: Callable[..., Any]) -> Callable[..., Any]:
    crashed: list[bool] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not crashed:
            crashed.append(True)
            raise Crash("the process died after Stripe answered, before recording it")
        return target(*args, **kwargs)
    return wrapper


def test_finalize_collects_through_a_stripe_invoice_marked_paid_by_its_webhook(
        billing: Billing) -> None:
    assert billing.post("/invoices", role="member", json={"month": billing.month}
                        ).status_code == 403
    invoice = billing.draft_and_finalize()
    assert invoice["status"] == "finalized" and invoice["number"] == "INV-000001"
    lines = invoice["lines"]
    assert {(line["kind"], line["account_name"], line["model"], line["requests"])
            for line in lines} == {("usage", "seat-m", "m1", 1), ("usage", "seat-x", "m1", 1)}
    assert sum(int(line["amount"]["nanos"]) for line in lines) == \
        int(invoice["subtotal"]["nanos"]) > 0
    assert int(invoice["total"]["nanos"]) == invoice["total_minor"] * CENT_NANOS
    [stripe_id] = billing.double.of_kind("in_")
    assert invoice["stripe_invoice_id"] == stripe_id
    stripe_invoice = billing.double.created[stripe_id]
    assert (stripe_invoice["status"], stripe_invoice["total"]) == ("open", invoice["total_minor"])
    assert stripe_invoice["metadata"]["ledger_invoice_id"] == invoice["invoice_id"]
    keys = [r.idempotency_key for r in billing.double.requests if r.method == "post"
            and r.path != "/v1/customers"]
    assert len(keys) == 3 and all(k and invoice["number"] in k for k in keys)

    paid = billing.double.pay(stripe_id)
    assert billing.deliver("evt_paid_1", "invoice.paid", paid) == "paid"
    assert billing.deliver("evt_paid_1", "invoice.paid", paid) == "paid"  # replayed
    assert billing.deliver("evt_paid_2", "invoice.paid", paid) == "unchanged"
    # The payment settles the usage beyond the prepaid credit: the balance is restored once.
    team = billing.ledger.get_team(UUID(billing.team_id))
    assert team.top_ups == {stripe_id: int(invoice["total"]["nanos"])}
    auditor = billing.api.client.get(
        f"/v1/teams/{billing.team_id}/invoices/{invoice['invoice_id']}",
        headers=billing.as_role("auditor"))
    assert auditor.status_code == 200
    assert (auditor.json()["status"], auditor.json()["payment_reference"]) == ("paid", stripe_id)
    assert billing.post(f"/invoices/{invoice['invoice_id']}/finalize", role="auditor"
                        ).status_code == 403


def test_a_crash_between_the_stripe_call_and_recording_it_makes_one_stripe_invoice(
        billing: Billing, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collection_module, "link_stripe_invoice",
                        crash_once(collection_module.link_stripe_invoice))
    drafted = billing.post("/invoices", json={"month": billing.month}).json()
    with pytest.raises(Crash):
        billing.post(f"/invoices/{drafted['invoice_id']}/finalize")
    assert billing.ledger.get_invoice(UUID(drafted["invoice_id"])).stripe_invoice_id is None
    # Stripe's idempotency keys last a day; after that the retry finds it by its metadata.
    billing.double._answers.clear()
    again = billing.post(f"/invoices/{drafted['invoice_id']}/finalize")
    assert again.status_code == 200, again.text
    assert billing.double.of_kind("in_") == [again.json()["stripe_invoice_id"]]
    assert len(billing.double.posts_to("/v1/invoices")) == 1
    assert len(billing.double.of_kind("ii_")) == 1
    assert billing.double.created[again.json()["stripe_invoice_id"]]["status"] == "open"


def test_invoice_paid_before_created_and_before_the_ledger_recorded_the_id(
        billing: Billing, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collection_module, "link_stripe_invoice",
                        crash_once(collection_module.link_stripe_invoice))
    drafted = billing.post("/invoices", json={"month": billing.month}).json()
    with pytest.raises(Crash):
        billing.post(f"/invoices/{drafted['invoice_id']}/finalize")
    [stripe_id] = billing.double.of_kind("in_")
    created = dict(billing.double.created[stripe_id])
    # Stripe collected it anyway (say another process finished it): paid arrives first.
    total_minor = billing.ledger.get_invoice(UUID(drafted["invoice_id"])).total_minor
    billing.double.created[stripe_id].update(status="open", total=total_minor)
    paid = billing.double.pay(stripe_id)
    assert billing.deliver("evt_p", "invoice.paid", paid) == "linked, paid"
    assert billing.deliver("evt_c", "invoice.created", created) == "unchanged"
    invoice = billing.ledger.get_invoice(UUID(drafted["invoice_id"]))
    assert (invoice.status, invoice.stripe_invoice_id, invoice.payment_reference) == \
        ("paid", stripe_id, stripe_id)
    posts = len(billing.double.requests)
    assert billing.post(f"/invoices/{drafted['invoice_id']}/finalize").json()["status"] == "paid"
    assert len(billing.double.requests) == posts  # nothing sent to Stripe again
    foreign = {**paid, "id": "in_foreign", "metadata": {"ledger_invoice_id": str(uuid4())}}
    assert billing.deliver("evt_f", "invoice.paid", foreign) == "ignored: not a ledger invoice"


def test_void_voids_the_stripe_invoice_too_and_a_paid_one_is_corrected_by_credit_note(
        billing: Billing) -> None:
    invoice = billing.draft_and_finalize()
    path = f"/invoices/{invoice['invoice_id']}"
    assert billing.post(f"{path}/void", json={"reason": ""}).status_code == 422
    voided = billing.post(f"{path}/void", json={"reason": "billed the wrong team"})
    assert voided.status_code == 200, voided.text
    assert voided.json()["status"] == "void"
    assert billing.double.created[invoice["stripe_invoice_id"]]["status"] == "void"
    assert billing.post(f"{path}/credit-notes", json={"amount_nanos": str(CENT_NANOS),
                                                      "reason": "x"}).status_code == 409


def test_a_lost_invoice_paid_webhook_is_healed_by_a_refresh(billing: Billing) -> None:
    invoice = billing.draft_and_finalize()
    collection = billing.billing.invoices
    team_id = UUID(billing.team_id)
    assert collection.refresh_open_invoices(team_id) == 1  # still open in Stripe: unchanged
    assert billing.ledger.get_invoice(UUID(invoice["invoice_id"])).status == "finalized"
    billing.double.pay(invoice["stripe_invoice_id"])  # and the webhook never comes
    assert collection.refresh_open_invoices(team_id) == 1
    assert billing.ledger.get_invoice(UUID(invoice["invoice_id"])).status == "paid"
    assert collection.refresh_open_invoices(team_id) == 0
    assert billing.ledger.get_team(team_id).top_ups == {
        invoice["stripe_invoice_id"]: int(invoice["total"]["nanos"])}


def test_an_invoice_voided_in_stripe_is_voided_in_the_ledger(billing: Billing) -> None:
    invoice = billing.draft_and_finalize()
    voided = {**billing.double.created[invoice["stripe_invoice_id"]], "status": "void"}
    assert billing.deliver("evt_v", "invoice.voided", voided) == "voided"
    assert billing.deliver("evt_v2", "invoice.voided", voided) == "unchanged"
    assert billing.ledger.get_invoice(UUID(invoice["invoice_id"])).status == "void"
    assert billing.deliver("evt_p", "invoice.paid", {**voided, "status": "paid"}) == \
        "not paid: the ledger invoice is void"


def test_a_credit_note_on_a_paid_invoice_is_a_refunding_stripe_credit_note(
        billing: Billing) -> None:
    invoice = billing.draft_and_finalize()
    path = f"/invoices/{invoice['invoice_id']}"
    billing.deliver("evt_paid", "invoice.paid", billing.double.pay(invoice["stripe_invoice_id"]))
    assert billing.post(f"{path}/void", json={"reason": "too late"}).status_code == 409
    body = {"amount_nanos": str(50 * CENT_NANOS), "reason": "goodwill: outage on the 3rd"}
    for _ in range(2):
        noted = billing.post(f"{path}/credit-notes", json=body, key="cn-1")
        assert noted.status_code == 200, noted.text
    assert noted.json()["credited"]["nanos"] == str(50 * CENT_NANOS)
    assert noted.json()["status"] == "paid"
    [note] = billing.double.of_kind("cn_")
    assert billing.double.created[note]["amount"] == billing.double.created[note][
        "refund_amount"] == 50
    assert billing.ledger.get_invoice(UUID(invoice["invoice_id"])).credit_note_ids == [note]
    too_much = {"amount_nanos": str(int(invoice["total"]["nanos"])), "reason": "all of it"}
    assert billing.post(f"{path}/credit-notes", json=too_much).status_code == 409
    assert billing.post(f"{path}/credit-notes", json={**body, "amount_nanos": "1"}
                        ).status_code == 422


def test_a_crash_after_stripe_made_the_credit_note_never_makes_a_second_one(
        billing: Billing, monkeypatch: pytest.MonkeyPatch) -> None:
    invoice = billing.draft_and_finalize()
    path = f"/invoices/{invoice['invoice_id']}/credit-notes"
    monkeypatch.setattr(collection_module, "issue_requested_credit_note",
                        crash_once(collection_module.issue_requested_credit_note))
    body = {"amount_nanos": str(CENT_NANOS), "reason": "rounding complaint"}
    with pytest.raises(Crash):
        billing.post(path, json=body, key="cn-crash")
    billing.double._answers.clear()  # Stripe's 24 hours have passed: its metadata finds it
    noted = billing.post(path, json=body, key="cn-crash")
    assert noted.status_code == 200, noted.text
    [note] = billing.double.of_kind("cn_")
    assert billing.double.created[note]["refund_amount"] == 0  # before payment: not refunded
    assert billing.ledger.get_invoice(UUID(invoice["invoice_id"])).credit_note_ids == [note]
    assert noted.json()["credited"]["nanos"] == str(CENT_NANOS)


def test_reconcile_lists_an_invoice_difference_on_each_side(billing: Billing) -> None:
    invoice = billing.draft_and_finalize()
    billing.deliver("evt_paid", "invoice.paid", billing.double.pay(invoice["stripe_invoice_id"]))
    team_id = UUID(billing.team_id)
    port = StripeInvoices(billing.billing.gateway.client)
    report = reconcile_team(billing.ledger, billing.billing.gateway, team_id, port)
    # The invoice's charge is not a top-up, nor its credit to the balance: both sides agree.
    assert billing.double.of_kind("ch_") and billing.ledger.get_team(team_id).top_ups
    assert report.differences == [] and report.invoices_compared == 1
    assert report.top_ups_compared == 0

    # Ledger side only: next month's invoice finalized in the ledger, never sent to Stripe.
    later = datetime.now(UTC) + timedelta(days=31)
    billing.ledger.clock = lambda: later + timedelta(days=40)
    period = month_period(f"{later.astimezone(ZoneInfo('Europe/Berlin')):%Y-%m}")
    only_ledger = billing.ledger.draft_invoice(
        team_id, period_start=period[0], period_end=period[1],
        lines=[{"description": "by hand", "amount_nanos": 3 * CENT_NANOS}], actor=SYSTEM)
    billing.ledger.finalize_invoice(only_ledger, SYSTEM)
    owner = billing.ledger.get_team(team_id)
    # Stripe side only: a Stripe invoice naming a ledger invoice that does not exist.
    ghost = str(uuid4())
    billing.double._create("in", {"object": "invoice", "customer": owner.stripe_customer_id,
                                  "currency": "usd", "status": "open", "total": 123,
                                  "amount_paid": 0, "metadata": {
                                      "ledger_invoice_id": ghost, "ledger_team_id": str(team_id)}})
    [stripe_only] = [i for i in billing.double.of_kind("in_")
                     if i != invoice["stripe_invoice_id"]]
    report = reconcile_team(billing.ledger, billing.billing.gateway, team_id, port)
    number = billing.ledger.get_invoice(only_ledger).number
    assert sorted(report.differences, key=lambda d: d.stripe_object_id) == sorted([
        Difference("invoice", str(number), 3 * CENT_NANOS, None, "finalized", None),
        Difference("invoice", stripe_only, None, 123 * CENT_NANOS, None, "open"),
    ], key=lambda d: d.stripe_object_id)

