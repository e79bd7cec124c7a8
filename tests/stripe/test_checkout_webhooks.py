"""Checkout top-ups and the portal end to end: the ledger's HTTP app served for real on a fresh
PostgreSQL database, Stripe played by the SDK-level double, and Checkout's webhooks signed with
the webhook secret (HMAC-SHA256 over `t.body`, as Stripe does)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

import httpx
import pytest

from adapters.postgres.view_store import PostgresViewStore
from adapters.runtime.projection_process import open_runner
from adapters.stripe.settings import StripeSettings
from services.payments.port import PaymentProviderError
from tests.http.support import TeamFixture, make_team
from tests.stripe.conftest import API_KEY, WEBHOOK_SECRET, LiveApp, live_app_on
from tests.stripe.signing import event_payload, signature_header
from tests.stripe.stripe_http_double import StripeHttpDouble
from tests.stripe.test_top_ups_localstripe import TWENTY_USD_NANOS, credits, deliver

RETURN_URL = "https://ledger.test/dashboard/teams/{team_id}"


def checkout_settings() -> StripeSettings:
    return StripeSettings(api_key=API_KEY, webhook_secrets=(WEBHOOK_SECRET,),
                          checkout_success_url=RETURN_URL + "?checkout=done",
                          checkout_cancel_url=RETURN_URL, portal_return_url=RETURN_URL)


@pytest.fixture
def double() -> StripeHttpDouble:
    return StripeHttpDouble()


@pytest.fixture
def checkout_app(database_url: str, double: StripeHttpDouble) -> Iterator[LiveApp]:
    yield from live_app_on(database_url, checkout_settings(), http_client=double)


def start_checkout(live: LiveApp, team: TeamFixture, key: str, role: str = "billing"
                   ) -> httpx.Response:
    return live.api.client.post(
        f"/v1/teams/{team.team_id}/top-ups", json={"amount_nanos": str(TWENTY_USD_NANOS)},
        headers=live.api.headers(team.tokens[role], **{"Idempotency-Key": key}))


def send(live: LiveApp, event_id: str, event_type: str, session: dict[str, Any]
         ) -> httpx.Response:
    payload = event_payload(event_id, event_type, session)
    return deliver(live, payload, signature_header(payload, WEBHOOK_SECRET))


def payments(live: LiveApp, team: TeamFixture) -> list[dict[str, Any]]:
    answer = live.api.client.get(f"/v1/teams/{team.team_id}/payments",
                                 headers=live.api.headers(team.tokens["auditor"]))
    assert answer.status_code == 200, answer.text
    listed: list[dict[str, Any]] = answer.json()["payments"]
    return listed


def test_checkout_completed_three_times_at_once_credits_once_and_shows_the_receipt(
        checkout_app: LiveApp, double: StripeHttpDouble) -> None:
    team = make_team(checkout_app.api, "paid")
    started = start_checkout(checkout_app, team, "k1")
    assert started.status_code == 201, started.text
    body = started.json()
    assert body["status"] == "started"
    assert body["checkout_url"] == f"https://checkout.stripe.test/pay/{body['checkout_session_id']}"
    session = double.pay_session(body["checkout_session_id"])

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: send(checkout_app, "evt_done",
                                               "checkout.session.completed", session),
                                range(3)))
    assert [a.status_code for a in answers] == [200] * 3, [a.text for a in answers]
    assert credits(checkout_app, team) == {session["payment_intent"]: TWENTY_USD_NANOS}
    [listed] = payments(checkout_app, team)
    assert listed["status"] == "succeeded"
    assert listed["credited"]["nanos"] == str(TWENTY_USD_NANOS)
    assert listed["receipt_url"] == f"https://pay.stripe.com/receipts/{double.of_kind('ch_')[0]}"
    # The same session's PaymentIntent reported by its own webhook changes nothing more.
    intent = double.created[session["payment_intent"]]
    payload = event_payload("evt_pi", "payment_intent.succeeded", intent)
    assert deliver(checkout_app, payload,
                   signature_header(payload, WEBHOOK_SECRET)).json()["result"] == "unchanged"
    assert credits(checkout_app, team) == {session["payment_intent"]: TWENTY_USD_NANOS}


def test_an_expired_checkout_changes_no_balance_and_is_listed_as_expired(
        checkout_app: LiveApp, double: StripeHttpDouble) -> None:
    team = make_team(checkout_app.api, "expired")
    body = start_checkout(checkout_app, team, "k2").json()
    session = double.expire_session(body["checkout_session_id"])
    for event_id in ("evt_exp", "evt_exp", "evt_exp_again"):
        assert send(checkout_app, event_id, "checkout.session.expired",
                    session).status_code == 200
    assert credits(checkout_app, team) == {}
    [listed] = payments(checkout_app, team)
    assert (listed["status"], listed["credited"]["nanos"]) == ("expired", "0")
    # The payments read model (the audit trail's and the reconciler's source) says so too.
    with open_runner(checkout_app.api.database_url) as runner:
        runner.catch_up()
    with PostgresViewStore(checkout_app.api.database_url) as store:
        [viewed] = store.payments_of(UUID(team.team_id))
    assert viewed["status"] == "expired"


def test_completed_before_the_session_was_recorded_still_settles(
        checkout_app: LiveApp, double: StripeHttpDouble) -> None:
    team = make_team(checkout_app.api, "early")
    checkout = checkout_app.billing.checkout
    original = checkout.record_session
    calls: list[int] = []

    def lost_answer(*args: Any, **kwargs: Any) -> str:
        if not calls:  # the first record (the route's) dies: Stripe made the session already
            calls.append(1)
            raise PaymentProviderError("lost between Stripe's answer and recording it")
        return original(*args, **kwargs)

    checkout.record_session = lost_answer  # type: ignore[method-assign]
    assert start_checkout(checkout_app, team, "k3").status_code == 502
    [session_id] = double.of_kind("cs_")
    [unrecorded] = payments(checkout_app, team)
    assert unrecorded["checkout_session_id"] is None

    session = double.pay_session(session_id)
    assert send(checkout_app, "evt_early", "checkout.session.completed",
                session).json()["result"] == "credited"
    assert credits(checkout_app, team) == {session["payment_intent"]: TWENTY_USD_NANOS}
    [listed] = payments(checkout_app, team)
    assert (listed["status"], listed["checkout_session_id"]) == ("succeeded", session_id)
    # The caller's retry finds the payment paid: no second session, no page to go to.
    retried = start_checkout(checkout_app, team, "k3")
    assert retried.status_code == 201, retried.text
    assert retried.json()["checkout_url"] is None and double.of_kind("cs_") == [session_id]


def test_an_unpaid_completion_waits_for_the_asynchronous_result(
        checkout_app: LiveApp, double: StripeHttpDouble) -> None:
    team = make_team(checkout_app.api, "async")
    body = start_checkout(checkout_app, team, "k4").json()
    session = double.pay_session(body["checkout_session_id"], intent_status="processing")
    assert send(checkout_app, "evt_c", "checkout.session.completed",
                session).status_code == 200
    assert payments(checkout_app, team)[0]["status"] == "processing"
    assert credits(checkout_app, team) == {}
    double.settle_intent(session["payment_intent"], "requires_payment_method")
    session = {**session, "payment_status": "unpaid"}
    assert send(checkout_app, "evt_f", "checkout.session.async_payment_failed",
                session).status_code == 200
    [failed] = payments(checkout_app, team)
    assert (failed["status"], failed["failure_code"]) == ("failed", "payment_failed")
    assert credits(checkout_app, team) == {}


def test_async_payment_succeeded_credits_after_a_processing_completion(
        checkout_app: LiveApp, double: StripeHttpDouble) -> None:
    team = make_team(checkout_app.api, "asyncok")
    body = start_checkout(checkout_app, team, "k5").json()
    session = double.pay_session(body["checkout_session_id"], intent_status="processing")
    double.settle_intent(session["payment_intent"], "succeeded")
    # Delivered out of order: the success first, then the completion that preceded it.
    assert send(checkout_app, "evt_s", "checkout.session.async_payment_succeeded",
                {**session, "payment_status": "paid"}).json()["result"] == "credited"
    assert send(checkout_app, "evt_c2", "checkout.session.completed",
                session).json()["result"] == "unchanged"
    assert credits(checkout_app, team) == {session["payment_intent"]: TWENTY_USD_NANOS}


@pytest.mark.parametrize(("role", "status"), [("owner", 200), ("billing", 200),
                                              ("admin", 403), ("member", 403),
                                              ("auditor", 403)])
def test_the_portal_link_is_for_owners_and_billing(
        checkout_app: LiveApp, double: StripeHttpDouble, role: str, status: int) -> None:
    team = make_team(checkout_app.api, f"portal-{role}")
    answer = checkout_app.api.client.post(f"/v1/teams/{team.team_id}/billing-portal",
                                          headers=checkout_app.api.headers(team.tokens[role]))
    assert answer.status_code == status, answer.text
    portals = double.of_kind("bps_")
    if status == 200:
        assert answer.json() == {"url": f"https://checkout.stripe.test/portal/{portals[0]}"}
        customer = checkout_app.ledger.get_team(UUID(team.team_id)).stripe_customer_id
        assert double.created[portals[0]]["customer"] == customer
    else:
        assert portals == []


def test_a_member_may_not_start_a_checkout_top_up(checkout_app: LiveApp,
                                                  double: StripeHttpDouble) -> None:
    team = make_team(checkout_app.api, "denied")
    assert start_checkout(checkout_app, team, "k6", role="member").status_code == 403
    assert double.requests == []


def test_checkout_without_its_return_urls_says_what_to_set(
        database_url: str, double: StripeHttpDouble) -> None:
    settings = StripeSettings(api_key=API_KEY, webhook_secrets=(WEBHOOK_SECRET,))
    for live in live_app_on(database_url, settings, http_client=double):
        team = make_team(live.api, "unset")
        answer = start_checkout(live, team, "k7")
        assert answer.status_code == 409
        assert "LEDGER_STRIPE_CHECKOUT_SUCCESS_URL" in answer.json()["detail"]
        assert double.requests == []


def test_a_completion_delivered_again_after_the_payment_settled_credits_it(
        checkout_app: LiveApp, double: StripeHttpDouble) -> None:
    """Stripe retries an event whose first answer it did not get; by then the PaymentIntent
    may have moved on, and the retry records what Stripe holds now (never a conflict)."""
    team = make_team(checkout_app.api, "retried")
    body = start_checkout(checkout_app, team, "k8").json()
    session = double.pay_session(body["checkout_session_id"], intent_status="processing")
    assert send(checkout_app, "evt_same", "checkout.session.completed",
                session).json()["result"] == "attached"
    double.settle_intent(session["payment_intent"], "succeeded")
    again = send(checkout_app, "evt_same", "checkout.session.completed", session)
    assert again.status_code == 200 and again.json()["result"] == "credited", again.text
    assert credits(checkout_app, team) == {session["payment_intent"]: TWENTY_USD_NANOS}
