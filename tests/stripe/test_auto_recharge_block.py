"""The trigger driven directly (no watcher, no read model) against the SDK-layer double, and the
team page's read-only auto-recharge block that shows where it stands."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from adapters.http.app import create_app
from adapters.http.dashboard.auto_recharge_block import auto_recharge_context
from adapters.http.dashboard.pages import templates
from adapters.http.dashboard.team_page import Viewer
from adapters.http.sessions import SESSION_COOKIE_NAME
from adapters.runtime.composition import open_ledger
from adapters.stripe.gateway import StripeGateway, make_client
from adapters.stripe.settings import StripeSettings
from domain.auto_recharge import FAILURES_IN_A_ROW_MAX
from domain.roles import Role
from services.ledger import Ledger
from services.payments.auto_recharge import AutoRecharges, Observation
from services.payments.top_ups import TopUps
from services.tokens import ensure_first_operator_token
from tests.stripe.auto_recharge_support import (
    DOLLAR,
    FAST_BACKOFF,
    OWNER,
    catch_up,
    priced_team,
    set_policy,
)
from tests.stripe.stripe_http_double import StripeHttpDouble

SETTINGS = StripeSettings(api_key="sk_test_double", webhook_secrets=("whsec_x",),
                          network_retries=0)
LOW = Observation(available_nanos=5 * DOLLAR, credited_nanos=0)


def block_html(ledger: Ledger, recharges: AutoRecharges, team_id: object, role: Role) -> str:
    team = ledger.get_team(team_id)  # type: ignore[arg-type]
    context = auto_recharge_context(ledger, team, Viewer("someone", role), recharges.now())
    return templates.get_template("_auto_recharge.html").render(context)


def test_the_block_shows_backoff_failures_and_the_stop_to_billing_viewers_only(
        ledger: Ledger) -> None:
    double = StripeHttpDouble()
    top_ups = TopUps(ledger, StripeGateway(make_client(SETTINGS, double)),
                     SETTINGS.top_up_limits)
    recharges = AutoRecharges(ledger, top_ups, backoff=FAST_BACKOFF, read_after=timedelta(0))
    team_id, _ = priced_team(ledger, "shown", balance_dollars=5)
    assert block_html(ledger, recharges, team_id, Role.OWNER).strip() == ""  # none set yet
    set_policy(recharges, team_id, threshold=20, amount=20, cap=100,
               card="pm_card_chargeCustomerFail")
    assert "Armed" in block_html(ledger, recharges, team_id, Role.AUDITOR)

    assert recharges.observe(team_id, LOW) == "charged: closed failed"
    html = block_html(ledger, recharges, team_id, Role.BILLING)
    assert "Backing off" in html and "Next try" in html
    assert f"1 of {FAILURES_IN_A_ROW_MAX}" in html and "card_declined" in html
    assert block_html(ledger, recharges, team_id, Role.MEMBER).strip() == ""

    # Past each backoff (the ledger's clock moved on), the next failures stop it.
    for _ in range(FAILURES_IN_A_ROW_MAX - 1):
        later = recharges.now() + timedelta(hours=1)
        ledger.clock = lambda later=later: later  # type: ignore[misc]
        assert recharges.observe(team_id, LOW) == "charged: closed failed"
    html = block_html(ledger, recharges, team_id, Role.OWNER)
    assert "Stopped" in html and "Next try" not in html
    assert len(double.of_kind("pi_")) == FAILURES_IN_A_ROW_MAX
    recharges.resume(team_id, OWNER)
    assert "Armed" in block_html(ledger, recharges, team_id, Role.OWNER)


def test_the_team_page_includes_the_block(database_url: str) -> None:
    ledger = open_ledger(database_url)
    try:
        issued = ensure_first_operator_token(ledger)
        assert issued is not None
        top_ups = TopUps(ledger, StripeGateway(make_client(SETTINGS, StripeHttpDouble())),
                         SETTINGS.top_up_limits)
        recharges = AutoRecharges(ledger, top_ups)
        team_id, _ = priced_team(ledger, "paged", balance_dollars=50)
        set_policy(recharges, team_id, threshold=20, amount=25, cap=100)
        catch_up(database_url)
        app = create_app(ledger, database_url, include_dashboard=True)
        with TestClient(app) as client:
            client.cookies.set(SESSION_COOKIE_NAME,
                               app.state.auth.create_session(issued.secret))
            page = client.get(f"/dashboard/teams/{team_id}")
        assert page.status_code == 200, page.text[:300]
        assert 'id="auto-recharge"' in page.text and "Armed" in page.text
    finally:
        ledger.close()
