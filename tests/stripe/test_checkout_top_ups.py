"""Checkout top-ups and the customer portal at the service layer, against the Stripe double at
the SDK's HTTP layer (localstripe has neither Checkout nor the portal): what the ledger asks
Stripe for, a crash between Stripe's answer and recording it, and who may."""

from __future__ import annotations

from uuid import UUID

import pytest

from adapters.stripe.checkout_gateway import StripeCheckoutGateway, checkout_session_info
from adapters.stripe.gateway import StripeGateway, make_client
from adapters.stripe.settings import StripeSettings
from domain.errors import (
    IdempotencyConflictError,
    InvalidAmountError,
    InvalidStateError,
    PermissionDeniedError,
)
from domain.payment import CHECKOUT_METHOD, PaymentStatus
from services.ledger import Ledger
from services.payments.checkout import Checkout, CheckoutLinks, checkout_idempotency_key
from services.payments.top_ups import TopUps
from tests.stripe.stripe_http_double import StripeHttpDouble
from tests.stripe.test_top_up_crash_and_retry import (
    BILLING,
    MEMBER,
    OWNER,
    TWENTY_USD_NANOS,
    Crash,
    crash_once,
    make_team,
)

LINKS = CheckoutLinks(success_url="https://ledger.test/dashboard/teams/{team_id}?checkout=done",
                      cancel_url="https://ledger.test/dashboard/teams/{team_id}",
                      portal_return_url="https://ledger.test/dashboard/teams/{team_id}",
                      lifetime_seconds=3600)


def checkout_with(ledger: Ledger, double: StripeHttpDouble) -> Checkout:
    settings = StripeSettings(api_key="sk_test_double", webhook_secrets=("whsec_x",),
                              network_retries=0)
    client = make_client(settings, double)
    top_ups = TopUps(ledger, StripeGateway(client), settings.top_up_limits)
    return Checkout(top_ups, StripeCheckoutGateway(client), LINKS)


def session_posts(double: StripeHttpDouble) -> list[dict[str, str]]:
    return [r.form for r in double.requests if r.path == "/v1/checkout/sessions"]


def test_checkout_top_up_asks_stripe_for_one_payment_that_settles_through_its_intent(
        ledger: Ledger) -> None:
    team_id = make_team(ledger)
    double = StripeHttpDouble()
    started = checkout_with(ledger, double).start_checkout_top_up(
        team_id, TWENTY_USD_NANOS, BILLING, "req-c1")
    payment = started.payment
    [session_id] = double.of_kind("cs_")
    assert started.checkout_url == f"https://checkout.stripe.test/pay/{session_id}"
    assert (payment.status, payment.payment_method_id) == (PaymentStatus.STARTED,
                                                           CHECKOUT_METHOD)
    assert (payment.checkout_session_id, payment.checkout_url) == (session_id,
                                                                   started.checkout_url)
    [form] = session_posts(double)
    assert form["mode"] == "payment"
    assert form["customer"] == ledger.get_team(team_id).stripe_customer_id
    assert (form["line_items[0][price_data][unit_amount]"],
            form["line_items[0][price_data][currency]"]) == ("2000", "usd")
    assert form["payment_intent_data[metadata][ledger_payment_id]"] == str(payment.id)
    assert form["payment_intent_data[metadata][ledger_team_id]"] == str(team_id)
    assert form["payment_intent_data[setup_future_usage]"] == "off_session"
    assert form["success_url"] == f"https://ledger.test/dashboard/teams/{team_id}?checkout=done"
    assert int(form["expires_at"]) == int(payment.created_on.timestamp()) + 3600
    [request] = [r for r in double.requests if r.path == "/v1/checkout/sessions"]
    assert request.idempotency_key == checkout_idempotency_key(payment)
    assert ledger.get_team(team_id).top_ups == {}


def test_crash_between_the_session_and_recording_it_gets_the_same_session_on_retry(
        ledger: Ledger) -> None:
    team_id = make_team(ledger)
    double = StripeHttpDouble()
    checkout = checkout_with(ledger, double)
    checkout.record_session = crash_once(checkout.record_session)  # type: ignore[method-assign]
    with pytest.raises(Crash):
        checkout.start_checkout_top_up(team_id, TWENTY_USD_NANOS, OWNER, "req-c2")
    [unrecorded] = checkout.top_ups.payments_of(team_id)
    assert unrecorded.checkout_session_id is None

    started = checkout.start_checkout_top_up(team_id, TWENTY_USD_NANOS, OWNER, "req-c2")

    posts = [r for r in double.requests if r.path == "/v1/checkout/sessions"]
    assert [r.idempotency_key for r in posts] == [checkout_idempotency_key(started.payment)] * 2
    assert posts[0].form == posts[1].form  # Stripe refuses a reused key with other parameters
    assert double.of_kind("cs_") == [started.payment.checkout_session_id]
    assert started.payment.id == unrecorded.id


def test_the_same_request_key_answers_the_recorded_page_without_asking_stripe_again(
        ledger: Ledger) -> None:
    team_id = make_team(ledger)
    double = StripeHttpDouble()
    checkout = checkout_with(ledger, double)
    first = checkout.start_checkout_top_up(team_id, TWENTY_USD_NANOS, OWNER, "req-c3")
    again = checkout.start_checkout_top_up(team_id, TWENTY_USD_NANOS, OWNER, "req-c3")
    assert again.checkout_url == first.checkout_url and len(session_posts(double)) == 1
    expires_at = first.payment.checkout_expires_at
    assert expires_at is not None
    checkout.clock = lambda: expires_at  # the page has expired; Stripe's event is on its way
    assert checkout.start_checkout_top_up(team_id, TWENTY_USD_NANOS, OWNER,
                                          "req-c3").checkout_url is None
    with pytest.raises(IdempotencyConflictError, match="req-c3"):
        checkout.top_ups.start_top_up(team_id, TWENTY_USD_NANOS, "pm_card_visa", OWNER,
                                      "req-c3")


def test_a_paid_session_credits_once_and_records_the_receipt(ledger: Ledger) -> None:
    team_id = make_team(ledger)
    double = StripeHttpDouble()
    checkout = checkout_with(ledger, double)
    started = checkout.start_checkout_top_up(team_id, TWENTY_USD_NANOS, OWNER, "req-c4")
    session = checkout_session_info(double.pay_session(str(started.payment.checkout_session_id)))
    results = [checkout.apply_session_event("checkout.session.completed", session, "evt_1")
               for _ in range(2)]
    assert results == ["credited", "unchanged"]
    payment = checkout.top_ups.get_payment(started.payment.id)
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.stripe_object_id == session.intent_id
    assert payment.receipt_url == f"https://pay.stripe.com/receipts/{double.of_kind('ch_')[0]}"
    assert ledger.get_team(team_id).top_ups == {session.intent_id: TWENTY_USD_NANOS}
    assert checkout.apply_session_event("checkout.session.completed", session,
                                        "evt_2") == "unchanged"
    assert ledger.get_team(team_id).top_ups == {session.intent_id: TWENTY_USD_NANOS}


def test_an_expired_session_is_visible_and_moves_no_money(ledger: Ledger) -> None:
    team_id = make_team(ledger)
    double = StripeHttpDouble()
    checkout = checkout_with(ledger, double)
    started = checkout.start_checkout_top_up(team_id, TWENTY_USD_NANOS, OWNER, "req-c5")
    session = checkout_session_info(
        double.expire_session(str(started.payment.checkout_session_id)))
    assert checkout.apply_session_event("checkout.session.expired", session, "evt_e") == \
        "expired"
    assert checkout.apply_session_event("checkout.session.expired", session, "evt_e2") == \
        "unchanged"
    payment = checkout.top_ups.get_payment(started.payment.id)
    assert payment.status == PaymentStatus.EXPIRED and payment.is_final
    assert ledger.get_team(team_id).top_ups == {}
    resumed = checkout.start_checkout_top_up(team_id, TWENTY_USD_NANOS, OWNER, "req-c5")
    assert resumed.checkout_url is None and len(session_posts(double)) == 1


def test_amounts_are_checked_before_stripe_is_asked(ledger: Ledger) -> None:
    team_id = make_team(ledger)
    double = StripeHttpDouble()
    with pytest.raises(InvalidAmountError, match="between"):
        checkout_with(ledger, double).start_checkout_top_up(team_id, 1_000_000_000, OWNER)
    assert double.requests == []


def test_the_portal_opens_for_the_teams_customer_with_the_configured_return_url(
        ledger: Ledger) -> None:
    team_id = make_team(ledger)
    double = StripeHttpDouble()
    url = checkout_with(ledger, double).open_portal(team_id, BILLING)
    [portal] = [r for r in double.requests if r.path == "/v1/billing_portal/sessions"]
    assert url == f"https://checkout.stripe.test/portal/{double.of_kind('bps_')[0]}"
    assert portal.form == {"customer": ledger.get_team(team_id).stripe_customer_id,
                           "return_url": f"https://ledger.test/dashboard/teams/{team_id}"}


@pytest.mark.parametrize("action", ["top_up", "portal"])
def test_a_member_may_neither_top_up_through_checkout_nor_open_the_portal(
        ledger: Ledger, action: str) -> None:
    team_id: UUID = make_team(ledger)
    double = StripeHttpDouble()
    checkout = checkout_with(ledger, double)
    with pytest.raises(PermissionDeniedError, match="member"):
        if action == "top_up":
            checkout.start_checkout_top_up(team_id, TWENTY_USD_NANOS, MEMBER)
        else:
            checkout.open_portal(team_id, MEMBER)
    assert double.requests == []


def test_a_payment_whose_window_is_nearly_over_opens_no_session(ledger: Ledger) -> None:
    team_id = make_team(ledger)
    double = StripeHttpDouble()
    checkout = checkout_with(ledger, double)
    checkout.record_session = crash_once(checkout.record_session)  # type: ignore[method-assign]
    with pytest.raises(Crash):
        checkout.start_checkout_top_up(team_id, TWENTY_USD_NANOS, OWNER, "req-late")
    [payment] = checkout.top_ups.payments_of(team_id)
    # 31 minutes before the session's expiry Stripe still accepts it; 29 minutes it would not.
    checkout.clock = lambda: checkout.expires_at(payment) - 31 * 60
    assert checkout.start_checkout_top_up(team_id, TWENTY_USD_NANOS, OWNER,
                                          "req-late").checkout_url is not None
    assert len(session_posts(double)) == 2
    late = checkout_with(ledger, double)
    late.record_session = crash_once(late.record_session)  # type: ignore[method-assign]
    with pytest.raises(Crash):
        late.start_checkout_top_up(team_id, TWENTY_USD_NANOS, OWNER, "req-late-2")
    [unrecorded, _] = late.top_ups.payments_of(team_id)
    late.clock = lambda: late.expires_at(unrecorded) - 29 * 60
    with pytest.raises(InvalidStateError, match="new idempotency key"):
        late.start_checkout_top_up(team_id, TWENTY_USD_NANOS, OWNER, "req-late-2")
    assert len(session_posts(double)) == 3


def test_a_refresh_heals_checkout_events_that_never_came(ledger: Ledger) -> None:
    team_id = make_team(ledger)
    double = StripeHttpDouble()
    checkout = checkout_with(ledger, double)
    paid = checkout.start_checkout_top_up(team_id, TWENTY_USD_NANOS, OWNER, "req-r1").payment
    lapsed = checkout.start_checkout_top_up(team_id, TWENTY_USD_NANOS, OWNER, "req-r2").payment
    still_open = checkout.start_checkout_top_up(team_id, TWENTY_USD_NANOS, OWNER,
                                                "req-r3").payment
    session = double.pay_session(str(paid.checkout_session_id))
    double.expire_session(str(lapsed.checkout_session_id))

    assert checkout.refresh_open_checkouts(team_id) == 3
    assert checkout.refresh_open_checkouts(team_id) == 1  # only the open one is left
    get = checkout.top_ups.get_payment
    assert get(paid.id).status == PaymentStatus.SUCCEEDED
    assert get(paid.id).receipt_url is not None
    assert get(lapsed.id).status == PaymentStatus.EXPIRED
    assert get(still_open.id).status == PaymentStatus.STARTED
    assert ledger.get_team(team_id).top_ups == {session["payment_intent"]: TWENTY_USD_NANOS}
