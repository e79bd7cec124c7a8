"""Drafting a team's invoice for a calendar month from its priced usage (see `monthly`).

One command (scope: the team, so an idempotency key works as for every team command) that loads
the team, finds the invoice before it, reads the accounts' usage from the event log and saves the
`Drafted` and `UsageBasisRecorded` events of the new invoice together. Months are invoiced in
order: a month whose previous month has no invoice, while an earlier month has one, is refused
(the previous month would fall through the gap). A month is drafted only after it has ended in
the team's timezone.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, time
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from domain.errors import InvalidInputError, InvalidStateError
from domain.invoice import Invoice, InvoiceStatus
from domain.roles import Action
from services.actor import Actor
from services.command_runs import Attempt, Command, team_scope
from services.invoicing.monthly import (
    EARLIER_MONTHS_CHECKED,
    EVENTS_PAGE_SIZE,
    PreviousInvoice,
    draft_month,
    month_period,
    previous_month,
)
from services.ledger import Ledger


def monthly_invoice_id(team_id: UUID, month: str) -> UUID:
    return Invoice.create_id(team_id, *month_period(month))


def account_events(ledger: Ledger, account_id: UUID, after: int) -> Iterator[Any]:
    """The account's events with versions above `after`, read page by page from the store."""
    while True:
        page = list(ledger.events.get(account_id, gt=after, limit=EVENTS_PAGE_SIZE))
        yield from page
        if len(page) < EVENTS_PAGE_SIZE:
            return
        after = page[-1].originator_version


def previous_invoice(ledger: Ledger, team_id: UUID, month: str) -> PreviousInvoice | None:
    """The invoice this month's draft follows (None: the team's first), after checking that
    months are drafted in order (no later month has an invoice, no gap before this one)."""
    for ahead in range(1, EARLIER_MONTHS_CHECKED + 1):
        later = previous_month(month, -ahead)
        if ledger.exists(monthly_invoice_id(team_id, later)):
            raise InvalidStateError(
                f"the team already has an invoice for {later}; months are drafted in order, "
                f"so usage of {month} is billed as a correction on the next invoice instead")
    before = previous_month(month)
    invoice_id = monthly_invoice_id(team_id, before)
    if not ledger.exists(invoice_id):
        for back in range(2, EARLIER_MONTHS_CHECKED + 1):
            if ledger.exists(monthly_invoice_id(team_id, previous_month(month, back))):
                raise InvalidStateError(
                    f"the team has an invoice for {previous_month(month, back)} but none for "
                    f"{before}; draft {before} first so that no usage falls through the gap")
        return None
    invoice = ledger.get_invoice(invoice_id)
    if invoice.usage_basis is None:
        raise InvalidStateError(
            f"the invoice for {before} was drafted with lines given by hand, so it does not say "
            "which usage it covered; draft months from usage only after it")
    label = invoice.number or f"for {before}"
    if invoice.status == InvoiceStatus.VOID:
        return PreviousInvoice(f"{label} (voided)", invoice.usage_basis["started_from"])
    return PreviousInvoice(label, invoice.usage_basis)


def check_month_ended(ledger: Ledger, timezone: str, month: str) -> None:
    end = datetime.combine(datetime.fromisoformat(month_period(month)[1]).date(), time(),
                           ZoneInfo(timezone))
    if ledger.clock() < end:
        raise InvalidInputError(
            f"{month} has not ended yet in the team's timezone ({timezone}); draft it from "
            f"{end.isoformat()} on")


def draft_monthly_invoice(ledger: Ledger, team_id: UUID, month: str, actor: Actor,
                          idempotency_key: str | None = None) -> UUID:
    period_start, period_end = month_period(month)
    invoice_id = Invoice.create_id(team_id, period_start, period_end)

    def attempt() -> Attempt:
        team = ledger.get_team(team_id)
        ledger.authorize(team, actor, Action.MANAGE_INVOICES)
        if ledger.exists(invoice_id):
            raise InvalidStateError(
                f"the invoice for {month} already exists ({invoice_id}); a finalized invoice is "
                "corrected by a credit note, a draft is voided")
        check_month_ended(ledger, team.timezone, month)
        previous = previous_invoice(ledger, team_id, month)
        names = {a: ledger.get_account(a).name for a in team.account_ids}
        draft = draft_month(team, month, previous, names,
                            lambda account_id, after: account_events(ledger, account_id, after))
        invoice = Invoice.draft(team_id=team_id, currency=team.currency,
                                period_start=period_start, period_end=period_end,
                                lines=draft.lines, actor=actor.user_id)
        invoice.record_usage_basis(draft.basis, actor.user_id)
        return Attempt([invoice], str(invoice.id))

    ledger.commands.run(Command("draft_monthly_invoice", team_scope(team_id),
                                {"team_id": str(team_id), "month": month}, actor.user_id,
                                idempotency_key), attempt)
    return invoice_id
