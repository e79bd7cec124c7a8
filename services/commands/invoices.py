"""Invoice commands: draft an invoice for a period, finalize (numbered by the team), mark paid,
void, and issue credit notes. Every one needs the MANAGE_INVOICES permission on the team."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.errors import InvalidInputError
from domain.invoice import Invoice, InvoiceStatus
from domain.roles import Action
from domain.team import Team
from services.actor import Actor
from services.command_runs import Attempt, team_scope
from services.commands.ledger_core import LedgerCore


def _invoice_command(ledger: LedgerCore, invoice_id: UUID, actor: Actor,
                     idempotency_key: str | None, name: str, arguments: dict[str, Any],
                     apply: Callable[[Invoice, Team], list[Aggregate]]) -> None:
    """Run `apply` on the freshly loaded invoice and its team; it returns what to save."""
    def attempt() -> Attempt:
        invoice = ledger.get_invoice(invoice_id)
        team = ledger.get_team(invoice.team_id)
        ledger.authorize(team, actor, Action.MANAGE_INVOICES)
        return Attempt(apply(invoice, team), "")

    team_id = ledger.get_invoice(invoice_id).team_id  # an invoice never changes team
    ledger._run(name, team_scope(team_id), actor, idempotency_key,
                {"invoice_id": str(invoice_id), **arguments}, attempt)


class InvoiceCommands:
    def draft_invoice(self: LedgerCore, team_id: UUID, *, period_start: str, period_end: str,
                      lines: list[dict[str, Any]], actor: Actor,
                      idempotency_key: str | None = None) -> UUID:
        def attempt() -> Attempt:
            team = self.get_team(team_id)
            self.authorize(team, actor, Action.MANAGE_INVOICES)
            if self.exists(Invoice.create_id(team_id, period_start, period_end)):
                raise InvalidInputError(
                    f"an invoice for {period_start}..{period_end} already exists for this team")
            invoice = Invoice.draft(team_id=team_id, currency=team.currency,
                                    period_start=period_start, period_end=period_end,
                                    lines=lines, actor=actor.user_id)
            return Attempt([invoice], str(invoice.id))

        arguments = {"team_id": str(team_id), "period_start": period_start,
                     "period_end": period_end, "lines": lines}
        return UUID(self._run("draft_invoice", team_scope(team_id), actor, idempotency_key,
                              arguments, attempt))

    def finalize_invoice(self: LedgerCore, invoice_id: UUID, actor: Actor,
                         idempotency_key: str | None = None) -> None:
        def apply(invoice: Invoice, team: Team) -> list[Aggregate]:
            invoice.check_status(InvoiceStatus.DRAFT)
            number = team.issue_invoice_number(invoice.id, actor.user_id)
            invoice.finalize(number, actor.user_id)
            return [invoice, team]

        _invoice_command(self, invoice_id, actor, idempotency_key, "finalize_invoice", {},
                         apply)

    def mark_invoice_paid(self: LedgerCore, invoice_id: UUID, payment_reference: str,
                          actor: Actor, idempotency_key: str | None = None) -> None:
        def apply(invoice: Invoice, _team: Team) -> list[Aggregate]:
            invoice.mark_paid(payment_reference, actor.user_id)
            return [invoice]

        _invoice_command(self, invoice_id, actor, idempotency_key, "mark_invoice_paid",
                         {"payment_reference": payment_reference}, apply)

    def void_invoice(self: LedgerCore, invoice_id: UUID, reason: str, actor: Actor,
                     idempotency_key: str | None = None) -> None:
        def apply(invoice: Invoice, _team: Team) -> list[Aggregate]:
            invoice.void(reason, actor.user_id)
            return [invoice]

        _invoice_command(self, invoice_id, actor, idempotency_key, "void_invoice",
                         {"reason": reason}, apply)

    def issue_credit_note(self: LedgerCore, invoice_id: UUID, credit_note_id: str,
                          amount_nanos: int, reason: str, actor: Actor,
                          idempotency_key: str | None = None) -> None:
        def apply(invoice: Invoice, _team: Team) -> list[Aggregate]:
            invoice.issue_credit_note(credit_note_id, amount_nanos, reason, actor.user_id)
            return [invoice]

        _invoice_command(self, invoice_id, actor, idempotency_key, "issue_credit_note",
                         {"credit_note_id": credit_note_id, "amount_nanos": amount_nanos,
                          "reason": reason}, apply)
