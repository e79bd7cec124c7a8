"""Checking a Stripe webhook before anything in it is believed.

The signature is checked on the raw body, byte for byte, with the SDK's `WebhookSignature`
against each configured secret (two during a rotation: the old and the new one are both valid
until the old one is removed). The SDK refuses a timestamp older than the tolerance but accepts
any timestamp in the future; a signed timestamp further ahead than the tolerance is refused here
too, so a captured delivery cannot be stored and replayed later. The body is parsed only after
the signature holds, and must be a JSON object with an event id and type.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import stripe

SIGNATURE_HEADER_LENGTH_MAX = 2000
# Stripe's event ids are `evt_` and a few dozen characters; types are short dotted names.
EVENT_ID_LENGTH_MAX = 255
EVENT_TYPE_LENGTH_MAX = 100


class WebhookRejected(ValueError):
    """The delivery cannot be trusted; the message says why (never which secret)."""


@dataclass(frozen=True)
class VerifiedEvent:
    event_id: str
    event_type: str
    data_object: dict[str, Any]


def _signed_timestamp(header: str) -> int:
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            try:
                return int(value)
            except ValueError:
                break
    raise WebhookRejected("the Stripe-Signature header has no valid timestamp")


def verify_webhook(payload: bytes, header: str | None, secrets: Sequence[str],
                   tolerance_seconds: int,
                   now: Callable[[], float] = time.time) -> VerifiedEvent:
    """The event, if `header` signs `payload` with one of `secrets` within the tolerance."""
    if not header:
        raise WebhookRejected("the Stripe-Signature header is missing")
    if len(header) > SIGNATURE_HEADER_LENGTH_MAX:
        raise WebhookRejected("the Stripe-Signature header is too long")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookRejected("the body is not UTF-8") from None
    for secret in secrets:
        try:
            # Tolerance None: the SDK checks only the past; both directions are checked below.
            stripe.WebhookSignature.verify_header(  # type: ignore[no-untyped-call]
                text, header, secret, None)
            break
        except stripe.SignatureVerificationError:
            continue
    else:
        raise WebhookRejected("no valid signature for this body")
    skew_seconds = _signed_timestamp(header) - now()
    if skew_seconds > tolerance_seconds:
        raise WebhookRejected("the signed timestamp is in the future beyond the tolerance")
    if skew_seconds < -tolerance_seconds:
        raise WebhookRejected("the signed timestamp is older than the tolerance")
    return _parse(text)


def _parse(text: str) -> VerifiedEvent:
    try:
        data = json.loads(text)
    except ValueError:
        raise WebhookRejected("the body is not JSON") from None
    event_id = data.get("id") if isinstance(data, dict) else None
    event_type = data.get("type") if isinstance(data, dict) else None
    inner = data.get("data") if isinstance(data, dict) else None
    data_object = inner.get("object") if isinstance(inner, dict) else None
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= EVENT_ID_LENGTH_MAX \
            or not event_id.isprintable():
        raise WebhookRejected("the event has no valid id")
    if not isinstance(event_type, str) or not 1 <= len(event_type) <= EVENT_TYPE_LENGTH_MAX:
        raise WebhookRejected("the event has no valid type")
    if not isinstance(data_object, dict):
        raise WebhookRejected("the event has no data.object")
    return VerifiedEvent(event_id=event_id, event_type=event_type, data_object=data_object)
