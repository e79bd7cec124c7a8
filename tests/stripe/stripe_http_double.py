"""A Stripe double at the SDK's HTTP layer: a `stripe.HTTPClient` that records every request and
answers like Stripe for the calls the top-up path makes. Like Stripe (and unlike localstripe),
it honours idempotency keys: a POST with a key it has seen answers the first answer again."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlparse

import stripe


@dataclass
class RecordedRequest:
    method: str
    path: str
    idempotency_key: str | None
    form: dict[str, str]


@dataclass
class StripeHttpDouble(stripe.HTTPClient):
    name = "stripe-http-double"
    requests: list[RecordedRequest] = field(default_factory=list)
    created: dict[str, dict[str, Any]] = field(default_factory=dict)  # object id -> object
    decline_payment_method: str = "pm_card_chargeCustomerFail"
    # The next this-many PaymentIntent creations are done, but their answer is lost on the way
    # back (a timeout): the SDK sees a connection error it may retry.
    lose_intent_answers: int = 0
    _answers: dict[str, tuple[str, int]] = field(default_factory=dict)  # idempotency key -> answer
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        super().__init__()

    def request(self, method: str, url: str, headers: Mapping[str, str] | None,
                post_data: Any = None, *, _usage: list[str] | None = None
                ) -> tuple[str, int, Mapping[str, str]]:
        key = {k.lower(): v for k, v in (headers or {}).items()}.get("idempotency-key")
        body = post_data.decode() if isinstance(post_data, bytes) else (post_data or "")
        path = urlparse(url).path
        with self._lock:
            self.requests.append(RecordedRequest(method, path, key, dict(parse_qsl(body))))
            if method == "post" and key in self._answers:
                text, status = self._answers[key]
                return text, status, {"Idempotent-Replayed": "true"}
            text, status = self._answer(method, path, dict(parse_qsl(body)))
            if method == "post" and key is not None:
                self._answers[key] = (text, status)
            if path == "/v1/payment_intents" and self.lose_intent_answers > 0:
                self.lose_intent_answers -= 1
                raise stripe.APIConnectionError("the answer was lost (timeout)",
                                                should_retry=True)
            return text, status, {}

    def _answer(self, method: str, path: str, form: dict[str, str]) -> tuple[str, int]:
        if method == "post" and path == "/v1/customers":
            return self._create("cus", {"object": "customer", "name": form.get("name")})
        if method == "post" and path == "/v1/payment_intents":
            metadata = {k[len("metadata["):-1]: v for k, v in form.items()
                        if k.startswith("metadata[")}
            intent = {"object": "payment_intent", "amount": int(form["amount"]),
                      "amount_received": int(form["amount"]), "currency": form["currency"],
                      "customer": form["customer"], "metadata": metadata,
                      "status": "succeeded", "last_payment_error": None}
            if form.get("payment_method", "").startswith("pm_missing"):
                return json.dumps({"error": {
                    "type": "invalid_request_error", "code": "resource_missing",
                    "message": f"No such PaymentMethod: '{form['payment_method']}'"}}), 400
            if form.get("payment_method") == self.decline_payment_method:
                intent.update(status="requires_payment_method", amount_received=0,
                              last_payment_error={"code": "card_declined"})
                text, _ = self._create("pi", intent)
                error = {"error": {"type": "card_error", "code": "card_declined",
                                   "message": "Your card was declined.",
                                   "payment_intent": json.loads(text)}}
                return json.dumps(error), 402
            return self._create("pi", intent)
        if method == "get" and path.startswith("/v1/payment_intents/"):
            found = self.created.get(path.rsplit("/", 1)[1])
            if found is not None:
                return json.dumps(found), 200
        return json.dumps({"error": {"type": "invalid_request_error",
                                     "message": f"no such route in the double: {path}"}}), 404

    def _create(self, prefix: str, fields: dict[str, Any]) -> tuple[str, int]:
        object_id = f"{prefix}_double{next(self._ids)}"
        self.created[object_id] = {"id": object_id, **fields}
        return json.dumps(self.created[object_id]), 200

    def of_kind(self, prefix: str) -> list[str]:
        return [object_id for object_id in self.created if object_id.startswith(prefix)]

    def close(self) -> None:
        pass
