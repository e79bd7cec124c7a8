"""Reconciling a team's money in the ledger with Stripe's: top-ups against Stripe's charges,
refunds against Stripe's refunds, object by object, every difference listed with both sides.

The ledger keys a top-up by its PaymentIntent id and a refund (or lost dispute) by its refund (or
dispute) id, so the two sides line up by id: a top-up Stripe settled that the ledger never
credited (a lost webhook), one the ledger credited that Stripe has not (or not for that amount),
and the same for refunds and lost disputes. Charges that failed are not money and are left out.
All amounts are compared in nanos.

Invoices (when a Stripe invoice port is given): every ledger invoice of the team (its monthly
invoices since the team was registered, and any invoice a Stripe invoice's metadata names)
against the Stripe invoices of its customer, by ledger invoice id: the total and the status
(finalized = open in Stripe, paid = paid, void = void or no Stripe invoice). An invoice the
prepaid credit settled (total zero) and a draft need no Stripe invoice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

from domain.money import minor_units_to_nanos
from services.invoicing.monthly import INVOICE_PAYMENT_PREFIX
from services.invoicing.port import StripeInvoicePort
from services.invoicing.reconcile_invoices import invoice_differences
from services.ledger import Ledger
from services.payments.port import PaymentGateway

DISPUTE_ID_PREFIXES = ("dp_", "du_")


@dataclass(frozen=True)
class Difference:
    kind: str  # "top_up", "refund", "dispute" (a lost one) or "invoice"
    stripe_object_id: str  # for an invoice Stripe lacks: the ledger invoice's number
    ledger_nanos: int | None  # None: the ledger has no such object
    stripe_nanos: int | None  # None: Stripe has no such object
    ledger_status: str | None = None  # invoices: the status on each side
    stripe_status: str | None = None


@dataclass
class Reconciliation:
    team_id: UUID
    currency: str
    customer_id: str | None
    top_ups_compared: int = 0
    refunds_compared: int = 0
    invoices_compared: int = 0
    differences: list[Difference] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        return not self.differences


def _compare(kind: str, ledger_side: dict[str, int], stripe_side: dict[str, int]
             ) -> list[Difference]:
    return [Difference(kind, object_id, ledger_side.get(object_id), stripe_side.get(object_id))
            for object_id in sorted(ledger_side.keys() | stripe_side.keys())
            if ledger_side.get(object_id) != stripe_side.get(object_id)]


def reconcile_team(ledger: Ledger, gateway: PaymentGateway, team_id: UUID,
                   invoices: StripeInvoicePort | None = None) -> Reconciliation:
    team = ledger.get_team(team_id)
    report = Reconciliation(team_id=team_id, currency=team.currency,
                            customer_id=team.stripe_customer_id)
    stripe_top_ups: dict[str, int] = {}
    stripe_refunds: dict[str, int] = {}
    stripe_disputes: dict[str, int] = {}
    disputed_intents: set[str] = set()
    refunded_intents = set(team.refunded_by_top_up)
    invoice_intents: set[str] = set()
    rows: list[tuple[str, int | None, int | None, str | None, str | None]] = []
    if invoices is not None:
        compared, rows, invoice_intents = invoice_differences(ledger, invoices, team)
        report.invoices_compared = compared
    if team.stripe_customer_id is not None:
        for charge in gateway.list_charges(team.stripe_customer_id):
            if charge.status != "succeeded" or charge.intent_id is None or \
                    charge.intent_id in invoice_intents:  # an invoice's: compared as one
                continue
            object_id = charge.intent_id
            stripe_top_ups[object_id] = stripe_top_ups.get(object_id, 0) + \
                minor_units_to_nanos(charge.amount_minor, charge.currency)
            if charge.amount_refunded_minor:
                refunded_intents.add(object_id)
            if charge.disputed:
                disputed_intents.add(object_id)
        for intent_id in sorted(refunded_intents):
            for refund in gateway.list_refunds(intent_id):
                if refund.status == "succeeded":
                    stripe_refunds[refund.refund_id] = minor_units_to_nanos(
                        refund.amount_minor, refund.currency)
        for intent_id in sorted(disputed_intents):
            for dispute in gateway.list_disputes(intent_id):
                if dispute.status == "lost":
                    stripe_disputes[dispute.dispute_id] = minor_units_to_nanos(
                        dispute.amount_minor, dispute.currency)
    # The ledger keeps refunds and lost disputes as reversals of a top-up, keyed by the Stripe
    # id; they are told apart by Stripe's id prefixes.
    ledger_disputes = {k: v for k, v in team.refunds.items()
                       if k in stripe_disputes or k.startswith(DISPUTE_ID_PREFIXES)}
    ledger_refunds = {k: v for k, v in team.refunds.items() if k not in ledger_disputes}
    # Paid invoices credited to the balance are keyed by the Stripe invoice id: compared with
    # Stripe's invoices below, not with top-up charges.
    ledger_top_ups = {k: v for k, v in team.top_ups.items()
                      if not k.startswith(INVOICE_PAYMENT_PREFIX)}
    report.top_ups_compared = len(ledger_top_ups.keys() | stripe_top_ups.keys())
    report.refunds_compared = len(team.refunds.keys() | stripe_refunds.keys()
                                  | stripe_disputes.keys())
    report.differences = (_compare("top_up", ledger_top_ups, stripe_top_ups)
                          + _compare("refund", ledger_refunds, stripe_refunds)
                          + _compare("dispute", ledger_disputes, stripe_disputes))
    report.differences += [Difference("invoice", *row) for row in rows]
    return report
