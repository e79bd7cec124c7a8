"""Only a delivery signed with a configured secret, on the exact bytes, within the tolerance in
both directions, is believed."""

from __future__ import annotations

import json
import time

import pytest

from adapters.stripe.webhook_signature import WebhookRejected, verify_webhook
from tests.stripe.signing import event_payload, signature_header

SECRET = "whsec_current"
OLD_SECRET = "whsec_previous"
TOLERANCE_SECONDS = 300
TEN_MINUTES_SECONDS = 600
PAYLOAD = event_payload("evt_1", "payment_intent.succeeded", {"id": "pi_1", "amount": 500})


def verify(payload: bytes, header: str | None, secrets: tuple[str, ...] = (SECRET,)) -> str:
    return verify_webhook(payload, header, secrets, TOLERANCE_SECONDS).event_id


def test_a_correctly_signed_delivery_is_believed() -> None:
    assert verify(PAYLOAD, signature_header(PAYLOAD, SECRET)) == "evt_1"


def test_both_secrets_are_accepted_during_a_rotation() -> None:
    both = (SECRET, OLD_SECRET)
    assert verify(PAYLOAD, signature_header(PAYLOAD, OLD_SECRET), both) == "evt_1"
    assert verify(PAYLOAD, signature_header(PAYLOAD, SECRET), both) == "evt_1"
    with pytest.raises(WebhookRejected, match="no valid signature"):
        verify(PAYLOAD, signature_header(PAYLOAD, OLD_SECRET), (SECRET,))


@pytest.mark.parametrize("forgery", ["wrong secret", "changed byte", "missing header",
                                     "re-serialized body", "garbage header"])
def test_forged_deliveries_are_refused(forgery: str) -> None:
    payload, header = PAYLOAD, signature_header(PAYLOAD, SECRET)
    if forgery == "wrong secret":
        header = signature_header(PAYLOAD, "whsec_attacker")
    elif forgery == "changed byte":
        payload = PAYLOAD.replace(b'"amount": 500', b'"amount": 900')
    elif forgery == "missing header":
        header = ""
    elif forgery == "re-serialized body":
        payload = json.dumps(json.loads(PAYLOAD)).encode()
    else:
        header = "t=abc,v1=00"
    assert payload != PAYLOAD or forgery in ("wrong secret", "missing header", "garbage header")
    with pytest.raises(WebhookRejected):
        verify(payload, header or None)


@pytest.mark.parametrize("offset_seconds", [TEN_MINUTES_SECONDS, -TEN_MINUTES_SECONDS])
def test_a_timestamp_outside_the_tolerance_is_refused_in_both_directions(
        offset_seconds: int) -> None:
    header = signature_header(PAYLOAD, SECRET, int(time.time()) + offset_seconds)
    with pytest.raises(WebhookRejected, match="timestamp"):
        verify(PAYLOAD, header)


def test_a_timestamp_inside_the_tolerance_is_accepted_either_side() -> None:
    for offset_seconds in (TOLERANCE_SECONDS - 30, -(TOLERANCE_SECONDS - 30)):
        header = signature_header(PAYLOAD, SECRET, int(time.time()) + offset_seconds)
        assert verify(PAYLOAD, header) == "evt_1"


def test_a_signed_body_without_an_event_id_is_refused() -> None:
    payload = json.dumps({"type": "x", "data": {"object": {}}}).encode()
    with pytest.raises(WebhookRejected, match="no valid id"):
        verify(payload, signature_header(payload, SECRET))
