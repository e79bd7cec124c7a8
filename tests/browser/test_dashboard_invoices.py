"""The invoice page in a real headless Chromium: the owner opens a drafted invoice from the team
page's invoice list, sees its correction with the reason, finalizes it with the page's button
(collected through the SDK-level Stripe invoice double) and sees the number, the total and the
link to Stripe's hosted invoice; at 390 px the page does not scroll sideways."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from playwright.sync_api import Page, expect

from adapters.http.app import create_app
from adapters.runtime.composition import open_ledger
from adapters.stripe.billing import StripeBilling
from adapters.stripe.settings import StripeSettings
from domain.invoice import InvoiceStatus
from services.invoicing.drafting import draft_monthly_invoice
from services.ledger import Ledger
from services.tokens import BOOTSTRAP_ACTOR, Tokens
from tests.stripe.auto_recharge_support import OWNER, catch_up, priced_team, spend
from tests.stripe.conftest import API_KEY, WEBHOOK_SECRET, free_port, serve
from tests.stripe.stripe_invoice_double import StripeInvoiceDouble

TIMEOUT_SECONDS = 30
PHONE_WIDTH = 390


@dataclass
class InvoiceWorld:
    base_url: str
    team_id: UUID
    invoice_id: UUID
    owner_token: str
    double: StripeInvoiceDouble
    ledger: Ledger


@pytest.fixture
def invoice_world(database_url: str) -> Iterator[InvoiceWorld]:
    ledger = open_ledger(database_url)
    team_id, account_id = priced_team(ledger, "acme", balance_dollars=1)
    spend(ledger, account_id, 3)  # dated before the team's first invoice: a correction
    ledger.clock = lambda: datetime.now(UTC) + timedelta(days=40)
    month = f"{ledger.get_team(team_id).created_on:%Y-%m}"
    invoice_id = draft_monthly_invoice(ledger, team_id, month, OWNER)
    owner_token = Tokens(ledger).issue(kind="user", subject=OWNER.user_id, name="owner",
                                       scopes=[], expires_at=None,
                                       actor=BOOTSTRAP_ACTOR).secret
    catch_up(database_url)
    app = create_app(ledger, database_url)
    double = StripeInvoiceDouble()
    app.state.stripe_billing = StripeBilling.create(
        ledger, StripeSettings(api_key=API_KEY, webhook_secrets=(WEBHOOK_SECRET,)), double)
    port = free_port()
    server, thread = serve(app, port)
    try:
        yield InvoiceWorld(f"http://127.0.0.1:{port}", team_id, invoice_id, owner_token,
                           double, ledger)
    finally:
        server.should_exit = True
        thread.join(TIMEOUT_SECONDS)
        ledger.close()


def test_the_owner_opens_an_invoice_from_the_team_page_and_finalizes_it(
        page: Page, invoice_world: InvoiceWorld) -> None:
    world = invoice_world
    page.set_viewport_size({"width": PHONE_WIDTH, "height": 844})
    page.goto(f"{world.base_url}/dashboard/teams/{world.team_id}")
    page.get_by_label("Token").fill(world.owner_token)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{world.base_url}/dashboard/teams/{world.team_id}")

    page.locator(f'a[data-invoice="{world.invoice_id}"]').click()
    invoice_url = f"{world.base_url}/dashboard/teams/{world.team_id}/invoices/{world.invoice_id}"
    expect(page).to_have_url(invoice_url)
    expect(page.locator("#invoice-status")).to_have_text("draft")
    expect(page.locator("#invoice-corrections")).to_contain_text("before the team's first "
                                                                 "invoice")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    page.get_by_role("button", name="Finalize and collect").click()
    expect(page.locator("#action-outcome")).to_contain_text("Finalized.")
    expect(page.locator("#invoice-status")).to_have_text("finalized")
    expect(page.locator("#invoice-number")).to_have_text("ACME-000001")
    expect(page.locator("#invoice-total")).to_contain_text("2.00")  # three dollars less one prepaid
    [stripe_id] = world.double.of_kind("in_")
    expect(page.locator("#hosted-invoice")).to_have_attribute(
        "href", f"https://invoice.stripe.com/i/{stripe_id}")
    expect(page.get_by_role("button", name="Finalize and collect")).to_have_count(0)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    invoice = world.ledger.get_invoice(world.invoice_id)
    assert (invoice.status, invoice.stripe_invoice_id) == (InvoiceStatus.FINALIZED, stripe_id)
