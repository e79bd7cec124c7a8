"""The Payment aggregate as a worked example: Stripe reports in any order and more than once,
and the payment's history stays consistent (replayed, it is the same payment)."""

from __future__ import annotations

from uuid import uuid4

import pytest

from domain.errors import InvalidInputError, InvalidStateError
from domain.money import NANOS_PER_UNIT
from domain.payment import Payment, PaymentBook, PaymentStatus, payment_id_for

TEN_USD_NANOS = 10 * NANOS_PER_UNIT
TEAM_ID = uuid4()


def started() -> Payment:
    return Payment.start(team_id=TEAM_ID, request_key="req-1", amount_nanos=TEN_USD_NANOS,
                         amount_minor=1000, currency="USD", payment_method_id="pm_card_visa",
                         actor="owner-1")


def replayed(payment: Payment) -> Payment:
    events = payment.collect_events()
    copy: Payment | None = None
    for domain_event in events:
        copy = domain_event.mutate(copy)  # type: ignore[arg-type]
    assert isinstance(copy, Payment)
    return copy


def test_the_id_is_derived_from_team_and_request_key() -> None:
    assert started().id == payment_id_for(TEAM_ID, "req-1")
    assert payment_id_for(TEAM_ID, "req-1") != payment_id_for(uuid4(), "req-1")
    assert started().stripe_idempotency_key == started().stripe_idempotency_key


def test_success_before_the_api_answer_is_recorded_once_in_any_order() -> None:
    payment = started()
    assert payment.succeed("pi_1", TEN_USD_NANOS, "system:stripe") is True
    assert payment.attach_stripe_object("pi_1", "system:stripe") is False  # late API answer
    assert payment.succeed("pi_1", TEN_USD_NANOS, "system:stripe") is False  # repeat
    assert payment.fail("pi_1", "card_declined", "stale", "system:stripe") is False
    assert payment.cancel("pi_1", "system:stripe") is False
    assert payment.status == PaymentStatus.SUCCEEDED
    copy = replayed(payment)
    assert (copy.status, copy.credited_nanos, copy.stripe_object_id) == (
        PaymentStatus.SUCCEEDED, TEN_USD_NANOS, "pi_1")


def test_a_payment_belongs_to_one_stripe_object() -> None:
    payment = started()
    payment.attach_stripe_object("pi_1", "system:stripe")
    with pytest.raises(InvalidStateError, match="pi_1"):
        payment.attach_stripe_object("pi_2", "system:stripe")


def test_refunds_are_bounded_by_what_was_credited_and_recorded_once() -> None:
    payment = started()
    with pytest.raises(InvalidStateError, match="did not succeed"):
        payment.record_refund("re_0", NANOS_PER_UNIT, "system:stripe")
    payment.succeed("pi_1", TEN_USD_NANOS, "system:stripe")
    assert payment.record_refund("re_1", 4 * NANOS_PER_UNIT, "system:stripe") is True
    assert payment.record_refund("re_1", 4 * NANOS_PER_UNIT, "system:stripe") is False
    with pytest.raises(InvalidStateError, match="exceeds"):
        payment.record_refund("re_2", 7 * NANOS_PER_UNIT, "system:stripe")
    assert replayed(payment).refunded_nanos == 4 * NANOS_PER_UNIT


def test_failure_text_from_stripe_is_bounded_and_printable() -> None:
    payment = started()
    payment.fail(None, "card_declined", "bad\x00card" + "x" * 2000, "system:stripe")
    assert payment.failure_message is not None
    assert "\x00" not in payment.failure_message and len(payment.failure_message) == 500
    assert payment.status == PaymentStatus.FAILED


def test_bad_starts_name_the_field() -> None:
    with pytest.raises(InvalidInputError, match="request_key"):
        Payment.start(team_id=TEAM_ID, request_key="", amount_nanos=TEN_USD_NANOS,
                      amount_minor=1000, currency="USD", payment_method_id="pm_x",
                      actor="owner-1")
    with pytest.raises(InvalidInputError, match="currency"):
        Payment.start(team_id=TEAM_ID, request_key="k", amount_nanos=TEN_USD_NANOS,
                      amount_minor=1000, currency="XXX", payment_method_id="pm_x",
                      actor="owner-1")


def test_the_book_lists_payments_in_order() -> None:
    book = PaymentBook(team_id=TEAM_ID)
    first, second = uuid4(), uuid4()
    book.list_payment(first)
    book.list_payment(second)
    assert book.payment_ids == [first, second]


def test_a_lost_dispute_reverses_its_amount_once_within_what_is_left() -> None:
    payment = started()
    payment.succeed("pi_1", TEN_USD_NANOS, "system:stripe")
    payment.record_refund("re_1", 6 * NANOS_PER_UNIT, "system:stripe")
    assert payment.record_dispute_lost("dp_1", 4 * NANOS_PER_UNIT, "system:stripe") is True
    assert payment.record_dispute_lost("dp_1", 4 * NANOS_PER_UNIT, "system:stripe") is False
    with pytest.raises(InvalidStateError, match="exceeds the 0 nanos left"):
        payment.record_refund("re_2", 1, "system:stripe")
    copy = replayed(payment)
    assert (copy.refunded_nanos, copy.reversed_nanos) == (6 * NANOS_PER_UNIT, TEN_USD_NANOS)


def checkout_payment() -> Payment:
    return Payment.start(team_id=TEAM_ID, request_key="req-c", amount_nanos=TEN_USD_NANOS,
                         amount_minor=1000, currency="USD", payment_method_id="checkout",
                         actor="billing-1")


def test_a_checkout_session_is_recorded_once_in_any_order_and_never_replaced() -> None:
    payment = checkout_payment()
    # A webhook records the session (no URL) before the start records its answer.
    assert payment.open_checkout_session("cs_1", None, None, "system:stripe")
    assert not payment.open_checkout_session("cs_1", "https://checkout.stripe.com/c/pay/cs_1",
                                             1_900_000_000, "system:stripe")
    with pytest.raises(InvalidStateError, match="cs_1"):
        payment.open_checkout_session("cs_2", None, None, "system:stripe")
    assert payment.is_checkout and payment.status == PaymentStatus.STARTED
    copy = replayed(payment)
    assert (copy.checkout_session_id, copy.checkout_url) == ("cs_1", None)


def test_an_expired_checkout_is_final_but_money_received_later_still_counts() -> None:
    payment = checkout_payment()
    assert payment.expire_checkout("cs_1", "system:stripe")
    assert not payment.expire_checkout("cs_1", "system:stripe")
    assert payment.is_final and payment.credited_nanos == 0
    assert not payment.fail("pi_1", "late", "a stale failure", "system:stripe")
    # Stripe's word that the money arrived wins over an expiry seen first.
    assert payment.succeed("pi_1", TEN_USD_NANOS, "system:stripe")
    assert not payment.expire_checkout("cs_1", "system:stripe")
    assert replayed(payment).status == PaymentStatus.SUCCEEDED


@pytest.mark.parametrize("url", ["javascript:alert(1)", "http://evil.example/receipt",
                                 "https://pay.stripe.com/\nx", "https://" + "a" * 5000])
def test_a_receipt_url_must_be_a_bounded_https_link(url: str) -> None:
    payment = started()
    with pytest.raises(InvalidInputError):
        payment.record_receipt(url, "system:stripe")
    assert payment.record_receipt("https://pay.stripe.com/receipts/ch_1", "system:stripe")
    assert not payment.record_receipt("https://pay.stripe.com/receipts/ch_1", "system:stripe")
