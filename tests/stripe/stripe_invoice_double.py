"""The SDK-level Stripe double (`stripe_http_double`) taught one-off invoices, as Stripe answers
them (localstripe has no one-off invoices, finalize or credit notes): create a draft invoice, add
an invoice item to it, finalize, void, delete a draft, retrieve, list a customer's invoices, and
credit notes. `pay` plays the customer's card being charged."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlparse

from tests.stripe.stripe_http_double import StripeHttpDouble


def _metadata(form: dict[str, str]) -> dict[str, str]:
    return {k[len("metadata["):-1]: v for k, v in form.items() if k.startswith("metadata[")}


def _error(status: int, message: str) -> tuple[str, int]:
    return json.dumps({"error": {"type": "invalid_request_error", "message": message}}), status


@dataclass
class StripeInvoiceDouble(StripeHttpDouble):
    def __post_init__(self) -> None:
        super().__post_init__()
        self._query: dict[str, str] = {}

    def request(self, method: str, url: str, headers: Mapping[str, str] | None,
                post_data: Any = None, *, _usage: list[str] | None = None
                ) -> tuple[str, int, Mapping[str, str]]:
        self._query = dict(parse_qsl(urlparse(url).query))
        return super().request(method, url, headers, post_data, _usage=_usage)

    def _answer(self, method: str, path: str, form: dict[str, str],
                expand: bool = False) -> tuple[str, int]:
        parts = path.strip("/").split("/")  # v1, invoices, in_x, finalize
        if parts[1:2] == ["invoices"]:
            return self._invoices(method, parts[2:], form)
        listed = {"/v1/charges": ("charge", "customer"),
                  "/v1/invoice_payments": ("invoice_payment", "invoice"),
                  "/v1/credit_notes": ("credit_note", "invoice")}
        if method == "get" and path in listed:
            kind, field = listed[path]
            wanted = self._query.get(field)
            found = [o for o in self.created.values()
                     if o.get("object") == kind and o.get(field) == wanted]
            return json.dumps({"object": "list", "data": found, "has_more": False,
                               "url": path}), 200
        if method == "post" and path == "/v1/invoiceitems":
            invoice = self.created.get(form.get("invoice", ""))
            if invoice is None or invoice["status"] != "draft":
                return _error(400, "invoice items are added to draft invoices only")
            invoice["total"] += int(form["amount"])
            invoice["amount_due"] = invoice["total"]
            return self._create("ii", {"object": "invoiceitem", "amount": int(form["amount"]),
                                       "invoice": form["invoice"], "metadata": _metadata(form)})
        if method == "post" and path == "/v1/credit_notes":
            invoice = self.created.get(form.get("invoice", ""))
            if invoice is None or invoice["status"] not in ("open", "paid"):
                return _error(400, "credit notes are for finalized invoices")
            refund = int(form.get("refund_amount", 0))
            if invoice["status"] == "paid" and refund != int(form["amount"]):
                return _error(400, "a post-payment credit note must be refunded or credited")
            return self._create("cn", {"object": "credit_note", "invoice": form["invoice"],
                                       "amount": int(form["amount"]), "refund_amount": refund,
                                       "memo": form.get("memo"), "metadata": _metadata(form)})
        return super()._answer(method, path, form, expand)

    def _invoices(self, method: str, rest: list[str], form: dict[str, str]) -> tuple[str, int]:
        if method == "post" and not rest:
            return self._create("in", {
                "object": "invoice", "customer": form["customer"], "currency": form["currency"],
                "status": "draft", "total": 0, "amount_due": 0, "amount_paid": 0,
                "collection_method": form.get("collection_method"),
                "metadata": _metadata(form)})
        if method == "get" and not rest:
            mine = [i for object_id, i in self.created.items() if object_id.startswith("in_")
                    and i["customer"] == self._query.get("customer")]
            return json.dumps({"object": "list", "data": mine, "has_more": False,
                               "url": "/v1/invoices"}), 200
        invoice = self.created.get(rest[0]) if rest else None
        if invoice is None:
            return _error(404, f"No such invoice: '{rest[0] if rest else ''}'")
        action = rest[1] if len(rest) > 1 else None
        if method == "get" and action is None:
            return json.dumps(invoice), 200
        if method == "delete" and action is None:
            if invoice["status"] != "draft":
                return _error(400, "only draft invoices can be deleted")
            del self.created[invoice["id"]]
            return json.dumps({"id": invoice["id"], "object": "invoice", "deleted": True}), 200
        moves = {"finalize": ("draft", "open"), "void": ("open", "void")}
        if method == "post" and action in moves:
            before, after = moves[action]
            if invoice["status"] != before:
                return _error(400, f"You can only {action} {before} invoices")
            invoice["status"] = after
            if action == "finalize":  # Stripe's page where the customer sees and pays it
                invoice["hosted_invoice_url"] = f"https://invoice.stripe.com/i/{invoice['id']}"
            return json.dumps(invoice), 200
        return _error(404, f"no such route in the double: {method} invoices/{'/'.join(rest)}")

    def pay(self, invoice_id: str) -> dict[str, Any]:
        """The customer's card is charged: the invoice is paid (what `invoice.paid` carries)."""
        with self._lock:
            invoice = self.created[invoice_id]
            invoice.update(status="paid", amount_paid=invoice["total"], amount_due=0)
            intent = f"pi_for_{invoice_id}"
            self._create("ch", {"object": "charge", "customer": invoice["customer"],
                                "payment_intent": intent, "amount": invoice["total"],
                                "amount_refunded": 0, "currency": invoice["currency"],
                                "status": "succeeded", "disputed": False})
            self._create("inpay", {"object": "invoice_payment", "invoice": invoice_id,
                                   "payment": {"type": "payment_intent",
                                               "payment_intent": intent}})
            return dict(invoice)

    def posts_to(self, path: str) -> list[Any]:
        return [r for r in self.requests if r.method == "post" and r.path == path]
