"""Invoice commands of the Stripe path: link the Stripe invoice, request and issue a credit note,
and apply what a verified Stripe event says. Each is one command on the freshly loaded invoice;
one carrying a Stripe event id is recorded under it (scope `stripe_event`), so a redelivery of
the event, today or days later, replays the first result and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from domain.invoice import Invoice, InvoiceStatus
from domain.roles import Action
from domain.team import Team
from services.actor import Actor
from services.command_runs import Attempt, Command, team_scope
from services.invoicing.port import StripeInvoiceInfo
from services.ledger import Ledger
from services.payments.settlement import STRIPE_EVENT_SCOPE

STRIPE_VOID_REASON = "voided in Stripe"


def run_on_invoice(ledger: Ledger, invoice_id: UUID, actor: Actor, name: str,
                   arguments: dict[str, object], apply: Callable[[Invoice], str],
                   event_id: str | None = None,
                   team_too: Callable[[Invoice, Team], str] | None = None) -> str:
    """Run `apply` (or `team_too`, given the team as well) on the freshly loaded invoice; what
    changed is saved in one transaction."""
    def attempt() -> Attempt:
        invoice = ledger.get_invoice(invoice_id)
        team = ledger.get_team(invoice.team_id)
        ledger.authorize(team, actor, Action.MANAGE_INVOICES)
        result = apply(invoice) if team_too is None else team_too(invoice, team)
        return Attempt([a for a in (invoice, team) if a.pending_events], result)

    scope = STRIPE_EVENT_SCOPE if event_id is not None else \
        team_scope(ledger.get_invoice(invoice_id).team_id)
    return ledger.commands.run(Command(name, scope, {"invoice_id": str(invoice_id), **arguments},
                                       actor.user_id, event_id), attempt)


def link_stripe_invoice(ledger: Ledger, invoice_id: UUID, stripe_invoice_id: str,
                        actor: Actor) -> str:
    return run_on_invoice(
        ledger, invoice_id, actor, "link_stripe_invoice",
        {"stripe_invoice_id": stripe_invoice_id},
        lambda i: "linked" if i.link_stripe_invoice(stripe_invoice_id, actor.user_id)
        else "unchanged")


def request_credit_note(ledger: Ledger, invoice_id: UUID, request_key: str, amount_nanos: int,
                        reason: str, actor: Actor) -> str:
    return run_on_invoice(
        ledger, invoice_id, actor, "request_credit_note",
        {"request_key": request_key, "amount_nanos": amount_nanos, "reason": reason},
        lambda i: "requested" if i.request_credit_note(request_key, amount_nanos, reason,
                                                       actor.user_id) else "unchanged")


def issue_requested_credit_note(ledger: Ledger, invoice_id: UUID, request_key: str,
                                credit_note_id: str, actor: Actor) -> str:
    def apply(invoice: Invoice) -> str:
        request = invoice.credit_note_requests[request_key]
        if request["credit_note_id"] is not None:
            return "unchanged"
        invoice.issue_credit_note(credit_note_id, int(request["amount_nanos"]),
                                  str(request["reason"]), actor.user_id, request_key)
        return "issued"

    return run_on_invoice(ledger, invoice_id, actor, "issue_credit_note",
                          {"request_key": request_key, "credit_note_id": credit_note_id}, apply)


def ledger_invoice_of(ledger: Ledger, info: StripeInvoiceInfo) -> Invoice | None:
    """The ledger invoice a Stripe invoice's metadata names (and whose team it names), or None
    if it is not one of ours."""
    try:
        invoice_id = UUID(str(info.ledger_invoice_id))
    except ValueError:
        return None
    if not ledger.exists(invoice_id):
        return None
    invoice = ledger.get_invoice(invoice_id)
    return invoice if str(invoice.team_id) == info.metadata.get("ledger_team_id") else None


def apply_stripe_invoice(ledger: Ledger, event_type: str, info: StripeInvoiceInfo,
                         actor: Actor, event_id: str | None = None) -> str:
    """Record what a Stripe invoice event says: the Stripe id (whatever the order of events: an
    `invoice.paid` before `invoice.created`, or before the ledger recorded the id, links it
    too), paid, or voided in Stripe."""
    found = ledger_invoice_of(ledger, info)
    if found is None or not info.invoice_id.startswith("in_"):
        return "ignored: not a ledger invoice"

    def apply(invoice: Invoice, team: Team) -> str:
        if invoice.stripe_invoice_id not in (None, info.invoice_id):
            return f"ignored: invoice is collected by {invoice.stripe_invoice_id}"
        done = ["linked"] if invoice.status != InvoiceStatus.DRAFT and \
            invoice.link_stripe_invoice(info.invoice_id, actor.user_id) else []
        if event_type == "invoice.paid" or info.status == "paid":
            if invoice.status == InvoiceStatus.FINALIZED:
                invoice.mark_paid(info.invoice_id, actor.user_id)
                credit_invoice_payment(ledger, team, invoice, actor)
                done.append("paid")
            elif invoice.status != InvoiceStatus.PAID:
                done.append(f"not paid: the ledger invoice is {invoice.status}")
        elif event_type == "invoice.voided" and invoice.status == InvoiceStatus.FINALIZED:
            invoice.void(STRIPE_VOID_REASON, actor.user_id)
            done.append("voided")
        return ", ".join(done) or "unchanged"

    return run_on_invoice(ledger, found.id, actor, "apply_stripe_invoice",
                          {"event_type": event_type, "stripe_invoice_id": info.invoice_id},
                          lambda _invoice: "", event_id, team_too=apply)


def credit_invoice_payment(ledger: Ledger, team: Team, invoice: Invoice, actor: Actor) -> None:
    """A paid invoice restores the team's balance by the invoice's total (what its usage beyond
    the prepaid credit came to; a credit note before payment forgives part of it, so the total,
    not the amount Stripe collected, is what settles the usage). Keyed by the Stripe invoice id
    (`in_...`): reconcile compares it with Stripe's invoice, not with the top-up charges, and the
    next invoice does not count it as prepaid credit."""
    assert invoice.stripe_invoice_id is not None and invoice.total_minor is not None
    ledger.authorize(team, actor, Action.CREDIT_TOP_UP)
    if invoice.total_nanos > 0 and not team.has_top_up(invoice.stripe_invoice_id):
        team.credit_top_up(invoice.stripe_invoice_id, invoice.total_nanos, invoice.total_minor,
                           invoice.currency, actor.user_id)
