"""The team page's billing panel in a real headless Chromium: a billing member tops up through
Checkout and opens the customer portal, each a 303 from the ledger to Stripe's page (played by
the SDK-level double, whose pages a small server on loopback serves), and sees the payment
listed, then paid with its receipt once Stripe's signed webhook arrives. An auditor sees the
payments and no actions."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from uuid import UUID

import httpx
import pytest
from playwright.sync_api import Page, expect

from adapters.http.app import create_app
from adapters.runtime.composition import open_ledger
from adapters.runtime.projection_process import open_runner
from adapters.stripe.billing import StripeBilling
from adapters.stripe.settings import StripeSettings
from services.actor import Actor
from services.ledger import Ledger
from services.tokens import BOOTSTRAP_ACTOR, Tokens
from tests.stripe.conftest import API_KEY, WEBHOOK_SECRET, free_port, serve
from tests.stripe.signing import event_payload, signature_header
from tests.stripe.stripe_http_double import StripeHttpDouble

OWNER, BILLING, AUDITOR = "olivia", "bill", "audrey"
TIMEOUT_SECONDS = 30


class StripePages(BaseHTTPRequestHandler):
    """Where the double's Checkout and portal URLs lead: a page that says which it is."""

    def do_GET(self) -> None:
        kind = "Checkout" if self.path.startswith("/pay/") else "Billing portal"
        body = f"<!doctype html><title>Stripe {kind} double</title><h1>{kind}</h1>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class BillingWorld:
    base_url: str
    pages_url: str
    team_id: UUID
    billing_token: str
    auditor_token: str
    double: StripeHttpDouble
    ledger: Ledger


@pytest.fixture
def billing_world(database_url: str) -> Iterator[BillingWorld]:
    yield from world_on(database_url, stripe_configured=True)


def world_on(database_url: str, stripe_configured: bool) -> Iterator[BillingWorld]:
    pages = ThreadingHTTPServer(("127.0.0.1", 0), StripePages)
    threading.Thread(target=pages.serve_forever, daemon=True).start()
    pages_url = f"http://127.0.0.1:{pages.server_address[1]}"
    ledger = open_ledger(database_url)
    owner = Actor(OWNER)
    team_id = ledger.register_team(team_key="acme", name="Acme Robotics", currency="USD",
                                   timezone="UTC", actor=owner)
    ledger.add_member(team_id, BILLING, "billing", owner)
    ledger.add_member(team_id, AUDITOR, "auditor", owner)
    tokens = Tokens(ledger)
    billing_token, auditor_token = (
        tokens.issue(kind="user", subject=who, name=who, scopes=[], expires_at=None,
                     actor=BOOTSTRAP_ACTOR).secret for who in (BILLING, AUDITOR))
    app = create_app(ledger, database_url)
    with open_runner(database_url) as runner:
        runner.catch_up()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    double = StripeHttpDouble(pages_url=pages_url)
    settings = StripeSettings(
        api_key=API_KEY, webhook_secrets=(WEBHOOK_SECRET,),
        checkout_success_url=f"{base_url}/dashboard/teams/{{team_id}}?checkout=done",
        checkout_cancel_url=f"{base_url}/dashboard/teams/{{team_id}}",
        portal_return_url=f"{base_url}/dashboard/teams/{{team_id}}",
        redirect_origins=(pages_url,))
    if stripe_configured:
        app.state.stripe_billing = StripeBilling.create(ledger, settings, double)
    server, thread = serve(app, port)
    try:
        yield BillingWorld(base_url, pages_url, team_id, billing_token, auditor_token, double,
                           ledger)
    finally:
        server.should_exit = True
        thread.join(TIMEOUT_SECONDS)
        pages.shutdown()
        ledger.close()


def log_in(page: Page, world: BillingWorld, token: str) -> None:
    page.goto(f"{world.base_url}/dashboard/teams/{world.team_id}")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{world.base_url}/dashboard/teams/{world.team_id}")


def test_billing_tops_up_through_checkout_opens_the_portal_and_sees_the_payment(
        page: Page, billing_world: BillingWorld) -> None:
    world = billing_world
    log_in(page, world, world.billing_token)
    expect(page.locator("#payments")).to_have_count(0)

    page.locator("#top-up-amount").fill("25.00")
    page.get_by_role("button", name="Top up").click()
    [session_id] = world.double.of_kind("cs_")
    expect(page).to_have_url(f"{world.pages_url}/pay/{session_id}")
    expect(page.get_by_role("heading", name="Checkout")).to_be_visible()
    [created] = [r for r in world.double.requests if r.path == "/v1/checkout/sessions"]
    assert created.form["line_items[0][price_data][unit_amount]"] == "2500"

    page.goto(f"{world.base_url}/dashboard/teams/{world.team_id}")
    row = page.locator("#payments tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("$25.00")
    expect(row).to_contain_text("started")

    page.get_by_role("button", name="Billing portal").click()
    [portal_id] = world.double.of_kind("bps_")
    expect(page).to_have_url(f"{world.pages_url}/portal/{portal_id}")

    # Stripe reports the payment: the page shows it paid, with the receipt.
    session = world.double.pay_session(session_id)
    payload = event_payload("evt_browser", "checkout.session.completed", session)
    answer = httpx.post(f"{world.base_url}/v1/stripe/webhook", content=payload, headers={
        "Stripe-Signature": signature_header(payload, WEBHOOK_SECRET),
        "Content-Type": "application/json"}, timeout=TIMEOUT_SECONDS)
    assert answer.json()["result"] == "credited", answer.text
    page.goto(f"{world.base_url}/dashboard/teams/{world.team_id}")
    expect(row).to_contain_text("succeeded")
    receipt = row.get_by_role("link", name="Receipt")
    expect(receipt).to_have_attribute(
        "href", f"https://pay.stripe.com/receipts/{world.double.of_kind('ch_')[0]}")


def test_an_auditor_sees_payments_but_no_billing_actions(
        page: Page, billing_world: BillingWorld) -> None:
    world = billing_world
    log_in(page, world, world.auditor_token)
    expect(page.locator("#billing-note")).to_contain_text("owners and billing members")
    expect(page.get_by_role("button", name="Top up")).to_have_count(0)
    expect(page.get_by_role("button", name="Billing portal")).to_have_count(0)
    # A forged post is refused by the server: no Stripe request is made.
    answer = page.request.post(
        f"{world.base_url}/dashboard/teams/{world.team_id}/billing/portal",
        form={"csrf_token": "forged"}, max_redirects=0)
    assert answer.status == 403
    # With the page's own CSRF token, the service refuses the auditor's role.
    token = page.locator("form.logout input[name=csrf_token]").get_attribute("value")
    answer = page.request.post(
        f"{world.base_url}/dashboard/teams/{world.team_id}/billing/top-up",
        form={"csrf_token": token or "", "amount": "25", "nonce": "abc"}, max_redirects=0)
    assert answer.status == 403 and "may not" in answer.text()
    assert world.double.requests == []


def test_without_stripe_the_panel_says_what_to_configure(
        page: Page, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGER_STRIPE_API_KEY", raising=False)
    for world in world_on(database_url, stripe_configured=False):
        log_in(page, world, world.billing_token)
        expect(page.locator("#billing-note")).to_contain_text("LEDGER_STRIPE_API_KEY")
        expect(page.get_by_role("button", name="Top up")).to_have_count(0)
        expect(page.locator("#billing")).to_contain_text("No payments yet.")
