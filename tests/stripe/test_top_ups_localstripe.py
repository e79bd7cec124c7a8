"""Top-ups end to end: the ledger's HTTP app served for real, Stripe played by localstripe, which
charges the card and delivers signed webhooks. Deliveries localstripe never makes (refunds,
repeats, forgeries) are signed in the test with HMAC-SHA256 over `t.body`, as Stripe does."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

import httpx
import pytest

from adapters.runtime.projection_process import open_runner
from domain.money import NANOS_PER_UNIT
from tests.http.support import TeamFixture, make_team
from tests.stripe.conftest import (
    API_KEY,
    OLD_WEBHOOK_SECRET,
    WEBHOOK_SECRET,
    LiveApp,
    live_app_on,
    settings_for,
)
from tests.stripe.signing import event_payload, signature_header

WAIT_SECONDS_MAX = 20
TWENTY_USD_NANOS = 20 * NANOS_PER_UNIT
CENT_NANOS = NANOS_PER_UNIT // 100
DEAD_URL = "http://127.0.0.1:9/nowhere"  # localstripe's deliveries fail: the test delivers


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS_MAX
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {WAIT_SECONDS_MAX} s")
        time.sleep(0.1)


def start(live: LiveApp, team: TeamFixture, key: str, role: str = "billing",
          payment_method: str = "pm_card_visa", amount_nanos: int = TWENTY_USD_NANOS
          ) -> httpx.Response:
    return live.api.client.post(
        f"/v1/teams/{team.team_id}/top-ups", json={
            "amount_nanos": str(amount_nanos), "payment_method_id": payment_method},
        headers=live.api.headers(team.tokens[role], **{"Idempotency-Key": key}))


def credits(live: LiveApp, team: TeamFixture) -> dict[str, int]:
    return dict(live.ledger.get_team(UUID(team.team_id)).top_ups)


def refunds(live: LiveApp, team: TeamFixture) -> dict[str, int]:
    return dict(live.ledger.get_team(UUID(team.team_id)).refunds)


def credit_events(live: LiveApp, team: TeamFixture) -> int:
    return sum(1 for e in live.ledger.events.get(UUID(team.team_id))
               if type(e).__name__ == "TopUpCredited")


def stripe_event(localstripe: httpx.Client, event_type: str, object_id: str) -> bytes:
    """The event localstripe made, serialized as localstripe signs it."""
    answer = localstripe.get("/v1/events", headers={"Authorization": f"Bearer {API_KEY}"})
    answer.raise_for_status()
    found = [e for e in answer.json()["data"]
             if e["type"] == event_type and e["data"]["object"]["id"] == object_id]
    assert found, f"localstripe made no {event_type} for {object_id}"
    return json.dumps(found[0], indent=2, sort_keys=True).encode()


def deliver(live: LiveApp, payload: bytes, header: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    return live.api.client.post("/v1/stripe/webhook", content=payload, headers=headers)


@pytest.fixture
def team(live_app: LiveApp, localstripe: httpx.Client) -> TeamFixture:
    return make_team(live_app.api, "acme")


@pytest.fixture
def restarted(live_app: LiveApp, localstripe_url: str) -> Iterator[Callable[[], LiveApp]]:
    """Opens a second app on the same database (a restart, days later)."""
    opened: list[Iterator[LiveApp]] = []

    def open_again() -> LiveApp:
        apps = live_app_on(live_app.api.database_url,
                           settings_for(localstripe_url, WEBHOOK_SECRET),
                           live_app.api.operator_token)
        opened.append(apps)
        return next(apps)
    yield open_again
    for apps in opened:
        next(apps, None)


def test_payment_is_credited_once_when_its_webhook_arrives_three_times_and_again_later(
        live_app: LiveApp, localstripe: httpx.Client, team: TeamFixture,
        restarted: Callable[[], LiveApp]) -> None:
    live_app.register_webhook(localstripe)
    answer = start(live_app, team, "topup-1")
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "processing"
    intent_id = answer.json()["stripe_object_id"]
    assert credits(live_app, team) == {}  # credited when Stripe reports it, not before

    wait_until(lambda: credits(live_app, team) == {intent_id: TWENTY_USD_NANOS},
               "localstripe's payment_intent.succeeded webhook")
    payload = stripe_event(localstripe, "payment_intent.succeeded", intent_id)
    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(pool.map(lambda _: deliver(
            live_app, payload, signature_header(payload, WEBHOOK_SECRET)), range(3)))
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    later = restarted()
    again = deliver(later, payload, signature_header(payload, WEBHOOK_SECRET))
    assert again.status_code == 200, again.text

    assert credits(later, team) == {intent_id: TWENTY_USD_NANOS}
    assert credit_events(later, team) == 1
    listed = live_app.api.client.get(f"/v1/teams/{team.team_id}/payments",
                                     headers=live_app.api.headers(team.tokens["auditor"]))
    assert listed.status_code == 200, listed.text
    [payment] = listed.json()["payments"]
    assert (payment["status"], payment["credited"]["nanos"]) == ("succeeded",
                                                                 str(TWENTY_USD_NANOS))


def forge(payload: bytes, forgery: str) -> tuple[bytes, str | None]:
    now = int(time.time())
    if forgery == "wrong secret":
        return payload, signature_header(payload, "whsec_attacker")
    if forgery == "changed byte":
        changed = payload.replace(b'"amount": 2000', b'"amount": 9000', 1)
        assert changed != payload
        return changed, signature_header(payload, WEBHOOK_SECRET)
    if forgery == "missing header":
        return payload, None
    if forgery == "re-serialized body":
        return json.dumps(json.loads(payload)).encode(), signature_header(payload,
                                                                          WEBHOOK_SECRET)
    offset_seconds = 600 if forgery == "10 minutes ahead" else -600
    return payload, signature_header(payload, WEBHOOK_SECRET, now + offset_seconds)


def test_forged_webhooks_are_refused_and_change_nothing(
        live_app: LiveApp, localstripe: httpx.Client, team: TeamFixture) -> None:
    live_app.register_webhook(localstripe, url=DEAD_URL)
    intent_id = start(live_app, team, "topup-2").json()["stripe_object_id"]
    payload = stripe_event(localstripe, "payment_intent.succeeded", intent_id)
    for forgery in ("wrong secret", "changed byte", "missing header", "re-serialized body",
                    "10 minutes ahead", "10 minutes old"):
        body, header = forge(payload, forgery)
        answer = deliver(live_app, body, header)
        assert answer.status_code == 400, (forgery, answer.text)
        assert answer.json()["code"] == "webhook_refused"
    assert credits(live_app, team) == {}
    assert deliver(live_app, payload, signature_header(payload, WEBHOOK_SECRET)
                   ).status_code == 200
    assert credits(live_app, team) == {intent_id: TWENTY_USD_NANOS}


def test_old_and_new_webhook_secrets_are_both_accepted_during_rotation(
        live_app: LiveApp, localstripe: httpx.Client, team: TeamFixture) -> None:
    live_app.register_webhook(localstripe, url=DEAD_URL)
    first = start(live_app, team, "topup-3").json()["stripe_object_id"]
    second = start(live_app, team, "topup-4").json()["stripe_object_id"]
    for intent_id, secret in ((first, OLD_WEBHOOK_SECRET), (second, WEBHOOK_SECRET)):
        payload = stripe_event(localstripe, "payment_intent.succeeded", intent_id)
        answer = deliver(live_app, payload, signature_header(payload, secret))
        assert answer.status_code == 200, answer.text
    assert credits(live_app, team) == {first: TWENTY_USD_NANOS, second: TWENTY_USD_NANOS}


def test_declined_card_changes_no_balance_and_is_visible(
        live_app: LiveApp, localstripe: httpx.Client, team: TeamFixture) -> None:
    live_app.register_webhook(localstripe)
    answer = start(live_app, team, "topup-5", role="owner",
                   payment_method="pm_card_chargeCustomerFail")
    assert answer.status_code == 201, answer.text
    assert (answer.json()["status"], answer.json()["failure_code"]) == ("failed",
                                                                        "card_declined")

    def listed() -> dict[str, Any]:
        payments = live_app.api.client.get(
            f"/v1/teams/{team.team_id}/payments",
            headers=live_app.api.headers(team.tokens["billing"])).json()["payments"]
        assert len(payments) == 1
        found: dict[str, Any] = payments[0]
        return found
    # localstripe's payment_intent.payment_failed webhook names the PaymentIntent.
    wait_until(lambda: listed()["stripe_object_id"] is not None, "the payment_failed webhook")
    assert listed()["status"] == "failed"
    assert credits(live_app, team) == {}


def test_partial_refunds_reverse_exactly_their_amounts(
        live_app: LiveApp, localstripe: httpx.Client, team: TeamFixture) -> None:
    live_app.register_webhook(localstripe)
    intent_id = start(live_app, team, "topup-6").json()["stripe_object_id"]
    wait_until(lambda: bool(credits(live_app, team)), "the payment_intent.succeeded webhook")
    first = live_app.stripe.v1.refunds.create(params={"payment_intent": intent_id,
                                                      "amount": 300})
    charge = {"id": "ch_for_test", "object": "charge", "payment_intent": intent_id}
    refunded = event_payload("evt_refund_1", "charge.refunded", charge)
    for _ in range(2):  # the second delivery is a repeat: it changes nothing
        answer = deliver(live_app, refunded, signature_header(refunded, WEBHOOK_SECRET))
        assert answer.status_code == 200, answer.text
    assert refunds(live_app, team) == {first.id: 300 * CENT_NANOS}

    second = live_app.stripe.v1.refunds.create(params={"payment_intent": intent_id,
                                                       "amount": 450})
    created = event_payload("evt_refund_2", "refund.created",
                            {"id": second.id, "object": "refund", "payment_intent": intent_id})
    assert deliver(live_app, created, signature_header(created, WEBHOOK_SECRET)
                   ).status_code == 200
    assert refunds(live_app, team) == {first.id: 300 * CENT_NANOS,
                                       second.id: 450 * CENT_NANOS}
    team_now = live_app.ledger.get_team(UUID(team.team_id))
    assert sum(team_now.top_ups.values()) - sum(team_now.refunds.values()) == \
        TWENTY_USD_NANOS - 750 * CENT_NANOS
    # The read models fold the payment events too: the balance shows the top-up less refunds,
    # and the audit trail has the money events attributed to Stripe.
    with open_runner(live_app.api.database_url) as runner:
        runner.catch_up()
    auditor = live_app.api.headers(team.tokens["auditor"])
    balance = live_app.api.client.get(f"/v1/teams/{team.team_id}/balance", headers=auditor)
    assert balance.json()["balance"]["nanos"] == str(TWENTY_USD_NANOS - 750 * CENT_NANOS)
    audit = live_app.api.client.get(
        f"/v1/teams/{team.team_id}/audit?event_type=Team.TopUpRefunded", headers=auditor)
    assert [e["actor"] for e in audit.json()["entries"]] == ["system:stripe"] * 2


def test_unknown_types_are_acknowledged_and_a_failing_handler_answers_5xx(
        live_app: LiveApp, localstripe: httpx.Client, team: TeamFixture) -> None:
    unknown = event_payload("evt_unknown", "customer.tax_id.created", {"id": "txi_1"})
    answer = deliver(live_app, unknown, signature_header(unknown, WEBHOOK_SECRET))
    assert answer.status_code == 200 and answer.json()["result"].startswith("ignored")
    broken = event_payload("evt_broken", "charge.refunded",
                           {"id": "ch_x", "object": "charge", "payment_intent": "pi_missing"})
    answer = deliver(live_app, broken, signature_header(broken, WEBHOOK_SECRET))
    assert answer.status_code == 500, answer.text


def test_only_owner_and_billing_start_top_ups_and_members_do_not_see_payments(
        live_app: LiveApp, localstripe: httpx.Client, team: TeamFixture) -> None:
    for role in ("admin", "member", "auditor"):
        assert start(live_app, team, f"topup-{role}", role=role).status_code == 403, role
    listed = live_app.api.client.get(f"/v1/teams/{team.team_id}/payments",
                                     headers=live_app.api.headers(team.tokens["member"]))
    assert listed.status_code == 403
    too_small = start(live_app, team, "topup-small", amount_nanos=NANOS_PER_UNIT)
    assert too_small.status_code == 422 and "between" in too_small.json()["detail"]


def test_a_lost_dispute_reverses_exactly_the_disputed_amount_and_a_won_one_nothing(
        live_app: LiveApp, localstripe: httpx.Client, team: TeamFixture) -> None:
    live_app.register_webhook(localstripe)
    intent_id = start(live_app, team, "topup-7").json()["stripe_object_id"]
    wait_until(lambda: bool(credits(live_app, team)), "the payment_intent.succeeded webhook")
    for number, status in ((1, "won"), (2, "lost")):
        dispute = event_payload(f"evt_dispute_{number}", "charge.dispute.closed", {
            "id": f"dp_{number}", "object": "dispute", "amount": 500, "currency": "usd",
            "status": status, "payment_intent": intent_id, "charge": "ch_for_test"})
        for _ in range(2):
            answer = deliver(live_app, dispute, signature_header(dispute, WEBHOOK_SECRET))
            assert answer.status_code == 200, answer.text
    assert refunds(live_app, team) == {"dp_2": 500 * CENT_NANOS}
    [payment] = live_app.api.client.get(
        f"/v1/teams/{team.team_id}/payments",
        headers=live_app.api.headers(team.tokens["billing"])).json()["payments"]
    assert (payment["disputes_lost"]["nanos"], payment["refunded"]["nanos"]) == (
        str(500 * CENT_NANOS), "0")
