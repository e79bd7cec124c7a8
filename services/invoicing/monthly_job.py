"""One team's share of the periodic invoicing job (`adapters/runtime/invoicing_runner.py`).

1. **Draft** every calendar month (in the team's timezone) that has ended and has no invoice
   yet, oldest first: from the month the team was registered in, or the month after its latest
   invoice, up to the last ended month. Never a month before the team existed, and never a month
   before an invoice that exists (the drafting refuses gaps and order violations; a month left
   out by hand stays left out, its usage comes back as a correction on the next invoice).
2. **Finalize and collect** each draft whose month has been over for the grace period (late usage
   lands on the draft before it is final; later usage becomes a correction on the next invoice).
   A zero total is marked paid by the prepaid credit; a total above zero is collected through
   Stripe, or, without Stripe, left finalized and uncollected, and collected by a later pass.

Safe with two processes: the drafting and finalizing commands carry idempotency keys derived
from the team and month (the invoice ids are derived the same way), so a second process gets
the first one's result; a collection that lost a race to another process is recognised by the
invoice's state afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

from domain.errors import InvalidStateError
from domain.invoice import Invoice, InvoiceStatus
from services.actor import Actor
from services.invoicing.collection import (
    PREPAID_REFERENCE,
    InvoiceCollection,
    StripeNotConfiguredError,
)
from services.invoicing.drafting import draft_monthly_invoice, monthly_invoice_id
from services.invoicing.monthly import month_period
from services.invoicing.reconcile_invoices import monthly_invoices
from services.ledger import Ledger

INVOICING_ACTOR = Actor.system("invoicing")
# Months after the registration month a pass looks at (older ones are left to a person).
MONTHS_SCANNED_MAX = 240


@dataclass
class TeamOutcome:
    team_id: str
    drafted: list[str] = field(default_factory=list)  # months
    finalized: list[str] = field(default_factory=list)  # invoice numbers
    paid_by_prepaid_credit: list[str] = field(default_factory=list)
    sent_to_stripe: list[str] = field(default_factory=list)
    uncollected: list[str] = field(default_factory=list)  # due > 0, Stripe not configured


def month_label(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def month_end(month: str, timezone: str) -> datetime:
    """The instant `month` ends in `timezone` (its next month's first midnight)."""
    end = datetime.fromisoformat(month_period(month)[1]).date()
    return datetime.combine(end, time(), ZoneInfo(timezone))


def ended_months(registered: datetime, now: datetime, timezone: str) -> list[str]:
    """The months from the one `registered` falls in up to the last that ended before `now`,
    both in `timezone`, oldest first (at most MONTHS_SCANNED_MAX, the latest ones)."""
    zone = ZoneInfo(timezone)
    first, current = registered.astimezone(zone), now.astimezone(zone)
    start = first.year * 12 + first.month - 1
    stop = current.year * 12 + current.month - 1  # the current month has not ended
    start = max(start, stop - MONTHS_SCANNED_MAX)
    return [month_label(index) for index in range(start, stop)]


def months_to_draft(ledger: Ledger, team_id: UUID, months: list[str]) -> list[str]:
    """The ended months after the latest one that has an invoice (all of them if none has)."""
    for position in range(len(months) - 1, -1, -1):
        if ledger.exists(monthly_invoice_id(team_id, months[position])):
            return months[position + 1:]
    return months


def invoice_team(ledger: Ledger, collection: InvoiceCollection, team_id: UUID,
                 finalize_after: timedelta, actor: Actor = INVOICING_ACTOR) -> TeamOutcome:
    """Draft, finalize and collect what is due for one team (see the module docstring)."""
    outcome = TeamOutcome(str(team_id))
    team = ledger.get_team(team_id)
    now = ledger.clock()
    for month in months_to_draft(ledger, team_id,
                                 ended_months(team.created_on, now, team.timezone)):
        draft_monthly_invoice(ledger, team_id, month, actor,
                              idempotency_key=f"invoicing-draft-{month}")
        outcome.drafted.append(month)
    for invoice in monthly_invoices(ledger, team):
        month = invoice.period_start[:7]
        if invoice.status == InvoiceStatus.DRAFT and \
                now >= month_end(month, team.timezone) + finalize_after:
            _collect(ledger, collection, invoice, actor, outcome, finalize=True)
        elif invoice.status == InvoiceStatus.FINALIZED and invoice.stripe_invoice_id is None:
            _collect(ledger, collection, invoice, actor, outcome, finalize=False)
    return outcome


def _collect(ledger: Ledger, collection: InvoiceCollection, invoice: Invoice, actor: Actor,
             outcome: TeamOutcome, finalize: bool) -> None:
    try:
        done = collection.finalize_and_collect(
            invoice.id, actor, idempotency_key=f"invoicing-finalize-{invoice.id}")
    except StripeNotConfiguredError:
        done = ledger.get_invoice(invoice.id)
        outcome.uncollected.append(str(done.number))
    except InvalidStateError:
        # Another process finalized or settled it first: fine if it moved on, else an error.
        done = ledger.get_invoice(invoice.id)
        if done.status not in (InvoiceStatus.PAID, InvoiceStatus.VOID) and \
                done.stripe_invoice_id is None:
            raise
    if finalize:
        outcome.finalized.append(str(done.number))
    if done.status == InvoiceStatus.PAID and done.payment_reference == PREPAID_REFERENCE:
        outcome.paid_by_prepaid_credit.append(str(done.number))
    elif done.stripe_invoice_id is not None:
        outcome.sent_to_stripe.append(str(done.number))
