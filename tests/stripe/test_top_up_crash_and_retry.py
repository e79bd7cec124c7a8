"""Starting a top-up against a Stripe double at the SDK's HTTP layer (localstripe ignores
idempotency keys): a crash between Stripe's answer and recording it, then a retry, makes one
PaymentIntent, because the retry sends the same idempotency key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest

from adapters.stripe.gateway import StripeGateway, make_client
from adapters.stripe.settings import StripeSettings
from domain.errors import IdempotencyConflictError, InvalidAmountError, PermissionDeniedError
from domain.money import NANOS_PER_UNIT
from domain.payment import PaymentStatus
from services.actor import Actor
from services.ledger import Ledger
from services.payments.port import PaymentProviderError
from services.payments.top_ups import TopUps
from tests.stripe.stripe_http_double import StripeHttpDouble

OWNER = Actor("owner-1")
BILLING = Actor("billing-1")
MEMBER = Actor("member-1")
CENT_NANOS = NANOS_PER_UNIT // 100
TWENTY_USD_NANOS = 20 * NANOS_PER_UNIT


class Crash(Exception):
    pass


def make_team(ledger: Ledger) -> UUID:
    team_id = ledger.register_team(team_key="acme", name="Acme", currency="USD",
                                   timezone="UTC", actor=OWNER)
    ledger.add_member(team_id, BILLING.user_id, "billing", OWNER)
    ledger.add_member(team_id, MEMBER.user_id, "member", OWNER)
    return team_id


def top_ups_with(ledger: Ledger, double: StripeHttpDouble, network_retries: int = 0) -> TopUps:
    settings = StripeSettings(api_key="sk_test_double", webhook_secrets=("whsec_x",),
                              network_retries=network_retries)
    return TopUps(ledger, StripeGateway(make_client(settings, double)), settings.top_up_limits)


def crash_once(target: Callable[..., Any]) -> Callable[..., Any]:
    crashed: list[bool] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not crashed:
            crashed.append(True)
            raise Crash("the process died after Stripe answered, before recording it")
        return target(*args, **kwargs)
    return wrapper


def test_crash_between_stripe_call_and_record_retries_with_the_same_key(
        ledger: Ledger) -> None:
    team_id = make_team(ledger)
    double = StripeHttpDouble()
    top_ups = top_ups_with(ledger, double)
    top_ups.settlement.record_answer = crash_once(  # type: ignore[method-assign]
        top_ups.settlement.record_answer)

    with pytest.raises(Crash):
        top_ups.start_top_up(team_id, TWENTY_USD_NANOS, "pm_card_visa", BILLING, "req-1")
    payment = top_ups.start_top_up(team_id, TWENTY_USD_NANOS, "pm_card_visa", BILLING,
                                   "req-1")

    intent_posts = [r for r in double.requests
                    if r.method == "post" and r.path == "/v1/payment_intents"]
    assert len(intent_posts) == 2
    assert {r.idempotency_key for r in intent_posts} == {payment.stripe_idempotency_key}
    assert double.of_kind("pi_") == [payment.stripe_object_id]
    assert len(double.of_kind("cus_")) == 1
    assert payment.status == PaymentStatus.PROCESSING
    assert intent_posts[0].form["amount"] == "2000"
    assert intent_posts[0].form["metadata[ledger_payment_id]"] == str(payment.id)
    # Not credited on the API answer: only when Stripe reports it (here: by a read).
    assert ledger.get_team(team_id).top_ups == {}
    for _ in range(2):
        refreshed = top_ups.refresh_payment(payment.id)
    assert refreshed.status == PaymentStatus.SUCCEEDED
    assert ledger.get_team(team_id).top_ups == {payment.stripe_object_id: TWENTY_USD_NANOS}


def test_same_request_key_resumes_and_a_different_amount_conflicts(ledger: Ledger) -> None:
    team_id = make_team(ledger)
    double = StripeHttpDouble()
    top_ups = top_ups_with(ledger, double)
    first = top_ups.start_top_up(team_id, TWENTY_USD_NANOS, "pm_card_visa", OWNER, "req-2")
    again = top_ups.start_top_up(team_id, TWENTY_USD_NANOS, "pm_card_visa", OWNER, "req-2")
    assert again.id == first.id and len(double.of_kind("pi_")) == 1
    with pytest.raises(IdempotencyConflictError, match="req-2"):
        top_ups.start_top_up(team_id, 2 * TWENTY_USD_NANOS, "pm_card_visa", OWNER, "req-2")
    assert [p.id for p in top_ups.payments_of(team_id)] == [first.id]


def test_declined_card_is_visible_and_moves_no_money(ledger: Ledger) -> None:
    team_id = make_team(ledger)
    double = StripeHttpDouble()
    top_ups = top_ups_with(ledger, double)
    payment = top_ups.start_top_up(team_id, TWENTY_USD_NANOS, "pm_card_chargeCustomerFail",
                                   BILLING, "req-3")
    assert payment.status == PaymentStatus.FAILED
    assert payment.failure_code == "card_declined"
    assert payment.stripe_object_id == double.of_kind("pi_")[0]
    assert ledger.get_team(team_id).top_ups == {}
    assert top_ups.refresh_payment(payment.id).status == PaymentStatus.FAILED


@pytest.mark.parametrize(("amount_nanos", "message"), [
    (TWENTY_USD_NANOS + 1, "multiple of 10000000 nanos"),
    (4 * NANOS_PER_UNIT, "between 5.000000000 USD and 10000.000000000 USD"),
    (10_001 * NANOS_PER_UNIT, "between"),
])
def test_amounts_outside_the_limits_or_not_whole_cents_are_refused(
        ledger: Ledger, amount_nanos: int, message: str) -> None:
    team_id = make_team(ledger)
    double = StripeHttpDouble()
    with pytest.raises(InvalidAmountError, match=message):
        top_ups_with(ledger, double).start_top_up(team_id, amount_nanos, "pm_card_visa",
                                                  OWNER, "req-4")
    assert double.requests == []
    assert CENT_NANOS == 10_000_000


def test_a_member_may_not_start_a_top_up(ledger: Ledger) -> None:
    team_id = make_team(ledger)
    double = StripeHttpDouble()
    with pytest.raises(PermissionDeniedError, match="member"):
        top_ups_with(ledger, double).start_top_up(team_id, TWENTY_USD_NANOS, "pm_card_visa",
                                                  MEMBER, "req-5")
    assert double.requests == []


def test_a_lost_answer_is_retried_by_the_sdk_with_the_same_key(ledger: Ledger) -> None:
    team_id = make_team(ledger)
    double = StripeHttpDouble(lose_intent_answers=1)
    payment = top_ups_with(ledger, double, network_retries=2).start_top_up(
        team_id, TWENTY_USD_NANOS, "pm_card_visa", BILLING, "req-6")
    intent_posts = [r for r in double.requests if r.path == "/v1/payment_intents"]
    assert [r.idempotency_key for r in intent_posts] == [payment.stripe_idempotency_key] * 2
    assert double.of_kind("pi_") == [payment.stripe_object_id]


def test_when_retries_run_out_the_same_request_later_gets_the_same_payment(
        ledger: Ledger) -> None:
    team_id = make_team(ledger)
    double = StripeHttpDouble(lose_intent_answers=1)
    top_ups = top_ups_with(ledger, double)
    with pytest.raises(PaymentProviderError, match="Stripe did not take the payment"):
        top_ups.start_top_up(team_id, TWENTY_USD_NANOS, "pm_card_visa", BILLING, "req-7")
    [started] = top_ups.payments_of(team_id)
    assert started.status == PaymentStatus.STARTED and started.stripe_object_id is None
    payment = top_ups.start_top_up(team_id, TWENTY_USD_NANOS, "pm_card_visa", BILLING, "req-7")
    assert payment.id == started.id
    assert double.of_kind("pi_") == [payment.stripe_object_id]
    assert ledger.get_team(team_id).top_ups == {}


def test_an_unknown_payment_method_fails_the_payment_visibly(ledger: Ledger) -> None:
    team_id = make_team(ledger)
    payment = top_ups_with(ledger, StripeHttpDouble()).start_top_up(
        team_id, TWENTY_USD_NANOS, "pm_missing_1", OWNER, "req-8")
    assert (payment.status, payment.failure_code) == (PaymentStatus.FAILED, "resource_missing")
    assert payment.failure_message is not None and "pm_missing_1" in payment.failure_message
    assert ledger.get_team(team_id).top_ups == {}
