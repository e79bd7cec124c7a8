"""Readable summaries of events, the `summary` column of the audit trail.

One function per event class that deserves its own sentence; every other event gets its name and
plain fields (`generic_summary`). A summary is made after the event is folded, from the event and
the rows it concerns (the team for its currency, the account or invoice for its name or number).
Summaries are hashed into the audit chain: changing one changes the rows of new events only, and
`ledger replay` then reports the difference for old ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from domain.money import format_nanos
from projections.event_classes import Account, Invoice, Team
from projections.views import AccountView, InvoiceView, TeamView


class Subject:
    """The rows an event concerns, as they are after it was folded (any may be absent)."""

    __slots__ = ("account", "invoice", "team")

    def __init__(self, team: TeamView | None, account: AccountView | None,
                 invoice: InvoiceView | None) -> None:
        self.team = team
        self.account = account
        self.invoice = invoice

    @property
    def currency(self) -> str:
        if self.team is not None:
            return self.team.currency
        if self.invoice is not None:
            return self.invoice.currency
        raise AssertionError("a money event concerns a team or an invoice")


def usage_summary(usage_id: str, model: str, success: bool, occurred_at: str,
                  input_tokens: int, cached_input_tokens: int, output_tokens: int, cost: int,
                  currency: str) -> str:
    return (f"usage {usage_id} on {model} ({'success' if success else 'failure'}) at "
            f"{occurred_at}: {input_tokens} input, {cached_input_tokens} cached, "
            f"{output_tokens} output tokens, cost {format_nanos(cost, currency)}")


def _team_registered(e: Any, s: Subject) -> str:
    return f"team {e.name!r} registered ({e.currency}, {e.timezone}), owner {e.owner_user_id}"


def _credit_limit_set(e: Any, s: Subject) -> str:
    return (f"credit limit set to {format_nanos(e.credit_limit_nanos, s.currency)} "
            f"(was {format_nanos(e.previous_nanos, s.currency)})")


def _threshold_set(e: Any, s: Subject) -> str:
    return (f"low-balance threshold set to {format_nanos(e.threshold_nanos, s.currency)} "
            f"(was {format_nanos(e.previous_nanos, s.currency)})")


def _top_up_credited(e: Any, s: Subject) -> str:
    return f"top-up {e.top_up_id} credited {format_nanos(e.amount_nanos, s.currency)}"


def _top_up_refunded(e: Any, s: Subject) -> str:
    return (f"refund {e.refund_id} of top-up {e.top_up_id}: "
            f"{format_nanos(e.amount_nanos, s.currency)}")


def _adjustment_recorded(e: Any, s: Subject) -> str:
    return (f"adjustment {e.adjustment_id} of {format_nanos(e.amount_nanos, s.currency)}: "
            f"{e.reason}")


def _account_opened(e: Any, s: Subject) -> str:
    return f"account {e.name!r} ({e.account_key}, {e.kind}) opened"


def _account_status(e: Any, s: Subject) -> str:
    assert s.account is not None, "a status event concerns an account"
    reason = getattr(e, "reason", None)
    return f"account {s.account.name!r} {s.account.status}" + (f": {reason}" if reason else "")


def _invoice_drafted(e: Any, s: Subject) -> str:
    return (f"invoice for {e.period_start}..{e.period_end} drafted: {len(e.lines)} lines, "
            f"{format_nanos(e.subtotal_nanos, e.currency)}")


def _invoice_finalized(e: Any, s: Subject) -> str:
    assert s.invoice is not None
    currency = s.invoice.currency
    return (f"invoice {e.number} finalized: total {format_nanos(e.total_nanos, currency)} "
            f"(rounding {format_nanos(e.rounding_difference_nanos, currency)})")


def _invoice_paid(e: Any, s: Subject) -> str:
    assert s.invoice is not None
    return f"invoice {s.invoice.number} paid ({e.payment_reference})"


def _invoice_voided(e: Any, s: Subject) -> str:
    assert s.invoice is not None
    return f"invoice {s.invoice.number or s.invoice.invoice_id} voided: {e.reason}"


def _credit_note_issued(e: Any, s: Subject) -> str:
    assert s.invoice is not None
    return (f"credit note {e.credit_note_id} on invoice {s.invoice.number}: "
            f"{format_nanos(e.amount_nanos, s.invoice.currency)}, {e.reason}")


SUMMARIES: dict[type, Callable[[Any, Subject], str]] = {
    Team.Registered: _team_registered,
    Team.CreditLimitSet: _credit_limit_set,
    Team.LowBalanceThresholdSet: _threshold_set,
    Team.TopUpCredited: _top_up_credited,
    Team.TopUpRefunded: _top_up_refunded,
    Team.AdjustmentRecorded: _adjustment_recorded,
    Team.Suspended: lambda e, s: f"team suspended: {e.reason}",
    Team.Reactivated: lambda e, s: "team reactivated",
    Account.Opened: _account_opened,
    Account.Suspended: _account_status,
    Account.Reactivated: _account_status,
    Account.Closed: _account_status,
    Invoice.Drafted: _invoice_drafted,
    Invoice.Finalized: _invoice_finalized,
    Invoice.Paid: _invoice_paid,
    Invoice.Voided: _invoice_voided,
    Invoice.CreditNoteIssued: _credit_note_issued,
}

_SKIPPED_FIELDS = frozenset({"timestamp", "originator_id", "originator_version",
                             "originator_topic", "actor"})


def generic_summary(event_type: str, event: Any) -> str:
    """A readable line for events without a dedicated summary: the name and its fields."""
    fields = ", ".join(f"{k}={v}" for k, v in sorted(vars(event).items())
                       if k not in _SKIPPED_FIELDS and not isinstance(v, (dict, list)))
    return f"{event_type}: {fields}" if fields else event_type


def summarize(event_type: str, event: Any, subject: Subject) -> str:
    summary = SUMMARIES.get(type(event))
    return summary(event, subject) if summary is not None else generic_summary(event_type, event)
