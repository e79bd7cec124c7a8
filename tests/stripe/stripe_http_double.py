"""A Stripe double at the SDK's HTTP layer: a `stripe.HTTPClient` that records every request and
answers like Stripe for the calls the top-up path makes. Like Stripe (and unlike localstripe),
it honours idempotency keys: a POST with a key it has seen answers the first answer again.

It also plays what localstripe lacks: Checkout Sessions (`pay_session`, `expire_session` play
the customer), billing-portal sessions, and charges with a receipt URL."""

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
    # Where the double's Checkout and portal pages "are" (a browser test serves them).
    pages_url: str = "https://checkout.stripe.test"
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
        expand = "expand" in urlparse(url).query
        with self._lock:
            self.requests.append(RecordedRequest(method, path, key, dict(parse_qsl(body))))
            if method == "post" and key in self._answers:
                text, status = self._answers[key]
                return text, status, {"Idempotent-Replayed": "true"}
            text, status = self._answer(method, path, dict(parse_qsl(body)), expand)
            if method == "post" and key is not None:
                self._answers[key] = (text, status)
            if path == "/v1/payment_intents" and self.lose_intent_answers > 0:
                self.lose_intent_answers -= 1
                raise stripe.APIConnectionError("the answer was lost (timeout)",
                                                should_retry=True)
            return text, status, {}

    def _answer(self, method: str, path: str, form: dict[str, str],
                expand: bool = False) -> tuple[str, int]:
        if method == "post" and path == "/v1/checkout/sessions":
            return self._create_session(form)
        if method == "get" and path.startswith("/v1/checkout/sessions/"):
            found = self.created.get(path.rsplit("/", 1)[1])
            if found is not None:
                return json.dumps(found), 200
        if method == "post" and path == "/v1/billing_portal/sessions":
            text, status = self._create("bps", {"object": "billing_portal.session",
                                                "customer": form["customer"],
                                                "return_url": form["return_url"]})
            portal = json.loads(text)
            portal["url"] = f"{self.pages_url}/portal/{portal['id']}"
            self.created[portal["id"]] = portal
            return json.dumps(portal), status
        if method == "get" and path.startswith("/v1/payment_intents/") and expand:
            found = self.created.get(path.rsplit("/", 1)[1])
            if found is not None:
                charge = self.created.get(str(found.get("latest_charge")))
                return json.dumps({**found, "latest_charge": charge}), 200
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

    def _create_session(self, form: dict[str, str]) -> tuple[str, int]:
        metadata = {k[len("metadata["):-1]: v for k, v in form.items()
                    if k.startswith("metadata[")}
        text, status = self._create("cs", {
            "object": "checkout.session", "mode": form["mode"], "customer": form["customer"],
            "amount_total": int(form["line_items[0][price_data][unit_amount]"]),
            "currency": form["line_items[0][price_data][currency]"], "metadata": metadata,
            "status": "open", "payment_status": "unpaid", "payment_intent": None,
            "expires_at": int(form["expires_at"]), "success_url": form["success_url"],
            "cancel_url": form["cancel_url"]})
        session = json.loads(text)
        session["url"] = f"{self.pages_url}/pay/{session['id']}"
        self.created[session["id"]] = session
        return json.dumps(session), status

    def pay_session(self, session_id: str, intent_status: str = "succeeded"
                    ) -> dict[str, Any]:
        """The customer pays on the Checkout page: the PaymentIntent (with the payment id of
        `payment_intent_data[metadata]`) and its charge are made; returns the session as the
        `checkout.session.completed` event carries it."""
        with self._lock:
            session = self.created[session_id]
            creating = next(r for r in self.requests if r.path == "/v1/checkout/sessions"
                            and r.form.get("metadata[ledger_payment_id]")
                            == session["metadata"].get("ledger_payment_id"))
            prefix = "payment_intent_data[metadata]["
            metadata = {k[len(prefix):-1]: v for k, v in creating.form.items()
                        if k.startswith(prefix)}
            paid = intent_status == "succeeded"
            _, _ = self._create("ch", {"object": "charge", "paid": paid,
                                       "amount": session["amount_total"]})
            charge_id = self.of_kind("ch_")[-1]
            self.created[charge_id]["receipt_url"] = f"https://pay.stripe.com/receipts/{charge_id}"
            self._create("pi", {
                "object": "payment_intent", "amount": session["amount_total"],
                "amount_received": session["amount_total"] if paid else 0,
                "currency": session["currency"], "customer": session["customer"],
                "metadata": metadata, "status": intent_status, "last_payment_error": None,
                "latest_charge": charge_id})
            intent_id = self.of_kind("pi_")[-1]
            self.created[charge_id]["payment_intent"] = intent_id
            session.update(status="complete", payment_intent=intent_id, url=None,
                           payment_status="paid" if paid else "unpaid")
            return dict(session)

    def settle_intent(self, intent_id: str, status: str) -> None:
        """An asynchronous payment method settles (or fails) later."""
        with self._lock:
            intent = self.created[intent_id]
            intent["status"] = status
            intent["amount_received"] = intent["amount"] if status == "succeeded" else 0
            if status != "succeeded":
                intent["last_payment_error"] = {"code": "payment_failed",
                                                "message": "The bank refused the debit."}

    def expire_session(self, session_id: str) -> dict[str, Any]:
        with self._lock:
            session = self.created[session_id]
            session.update(status="expired", url=None)
            return dict(session)

    def _create(self, prefix: str, fields: dict[str, Any]) -> tuple[str, int]:
        object_id = f"{prefix}_double{next(self._ids)}"
        self.created[object_id] = {"id": object_id, **fields}
        return json.dumps(self.created[object_id]), 200

    def of_kind(self, prefix: str) -> list[str]:
        return [object_id for object_id in self.created if object_id.startswith(prefix)]

    def close(self) -> None:
        pass
