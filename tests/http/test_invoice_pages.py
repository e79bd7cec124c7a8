"""The dashboard's invoice page: linked from the team page, its lines, corrections with their
reasons, totals and Stripe's hosted link; "Finalize and collect" and "Void" for owners and
billing (CSRF-protected, answered on the page); auditors see but cannot act, members do not see,
and another team's invoice is not found. Stripe is the SDK-level invoice double."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi.testclient import TestClient

from adapters.http.app import create_app
from adapters.http.dashboard.page_security import CSRF_FIELD, csrf_token
from adapters.http.sessions import SESSION_COOKIE_NAME
from adapters.runtime.composition import open_ledger
from adapters.runtime.projection_process import open_runner
from adapters.stripe.billing import StripeBilling
from adapters.stripe.settings import StripeSettings
from domain.invoice import InvoiceStatus
from domain.usage import UsageRecord
from services.actor import Actor
from services.invoicing.drafting import draft_monthly_invoice
from services.invoicing.monthly import previous_month
from services.ledger import Ledger
from services.tokens import ensure_first_operator_token
from tests.http.conftest import Api
from tests.http.support import TeamFixture, make_team
from tests.stripe.stripe_invoice_double import StripeInvoiceDouble

SYSTEM = Actor.system("invoicing")
ZONE = ZoneInfo("Europe/Berlin")


@dataclass
class Pages:
    client: TestClient
    ledger: Ledger
    database_url: str
    team: TeamFixture
    other: TeamFixture
    double: StripeInvoiceDouble
    month: str
    invoice_id: UUID

    def url(self, invoice_id: UUID | None = None, team_id: str | None = None) -> str:
        return (f"/dashboard/teams/{team_id or self.team.team_id}/invoices/"
                f"{invoice_id or self.invoice_id}")

    def sign_in(self, role: str) -> str:
        session: str = self.client.app.state.auth.create_session(
            self.team.tokens[role])
        self.client.cookies.set(SESSION_COOKIE_NAME, session)
        return session

    def post(self, action: str, session: str, **fields: str) -> httpx.Response:
        return self.client.post(f"{self.url()}/{action}", data={
            CSRF_FIELD: csrf_token(session), **fields}, follow_redirects=False)

    def catch_up(self) -> None:
        with open_runner(self.database_url) as runner:
            runner.catch_up()


@pytest.fixture
def pages(database_url: str) -> Iterator[Pages]:
    ledger = open_ledger(database_url)
    issued = ensure_first_operator_token(ledger)
    assert issued is not None
    app = create_app(ledger, database_url, include_dashboard=True)
    double = StripeInvoiceDouble()
    app.state.stripe_billing = StripeBilling.create(
        ledger, StripeSettings(api_key="sk_test_double", webhook_secrets=("whsec_p",)),
        http_client=double)
    with TestClient(app) as client:
        api = Api(client, ledger, database_url, issued.secret)
        team, other = make_team(api, "page"), make_team(api, "else")
        at = datetime.now(UTC) - timedelta(hours=1)
        ledger.record_usage_batch([UsageRecord(
            usage_id=f"u{i}", account_id=UUID(account), occurred_at=at, model="m1",
            success=True, input_tokens=1_234_567 + i, output_tokens=10)
            for i, account in enumerate((team.member_account, team.other_account))])
        ledger.clock = lambda: datetime.now(UTC) + timedelta(days=40)
        month = f"{at.astimezone(ZONE):%Y-%m}"
        invoice_id = draft_monthly_invoice(ledger, UUID(team.team_id), month, SYSTEM)
        found = Pages(client, ledger, database_url, team, other, double, month, invoice_id)
        found.catch_up()
        yield found
    ledger.close()


def test_the_team_page_links_each_invoice_to_its_page(pages: Pages) -> None:
    pages.sign_in("owner")
    team_page = pages.client.get(f"/dashboard/teams/{pages.team.team_id}")
    assert team_page.status_code == 200, team_page.text[:300]
    assert f'href="{pages.url()}"' in team_page.text


def test_owner_sees_the_lines_and_finalizes_it_through_stripe(pages: Pages) -> None:
    session = pages.sign_in("owner")
    page = pages.client.get(pages.url())
    assert page.status_code == 200, page.text[:300]
    html = page.text
    assert 'id="invoice-status">draft<' in html
    assert "seat-m" in html and "seat-x" in html and "m1" in html
    assert "1,234,567 in" in html and "fixed when finalized" in html
    assert 'id="finalize-form"' in html and 'id="void-form"' in html
    assert "script" not in html.split("<main>")[1]  # no inline script (CSP)
    assert pages.client.post(f"{pages.url()}/finalize", data={},
                             follow_redirects=False).status_code == 403  # no CSRF token

    done = pages.post("finalize", session)
    assert done.status_code == 303
    assert done.headers["location"].endswith("?done=finalized#result")
    invoice = pages.ledger.get_invoice(pages.invoice_id)
    assert invoice.status == InvoiceStatus.FINALIZED and invoice.number == "PAGE-000001"
    [stripe_id] = pages.double.of_kind("in_")
    after = pages.client.get(f"{pages.url()}?done=finalized").text
    assert 'id="action-outcome"' in after and "Finalized." in after
    assert 'id="invoice-number">PAGE-000001<' in after and 'id="invoice-total"' in after
    assert f'href="https://invoice.stripe.com/i/{stripe_id}"' in after
    assert 'id="finalize-form"' not in after and 'id="void-form"' in after  # unpaid: voidable


def test_void_needs_a_reason_and_shows_the_result(pages: Pages) -> None:
    session = pages.sign_in("billing")
    refused = pages.post("void", session, reason="  ")
    assert refused.status_code == 400
    assert 'id="action-error"' in refused.text
    assert pages.ledger.get_invoice(pages.invoice_id).status == InvoiceStatus.DRAFT
    done = pages.post("void", session, reason="drafted by mistake")
    assert done.status_code == 303
    assert pages.ledger.get_invoice(pages.invoice_id).status == InvoiceStatus.VOID
    after = pages.client.get(f"{pages.url()}?done=voided").text
    assert "Voided." in after and 'id="void-form"' not in after


def test_corrections_show_with_their_reason(pages: Pages) -> None:
    owner = pages.sign_in("owner")
    assert pages.post("finalize", owner).status_code == 303
    late = datetime.now(UTC) - timedelta(hours=2)  # the finalized month, recorded late
    pages.ledger.record_usage_batch([UsageRecord(
        usage_id="late", account_id=UUID(pages.team.other_account), occurred_at=late,
        model="m2", success=True, input_tokens=5_000, output_tokens=5)])
    next_month = previous_month(pages.month, -1)
    pages.ledger.clock = lambda: datetime.now(UTC) + timedelta(days=75)
    next_id = draft_monthly_invoice(pages.ledger, UUID(pages.team.team_id), next_month, SYSTEM)
    html = pages.client.get(pages.url(next_id)).text
    assert 'id="invoice-corrections"' in html
    assert "m2" in html and "recorded after invoice PAGE-000001 was drafted" in html


def test_an_auditor_sees_but_cannot_act_and_a_member_does_not_see(pages: Pages) -> None:
    session = pages.sign_in("auditor")
    page = pages.client.get(pages.url())
    assert page.status_code == 200
    assert "<form method=\"post\" action=\"/dashboard/teams" not in page.text
    assert "for owners and billing members" in page.text
    refused = pages.post("finalize", session)
    assert refused.status_code == 403
    assert pages.ledger.get_invoice(pages.invoice_id).status == InvoiceStatus.DRAFT
    assert pages.post("void", session, reason="no").status_code == 403

    pages.sign_in("member")
    assert pages.client.get(pages.url()).status_code == 403


def test_another_teams_invoice_is_not_found(pages: Pages) -> None:
    session = pages.sign_in("owner")  # the operator owns both teams
    theirs = draft_monthly_invoice(pages.ledger, UUID(pages.other.team_id), pages.month, SYSTEM)
    assert pages.client.get(pages.url(theirs)).status_code == 404
    assert pages.client.get(pages.url(uuid4())).status_code == 404
    answer = pages.client.post(f"{pages.url(theirs)}/finalize",
                               data={CSRF_FIELD: csrf_token(session)}, follow_redirects=False)
    assert answer.status_code == 404
    assert pages.ledger.get_invoice(theirs).status == InvoiceStatus.DRAFT
    assert "No such invoice" in answer.text


def test_voiding_a_finalized_invoice_voids_its_stripe_invoice(pages: Pages) -> None:
    session = pages.sign_in("owner")
    assert pages.post("finalize", session).status_code == 303
    [stripe_id] = pages.double.of_kind("in_")
    done = pages.post("void", session, reason="billed the wrong team")
    assert done.status_code == 303
    assert pages.double.created[stripe_id]["status"] == "void"
    assert pages.ledger.get_invoice(pages.invoice_id).status == InvoiceStatus.VOID
    page = pages.client.get(pages.url()).text
    assert 'id="invoice-status">void<' in page and 'id="hosted-invoice"' not in page


def test_finalizing_an_amount_due_without_stripe_is_refused_on_the_page(
        pages: Pages, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGER_STRIPE_API_KEY", raising=False)
    pages.client.app.state.stripe_billing = None
    session = pages.sign_in("owner")
    refused = pages.post("finalize", session)
    assert refused.status_code == 409
    assert "LEDGER_STRIPE_API_KEY" in refused.text
    assert 'id="action-error"' in refused.text
    invoice = pages.ledger.get_invoice(pages.invoice_id)
    assert (invoice.status, invoice.number) == (InvoiceStatus.DRAFT, None)  # no number taken


def test_a_finalized_invoice_is_corrected_by_a_credit_note_from_the_page_once(
        pages: Pages) -> None:
    billing = pages.sign_in("billing")
    draft = pages.client.get(pages.url()).text
    assert 'id="credit-form"' not in draft  # a draft is voided or finalized, not credited
    assert pages.post("finalize", billing).status_code == 303
    page = pages.client.get(pages.url()).text
    assert 'id="credit-form"' in page
    nonce = page.split('name="nonce" value="')[1].split('"')[0]
    refused = pages.post("credit", billing, nonce=nonce, amount="five", reason="outage")
    assert refused.status_code == 400 and "type an amount like 25" in refused.text
    for _ in range(2):  # the same form sent twice: one credit note
        done = pages.post("credit", billing, nonce=nonce, amount="1.50",
                          reason="service outage on the 3rd")
        assert done.status_code == 303, done.text[:300]
        assert done.headers["location"].endswith("?done=credited#result")
    invoice = pages.ledger.get_invoice(pages.invoice_id)
    assert invoice.credited_nanos == 1_500_000_000
    assert len(pages.double.of_kind("cn_")) == 1  # Stripe collects it: a Stripe credit note
    after = pages.client.get(f"{pages.url()}?done=credited").text
    assert "Credit note issued" in after and "1.50" in after
    auditor = pages.sign_in("auditor")
    assert pages.post("credit", auditor, nonce="n2", amount="1", reason="x").status_code == 403
