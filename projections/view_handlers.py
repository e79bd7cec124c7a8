"""What each event does to the read models: one handler per event class.

Handlers are keyed by the event class itself, so renaming or removing an event fails when this
table is built, at import. Events that change no read model (members, roles, package prices,
Stripe links...) are listed in `EVENTS_WITHOUT_VIEW_CHANGES`; a test checks that every event class
of every domain aggregate is in exactly one of the two, so a new event cannot
silently fail to move a balance. Every event, handled or not, gets an audit row (`fold.py`).
`Account.UsageRecorded` is folded on its own hot path in `fold.py` and is listed here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from projections.decoding import LogEntry
from projections.event_classes import (
    Account,
    AutoRechargePolicy,
    Invoice,
    Package,
    Payment,
    PaymentBook,
    Team,
)
from projections.payment_views import PAYMENT_HANDLERS
from projections.views import (
    AccountView,
    InvoiceView,
    PackageAssignmentView,
    TeamView,
    TopUpView,
)

if TYPE_CHECKING:
    from projections.fold import ViewFolder

Handler = Callable[["ViewFolder", LogEntry, Any], None]


def _team_registered(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
    team = TeamView(team_id=entry.originator_id, name=event.name, currency=event.currency,
                    timezone=event.timezone)
    folder.teams[team.team_id] = team
    folder.touch_team(team)


def _credit_limit_set(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
    team = folder.require_team(entry.originator_id, entry)
    team.credit_limit_nanos = event.credit_limit_nanos
    folder.touch_team(team)


def _threshold_set(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
    team = folder.require_team(entry.originator_id, entry)
    team.low_balance_threshold_nanos = event.threshold_nanos
    folder.touch_team(team)


def _top_up_credited(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
    team = folder.require_team(entry.originator_id, entry)
    team.credited_nanos += event.amount_nanos
    folder.touch_team(team)
    top_up = TopUpView(team_id=team.team_id, top_up_id=event.top_up_id,
                       amount_nanos=event.amount_nanos, amount_minor=event.amount_minor,
                       currency=event.currency, credited_at=event.timestamp)
    folder.top_ups[(team.team_id, event.top_up_id)] = top_up
    folder.touch_top_up(top_up)


def _top_up_refunded(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
    team = folder.require_team(entry.originator_id, entry)
    team.refunded_nanos += event.amount_nanos
    folder.touch_team(team)
    top_up = folder.top_ups.get((team.team_id, event.top_up_id))
    if top_up is not None:
        top_up.refunded_nanos += event.amount_nanos
        folder.touch_top_up(top_up)


def _adjustment_recorded(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
    team = folder.require_team(entry.originator_id, entry)
    team.adjusted_nanos += event.amount_nanos
    folder.touch_team(team)


def _team_suspension(suspended: bool) -> Handler:
    def apply(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
        team = folder.require_team(entry.originator_id, entry)
        team.suspended = suspended
        folder.touch_team(team)
    return apply


def _account_opened(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
    account = AccountView(account_id=entry.originator_id, team_id=event.team_id,
                          account_key=event.account_key, name=event.name,
                          holder_user_id=event.holder_user_id,
                          kind=str(getattr(event.kind, "value", event.kind)))
    folder.accounts[account.account_id] = account
    folder.touch_account(account)


def _holder_assigned(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
    account = folder.require_account(entry)
    account.holder_user_id = event.user_id
    folder.touch_account(account)


def _package_assigned(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
    account = folder.require_account(entry)
    folder.touch_assignment(PackageAssignmentView(
        account_id=account.account_id, effective_from=event.effective_from,
        team_id=account.team_id, package_id=event.package_id,
        package_version=event.package_version, package_name=event.package_name))


def _account_status(status: str) -> Handler:
    def apply(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
        account = folder.require_account(entry)
        account.status = status
        folder.touch_account(account)
    return apply


def _invoice_drafted(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
    invoice = InvoiceView(invoice_id=entry.originator_id, team_id=event.team_id,
                          currency=event.currency, period_start=event.period_start,
                          period_end=event.period_end, status="draft",
                          subtotal_nanos=event.subtotal_nanos)
    folder.invoices[invoice.invoice_id] = invoice
    folder.touch_invoice(invoice)


def _invoice_finalized(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
    invoice = folder.require_invoice(entry)
    invoice.status, invoice.number = "finalized", event.number
    invoice.total_minor = event.total_minor
    folder.touch_invoice(invoice)


def _invoice_paid(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
    invoice = folder.require_invoice(entry)
    invoice.status, invoice.payment_reference = "paid", event.payment_reference
    folder.touch_invoice(invoice)


def _invoice_voided(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
    invoice = folder.require_invoice(entry)
    invoice.status = "void"
    folder.touch_invoice(invoice)


def _credit_note_issued(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
    invoice = folder.require_invoice(entry)
    invoice.credited_nanos += event.amount_nanos
    folder.touch_invoice(invoice)


def _usage_recorded(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
    raise AssertionError("usage is folded on its own path (ViewFolder.apply_usage_event)")


HANDLERS: dict[type, Handler] = {
    Team.Registered: _team_registered,
    Team.CreditLimitSet: _credit_limit_set,
    Team.LowBalanceThresholdSet: _threshold_set,
    Team.TopUpCredited: _top_up_credited,
    Team.TopUpRefunded: _top_up_refunded,
    Team.AdjustmentRecorded: _adjustment_recorded,
    Team.Suspended: _team_suspension(True),
    Team.Reactivated: _team_suspension(False),
    Account.Opened: _account_opened,
    Account.UsageRecorded: _usage_recorded,
    Account.HolderAssigned: _holder_assigned,
    Account.PackageAssigned: _package_assigned,
    Account.Suspended: _account_status("suspended"),
    Account.Reactivated: _account_status("active"),
    Account.Closed: _account_status("closed"),
    Invoice.Drafted: _invoice_drafted,
    Invoice.Finalized: _invoice_finalized,
    Invoice.Paid: _invoice_paid,
    Invoice.Voided: _invoice_voided,
    Invoice.CreditNoteIssued: _credit_note_issued,
    **PAYMENT_HANDLERS,
}

# Events that change no read model: they still get an audit row (with a generic summary).
EVENTS_WITHOUT_VIEW_CHANGES: frozenset[type] = frozenset({
    Team.MemberAdded, Team.MemberRoleChanged, Team.MemberRemoved,  # roles: services read them
    Team.AccountPooled,  # the pool is the accounts' team_id, known from Account.Opened
    Team.StripeCustomerLinked, Team.InvoiceNumberIssued,  # Stripe and numbering bookkeeping
    Package.Created, Package.VersionPublished,  # prices: used when usage is recorded
    PaymentBook.Opened, PaymentBook.PaymentListed,  # the index the payments API pages through
    # The Checkout page's id and a receipt link: the payments API reads them from the payment.
    Payment.CheckoutSessionOpened, Payment.ReceiptRecorded,
    # Auto-recharge: the API and the dashboard read the policy itself; its charges are payments
    # (handled above) and its credits the team's TopUpCredited. Audit rows show every step.
    AutoRechargePolicy.Created, AutoRechargePolicy.Enabled, AutoRechargePolicy.Changed,
    AutoRechargePolicy.Disabled, AutoRechargePolicy.Resumed, AutoRechargePolicy.CrossingOpened,
    AutoRechargePolicy.CrossingClosed, AutoRechargePolicy.DailyCapReached,
    AutoRechargePolicy.Stopped, AutoRechargePolicy.Rearmed,
    # Invoice bookkeeping: what a draft read, its Stripe invoice, a credit note asked for.
    Invoice.UsageBasisRecorded, Invoice.StripeInvoiceLinked, Invoice.CreditNoteRequested,
})

# Events whose audit rows show the team balance before and after (usage takes its own path
# and always shows them).
MONEY_EVENTS: frozenset[type] = frozenset({
    Team.TopUpCredited, Team.TopUpRefunded, Team.AdjustmentRecorded})
