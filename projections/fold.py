"""The fold engine: a batch of events in, the read-model changes it makes out. Pure, no I/O.

`ViewFolder` holds the small, slowly changing part of the read models in memory (teams, accounts,
invoices, top-ups, the audit chain's head) and turns each batch of events into a `BatchChanges`:
the rows to upsert, the usage sums to add to daily buckets, and the audit rows to append. A store
writes a batch and its tracking position in one transaction. If that transaction fails, the
folder's memory is ahead of the store: the runner throws the folder away and loads a new one from
the store, so nothing is ever counted from a state that was not committed.

What each event does is in `view_handlers` (keyed by event class), its audit summary in
`summaries`, the rows and the balance formula in `views`, the hash chain in `audit_chain`. The
hot event, `Account.UsageRecorded`, is folded here on its own path from its plain fields.
"""

from __future__ import annotations

from copy import copy
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from domain.auto_recharge import auto_recharge_id_for
from domain.payment import payment_book_id_for
from projections.audit_chain import GENESIS_HASH, audit_row, event_digest, event_type_of
from projections.decoding import USAGE_RECORDED_TOPIC, EventDecoder, LogEntry
from projections.summaries import Subject, summarize, usage_summary
from projections.view_handlers import HANDLERS, MONEY_EVENTS
from projections.views import (
    AccountView,
    BatchChanges,
    InvoiceView,
    PackageAssignmentView,
    PaymentView,
    TeamView,
    TopUpView,
)
from projections.windows import LocalDays

_Row = TypeVar("_Row")


class ViewFolder:
    """In-memory state of the small read models, and the fold of events into batch changes."""

    def __init__(self, *, position: int = 0, audit_head: bytes = GENESIS_HASH,
                 teams: dict[UUID, TeamView] | None = None,
                 accounts: dict[UUID, AccountView] | None = None,
                 invoices: dict[UUID, InvoiceView] | None = None,
                 top_ups: dict[tuple[UUID, str], TopUpView] | None = None,
                 payments: dict[UUID, PaymentView] | None = None) -> None:
        self.position = position
        self.audit_head = audit_head
        self.teams = teams or {}
        self.accounts = accounts or {}
        self.invoices = invoices or {}
        self.top_ups = top_ups or {}
        self.payments = payments or {}
        # A team's payment book, by the book's id (derived from the team's: domain.payment).
        self._book_teams: dict[UUID, UUID] = {}
        self._changes = BatchChanges(first_position=position)
        # Usage events name their team by its stored hex id: the same TeamView, found faster.
        self._teams_by_hex: dict[str, TeamView] = {}
        self._local_days = LocalDays()

    # Batches -------------------------------------------------------------------------------

    def fold(self, entries: list[tuple[LogEntry, Any]]) -> BatchChanges:
        """Fold decoded events (in log order) into one batch of changes."""
        changes = self._changes = BatchChanges(first_position=self.position)
        for entry, event in entries:
            if entry.topic == USAGE_RECORDED_TOPIC:
                self.apply_usage_event(entry, event)
            else:
                self.apply(entry, event)
        return self._finish(changes, len(entries))

    def fold_log(self, entries: list[LogEntry], decoder: EventDecoder) -> BatchChanges:
        """Fold log entries (in log order), decoding each: the same result as decoding them all
        and calling `fold`, but usage records are folded from their stored JSON fields without
        an event object (`EventDecoder.usage_fields`), which halves the cost of the hot event."""
        changes = self._changes = BatchChanges(first_position=self.position)
        usage_fields, decode = decoder.usage_fields, decoder.decode
        apply, apply_usage = self.apply, self._apply_usage
        for entry in entries:
            if entry.topic != USAGE_RECORDED_TOPIC:
                apply(entry, decode(entry))
                continue
            f = usage_fields(entry)
            if f is None:
                self.apply_usage_event(entry, decode(entry))
                continue
            apply_usage(entry, f["team_id"], f["timestamp"], f["occurred_at"], f["usage_id"],
                        f["model"], f["success"], f["input_tokens"], f["cached_input_tokens"],
                        f["output_tokens"], f["cost_nanos"])
        return self._finish(changes, len(entries))

    def _finish(self, changes: BatchChanges, events: int) -> BatchChanges:
        changes.last_position = self.position
        changes.events = events
        self._close_batch(changes)
        return changes

    def _close_batch(self, changes: BatchChanges) -> None:
        """Move per-account usage sums into the batch and clear the batch flags."""
        for account in changes.accounts.values():
            account.dirty = False
            pending = account.pending_usage
            if pending:
                team_id, account_id = account.team_id, account.account_id
                for (model, day), sums in pending.items():
                    changes.usage[(team_id, account_id, model, day)] = sums
                account.pending_usage = None
        for team in changes.teams.values():
            team.dirty = False
        for team_id in changes.audit_teams:
            self.teams[team_id].audit_dirty = False
        # The store may write this batch while the next one is folded: hand it copies.
        changes.teams = {k: copy(v) for k, v in changes.teams.items()}
        changes.accounts = {k: copy(v) for k, v in changes.accounts.items()}
        changes.invoices = {k: copy(v) for k, v in changes.invoices.items()}
        changes.top_ups = {k: copy(v) for k, v in changes.top_ups.items()}

    def _advance(self, entry: LogEntry) -> None:
        if entry.position <= self.position:
            raise AssertionError(
                f"log position {entry.position} is not after {self.position}: events out of order"
            )
        self.position = entry.position

    # Usage: the hot path -------------------------------------------------------------------

    def apply_usage_event(self, entry: LogEntry, event: Any) -> None:
        self._apply_usage(entry, event.team_id.hex, event.timestamp.isoformat(),
                          event.occurred_at.isoformat(), event.usage_id, event.model,
                          event.success, event.input_tokens, event.cached_input_tokens,
                          event.output_tokens, event.cost_nanos)

    def _apply_usage(self, entry: LogEntry, team_hex: str, timestamp: str, occurred_at: str,
                     usage_id: str, model: str, success: bool, input_tokens: int,
                     cached_input_tokens: int, output_tokens: int, cost: int) -> None:
        """The hot path: one usage record, from its plain fields (times as stored, ISO 8601).
        Same rules as the generic path, fewer lookups and calls."""
        position = entry.position
        if position <= self.position:
            self._advance(entry)  # raises
        self.position = position
        team = self._teams_by_hex.get(team_hex)
        if team is None:
            team = self._teams_by_hex[team_hex] = self.require_team(UUID(hex=team_hex), entry)
        account = self.accounts.get(entry.originator_id) or self.require_account(entry)
        changes = self._changes
        before = (team.credited_nanos - team.refunded_nanos + team.adjusted_nanos
                  - team.spent_nanos)  # team.balance_nanos, without the property call
        team.spent_nanos += cost
        team.position = account.position = position
        if not team.dirty:
            team.dirty = True
            changes.teams[team.team_id] = team
        if not team.audit_dirty:
            team.audit_dirty = True
            changes.audit_teams.add(team.team_id)
        account.usage_count += 1
        account.spent_nanos += cost
        pending = account.pending_usage
        if pending is None:
            pending = account.pending_usage = {}
        if not account.dirty:
            account.dirty = True
            changes.accounts[account.account_id] = account
        day = self._local_days.of(occurred_at, team.timezone)
        sums = pending.get((model, day))
        if sums is None:
            sums = pending[(model, day)] = [0, 0, 0, 0, 0, 0]
        sums[0] += 1
        sums[1] += 1 if success else 0
        sums[2] += input_tokens
        sums[3] += cached_input_tokens
        sums[4] += output_tokens
        sums[5] += cost
        summary = usage_summary(usage_id, model, success, occurred_at, input_tokens,
                                cached_input_tokens, output_tokens, cost, team.currency)
        # The account's id bytes are kept: UUID.bytes is computed anew on every call.
        row = audit_row(self.audit_head, position, datetime.fromisoformat(timestamp),
                        team.team_id, entry.originator_id, account.id_bytes,
                        entry.originator_version, "Account.UsageRecorded", account.actor,
                        summary, before, before - cost, event_digest(entry))
        self.audit_head = row.hash
        changes.audit.append(row)

    # Every other event ---------------------------------------------------------------------

    def apply(self, entry: LogEntry, event: Any) -> None:
        """Fold one event through its handler (if it changes a read model) into an audit row."""
        self._advance(entry)
        changes = self._changes
        event_type = event_type_of(entry.topic)
        event_class = type(event)
        team_id = self._team_of(event_type, entry, event)
        team = self.teams.get(team_id) if team_id is not None else None
        before = team.balance_nanos if team is not None else None
        handler = HANDLERS.get(event_class)
        if handler is not None:
            handler(self, entry, event)
        team = self.teams.get(team_id) if team_id is not None else None
        after = team.balance_nanos if team is not None else None
        summary = summarize(event_type, event, Subject(
            team, self.accounts.get(entry.originator_id), self.invoices.get(entry.originator_id)))
        money_moved = before is not None and after is not None and event_class in MONEY_EVENTS
        row = audit_row(self.audit_head, entry.position, event.timestamp, team_id,
                        entry.originator_id, entry.originator_id.bytes,
                        entry.originator_version, event_type, _actor_of(event), summary,
                        before if money_moved else None, after if money_moved else None,
                        event_digest(entry))
        self.audit_head = row.hash
        changes.audit.append(row)
        if team is not None and not team.audit_dirty:
            team.audit_dirty = True
            changes.audit_teams.add(team.team_id)

    def _team_of(self, event_type: str, entry: LogEntry, event: Any) -> UUID | None:
        kind = event_type.partition(".")[0]
        if kind == "Team":
            return entry.originator_id
        if kind == "Account":
            team_id = getattr(event, "team_id", None)
            if team_id is not None:
                return team_id  # type: ignore[no-any-return]
            account = self.accounts.get(entry.originator_id)
            return account.team_id if account is not None else None
        if kind == "Invoice":
            invoice = self.invoices.get(entry.originator_id)
            if invoice is not None:
                return invoice.team_id
            return getattr(event, "team_id", None)
        if kind == "Payment":
            payment = self.payments.get(entry.originator_id)
            return payment.team_id if payment is not None else getattr(event, "team_id", None)
        if kind in ("PaymentBook", "AutoRechargePolicy"):  # ids derived from the team's
            return self._team_of_book(entry.originator_id)
        return None

    def _team_of_book(self, book_id: UUID) -> UUID | None:
        if book_id not in self._book_teams:
            self._book_teams = {derived: team_id for team_id in self.teams for derived in
                                (payment_book_id_for(team_id), auto_recharge_id_for(team_id))}
        return self._book_teams.get(book_id)

    # For the handlers ----------------------------------------------------------------------

    def touch_team(self, team: TeamView) -> None:
        team.position = self.position
        team.dirty = True
        self._changes.teams[team.team_id] = team

    def touch_account(self, account: AccountView) -> None:
        account.position = self.position
        account.dirty = True
        self._changes.accounts[account.account_id] = account

    def touch_invoice(self, invoice: InvoiceView) -> None:
        invoice.position = self.position
        self._changes.invoices[invoice.invoice_id] = invoice

    def touch_top_up(self, top_up: TopUpView) -> None:
        top_up.position = self.position
        self._changes.top_ups[(top_up.team_id, top_up.top_up_id)] = top_up

    def touch_assignment(self, assignment: PackageAssignmentView) -> None:
        """A new package assignment (rows are never changed after: no state kept here)."""
        self._changes.assignments[(assignment.account_id, assignment.effective_from)] = \
            replace(assignment, position=self.position)

    def touch_payment(self, payment: PaymentView) -> None:
        payment.position = self.position
        self._changes.payments[payment.payment_id] = payment

    def require_payment(self, entry: LogEntry) -> PaymentView:
        return _required(self.payments.get(entry.originator_id), entry,
                         f"is for payment {entry.originator_id}, which the log has not started")

    def require_team(self, team_id: UUID, entry: LogEntry) -> TeamView:
        return _required(self.teams.get(team_id), entry,
                         f"refers to team {team_id}, which the log has not registered")

    def require_account(self, entry: LogEntry) -> AccountView:
        return _required(self.accounts.get(entry.originator_id), entry,
                         f"is for account {entry.originator_id}, which the log has not opened")

    def require_invoice(self, entry: LogEntry) -> InvoiceView:
        return _required(self.invoices.get(entry.originator_id), entry,
                         f"is for invoice {entry.originator_id}, which the log has not drafted")

    def copy(self) -> ViewFolder:
        """A deep enough copy for a store that must not share rows with the runner's folder."""
        return ViewFolder(
            position=self.position, audit_head=self.audit_head,
            teams={k: replace(v) for k, v in self.teams.items()},
            accounts={k: replace(v) for k, v in self.accounts.items()},
            invoices={k: replace(v) for k, v in self.invoices.items()},
            top_ups={k: replace(v) for k, v in self.top_ups.items()},
            payments={k: replace(v) for k, v in self.payments.items()},
        )


def _actor_of(event: Any) -> str | None:
    actor = getattr(event, "actor", None)
    return str(actor) if actor is not None else None


def _required(row: _Row | None, entry: LogEntry, what: str) -> _Row:
    """A row an event needs; its absence means the log is not what the fold assumes (a bug)."""
    if row is None:
        raise AssertionError(f"event at position {entry.position} {what}")
    return row
