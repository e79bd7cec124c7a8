"""Folding the event log into read-model changes: pure, no I/O.

`ViewFolder` holds the small, slowly changing part of the read models in memory (teams, accounts,
invoices, top-ups, the audit chain's head) and turns each batch of events into a `BatchChanges`:
the rows to upsert, the usage sums to add to daily buckets, and the audit rows to append. A store
(PostgreSQL in `adapters.postgres.view_store`, or memory for `ledger balance --as-of`) writes a
batch and its tracking position in one transaction. If that transaction fails, the folder's
memory is ahead of the store: the runner throws the folder away and loads a new one from the
store, so nothing is ever counted from a state that was not committed.

Money rules (all int nanos):
    balance   = credited - refunded + adjusted - spent
    available = balance + credit_limit
    low_balance  when balance < low_balance_threshold (strictly below; with a threshold of 0 a
                 team is low as soon as its balance is negative)
`spent` is the sum of `Account.UsageRecorded.cost_nanos` over the team's accounts.
"""

from __future__ import annotations

import hashlib
from copy import copy
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

from domain.money import format_nanos
from projections.decoding import USAGE_RECORDED_TOPIC, EventDecoder, LogEntry
from projections.windows import LocalDays

GENESIS_HASH = bytes(32)


@dataclass
class TeamView:
    team_id: UUID
    name: str
    currency: str
    timezone: str
    credit_limit_nanos: int = 0
    low_balance_threshold_nanos: int = 0
    suspended: bool = False
    credited_nanos: int = 0
    refunded_nanos: int = 0
    adjusted_nanos: int = 0
    spent_nanos: int = 0
    position: int = 0  # log position of the last event that changed this row
    # Batch bookkeeping, not part of the row: set while a batch is folded, cleared after.
    dirty: bool = field(default=False, compare=False, repr=False)
    audit_dirty: bool = field(default=False, compare=False, repr=False)

    @property
    def balance_nanos(self) -> int:
        return self.credited_nanos - self.refunded_nanos + self.adjusted_nanos - self.spent_nanos

    @property
    def available_nanos(self) -> int:
        return self.balance_nanos + self.credit_limit_nanos

    @property
    def low_balance(self) -> bool:
        return self.balance_nanos < self.low_balance_threshold_nanos

    def as_dict(self) -> dict[str, Any]:
        return {
            "team_id": str(self.team_id), "name": self.name, "currency": self.currency,
            "timezone": self.timezone, "balance_nanos": self.balance_nanos,
            "available_nanos": self.available_nanos,
            "credit_limit_nanos": self.credit_limit_nanos,
            "low_balance_threshold_nanos": self.low_balance_threshold_nanos,
            "low_balance": self.low_balance, "suspended": self.suspended,
            "credited_nanos": self.credited_nanos, "refunded_nanos": self.refunded_nanos,
            "adjusted_nanos": self.adjusted_nanos, "spent_nanos": self.spent_nanos,
        }


@dataclass
class AccountView:
    account_id: UUID
    team_id: UUID
    account_key: str
    name: str
    status: str = "active"
    usage_count: int = 0
    spent_nanos: int = 0
    position: int = 0
    dirty: bool = field(default=False, compare=False, repr=False)
    # This batch's usage sums of the account, by (model, local date): six ints in the order of
    # the `windows.UsageTotals` fields. Moved into `BatchChanges.usage` when the batch is folded.
    pending_usage: dict[tuple[str, date], list[int]] | None = field(
        default=None, compare=False, repr=False)

    actor: str = field(default="", compare=False, repr=False)
    id_bytes: bytes = field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        # Usage carries no user: it is attributed to the account that made the request.
        self.actor = f"account:{self.account_id}"
        self.id_bytes = self.account_id.bytes


@dataclass
class InvoiceView:
    invoice_id: UUID
    team_id: UUID
    currency: str
    period_start: str
    period_end: str
    status: str
    subtotal_nanos: int
    number: str | None = None
    total_minor: int | None = None
    credited_nanos: int = 0
    payment_reference: str | None = None
    position: int = 0


@dataclass
class TopUpView:
    team_id: UUID
    top_up_id: str
    amount_nanos: int
    amount_minor: int
    currency: str
    credited_at: datetime
    refunded_nanos: int = 0
    position: int = 0


class AuditRow(NamedTuple):
    """One audit row, fields in the table's column order (written with COPY as is)."""

    position: int
    recorded_at: datetime
    team_id: UUID | None
    aggregate_id: UUID
    aggregate_version: int
    event_type: str
    actor: str | None
    summary: str
    balance_before_nanos: int | None
    balance_after_nanos: int | None
    event_digest: bytes
    hash: bytes


# (team_id, account_id, model, local date)
UsageKey = tuple[UUID, UUID, str, date]


@dataclass
class BatchChanges:
    first_position: int  # the tracking position the batch starts from (exclusive)
    last_position: int = 0
    teams: dict[UUID, TeamView] = field(default_factory=dict)
    accounts: dict[UUID, AccountView] = field(default_factory=dict)
    invoices: dict[UUID, InvoiceView] = field(default_factory=dict)
    top_ups: dict[tuple[UUID, str], TopUpView] = field(default_factory=dict)
    # Sums to add per bucket: six ints in the order of the `windows.UsageTotals` fields.
    usage: dict[UsageKey, list[int]] = field(default_factory=dict)
    audit: list[AuditRow] = field(default_factory=list)
    # Teams with new audit rows in this batch (bookkeeping for the fold's flags).
    audit_teams: set[UUID] = field(default_factory=set)
    events: int = 0


def event_digest(entry: LogEntry) -> bytes:
    """A digest of the stored event's bytes exactly as stored: topic, a zero byte, state."""
    prefix = _digest_prefixes.get(entry.topic)
    if prefix is None:
        prefix = _digest_prefixes[entry.topic] = hashlib.sha256(entry.topic.encode() + b"\x00")
    digest = prefix.copy()
    digest.update(entry.state)
    return digest.digest()


# The digest of each topic's prefix, taken once: topics are few, events many.
_digest_prefixes: dict[str, Any] = {}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_ABSENT = b"\x00"
_PRESENT = b"\x01"


def _text_bytes(value: str | None) -> bytes:
    """A nullable text value, length-prefixed so that no two rows share an encoding."""
    if value is None:
        return _ABSENT
    encoded = value.encode()
    return _PRESENT + len(encoded).to_bytes(4, "big") + encoded


def audit_row_bytes(position: int, recorded_at: datetime, team_id: UUID | None,
                    aggregate_id: bytes, aggregate_version: int, event_type: str,
                    actor: str | None, summary: str, balance_before_nanos: int | None,
                    balance_after_nanos: int | None, digest: bytes) -> bytes:
    """Every column of an audit row but its hash, in one unambiguous encoding.

    Fixed-width fields first (position, aggregate id bytes, version, event digest, the instant
    in microseconds since the epoch, as PostgreSQL keeps it), then the nullable ones, each
    marked present or absent and length-prefixed. Money goes in as decimal text: it may outgrow
    eight bytes. The same row read back from the database encodes to the same bytes.
    """
    micros = (recorded_at - _EPOCH) // _MICROSECOND
    return b"".join((
        position.to_bytes(8, "big"), aggregate_id, aggregate_version.to_bytes(8, "big"), digest,
        micros.to_bytes(8, "big", signed=True),
        _ABSENT if team_id is None else _PRESENT + team_id.bytes,
        _text_bytes(event_type), _text_bytes(actor), _text_bytes(summary),
        _text_bytes(None if balance_before_nanos is None else str(balance_before_nanos)),
        _text_bytes(None if balance_after_nanos is None else str(balance_after_nanos)),
    ))


def link_hash(previous: bytes, row_bytes: bytes) -> bytes:
    """Link one audit row to the one before: H(previous || every column of the row)."""
    return hashlib.sha256(previous + row_bytes).digest()


def audit_row(previous: bytes, position: int, recorded_at: datetime, team_id: UUID | None,
              aggregate_id: UUID, aggregate_id_bytes: bytes, aggregate_version: int,
              event_type: str, actor: str | None, summary: str,
              balance_before_nanos: int | None, balance_after_nanos: int | None,
              digest: bytes) -> AuditRow:
    """The audit row with its chain hash over every column."""
    row_hash = link_hash(previous, audit_row_bytes(
        position, recorded_at, team_id, aggregate_id_bytes, aggregate_version, event_type,
        actor, summary, balance_before_nanos, balance_after_nanos, digest))
    return AuditRow(position, recorded_at, team_id, aggregate_id, aggregate_version, event_type,
                    actor, summary, balance_before_nanos, balance_after_nanos, digest, row_hash)


def event_type_of(topic: str) -> str:
    """`domain.team:Team.TopUpCredited` -> `Team.TopUpCredited`."""
    return topic.rpartition(":")[2]


class ViewFolder:
    """In-memory state of the small read models, and the fold of events into batch changes."""

    def __init__(self, *, position: int = 0, audit_head: bytes = GENESIS_HASH,
                 teams: dict[UUID, TeamView] | None = None,
                 accounts: dict[UUID, AccountView] | None = None,
                 invoices: dict[UUID, InvoiceView] | None = None,
                 top_ups: dict[tuple[UUID, str], TopUpView] | None = None) -> None:
        self.position = position
        self.audit_head = audit_head
        self.teams = teams or {}
        self.accounts = accounts or {}
        self.invoices = invoices or {}
        self.top_ups = top_ups or {}
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
                self._apply_usage_event(entry, event)
            else:
                self._apply(entry, event)
        return self._finish(changes, len(entries))

    def fold_log(self, entries: list[LogEntry], decoder: EventDecoder) -> BatchChanges:
        """Fold log entries (in log order), decoding each: the same result as decoding them all
        and calling `fold`, but usage records are folded from their stored JSON fields without
        an event object (`EventDecoder.usage_fields`), which halves the cost of the hot event."""
        changes = self._changes = BatchChanges(first_position=self.position)
        usage_fields, decode = decoder.usage_fields, decoder.decode
        apply, apply_usage = self._apply, self._apply_usage
        for entry in entries:
            if entry.topic != USAGE_RECORDED_TOPIC:
                apply(entry, decode(entry))
                continue
            f = usage_fields(entry)
            if f is None:
                self._apply_usage_event(entry, decode(entry))
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

    def _apply_usage_event(self, entry: LogEntry, event: Any) -> None:
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
            team = self._teams_by_hex[team_hex] = self._team(UUID(hex=team_hex), entry)
        account = self.accounts.get(entry.originator_id) or self._account(entry)
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
        summary = (f"usage {usage_id} on {model} ({'success' if success else 'failure'}) at "
                   f"{occurred_at}: {input_tokens} input, {cached_input_tokens} cached, "
                   f"{output_tokens} output tokens, cost {format_nanos(cost, team.currency)}")
        # The account's id bytes are kept: UUID.bytes is computed anew on every call.
        row = audit_row(self.audit_head, position, datetime.fromisoformat(timestamp),
                        team.team_id, entry.originator_id, account.id_bytes,
                        entry.originator_version, "Account.UsageRecorded", account.actor,
                        summary, before, before - cost, event_digest(entry))
        self.audit_head = row.hash
        changes.audit.append(row)

    def _apply(self, entry: LogEntry, event: Any) -> None:
        self._advance(entry)
        changes = self._changes
        event_type = event_type_of(entry.topic)
        handler = _HANDLERS.get(event_type)
        team_id = self._team_of(event_type, entry, event)
        team = self.teams.get(team_id) if team_id is not None else None
        before = team.balance_nanos if team is not None else None
        summary = handler(self, entry, event) if handler else _generic_summary(event_type, event)
        team = self.teams.get(team_id) if team_id is not None else None
        after = team.balance_nanos if team is not None else None
        money_moved = before is not None and after is not None and event_type in _MONEY_EVENTS
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
        return None

    def _touch_team(self, team: TeamView) -> None:
        team.position = self.position
        team.dirty = True
        self._changes.teams[team.team_id] = team

    def _touch_account(self, account: AccountView) -> None:
        account.position = self.position
        account.dirty = True
        self._changes.accounts[account.account_id] = account

    def _touch_invoice(self, invoice: InvoiceView) -> None:
        invoice.position = self.position
        self._changes.invoices[invoice.invoice_id] = invoice

    def _touch_top_up(self, top_up: TopUpView) -> None:
        top_up.position = self.position
        self._changes.top_ups[(top_up.team_id, top_up.top_up_id)] = top_up

    def _team(self, team_id: UUID, entry: LogEntry) -> TeamView:
        team = self.teams.get(team_id)
        if team is None:
            raise AssertionError(f"event at position {entry.position} refers to team {team_id}, "
                                 "which the log has not registered")
        return team

    def _account(self, entry: LogEntry) -> AccountView:
        account = self.accounts.get(entry.originator_id)
        if account is None:
            raise AssertionError(f"event at position {entry.position} is for account "
                                 f"{entry.originator_id}, which the log has not opened")
        return account

    def _invoice(self, entry: LogEntry) -> InvoiceView:
        invoice = self.invoices.get(entry.originator_id)
        if invoice is None:
            raise AssertionError(f"event at position {entry.position} is for invoice "
                                 f"{entry.originator_id}, which the log has not drafted")
        return invoice

    # Team events ---------------------------------------------------------------------------

    def _team_registered(self, entry: LogEntry, event: Any) -> str:
        team = TeamView(team_id=entry.originator_id, name=event.name, currency=event.currency,
                        timezone=event.timezone)
        self.teams[team.team_id] = team
        self._touch_team(team)
        return (f"team {event.name!r} registered ({event.currency}, {event.timezone}), "
                f"owner {event.owner_user_id}")

    def _credit_limit_set(self, entry: LogEntry, event: Any) -> str:
        team = self._team(entry.originator_id, entry)
        team.credit_limit_nanos = event.credit_limit_nanos
        self._touch_team(team)
        return (f"credit limit set to {format_nanos(event.credit_limit_nanos, team.currency)} "
                f"(was {format_nanos(event.previous_nanos, team.currency)})")

    def _threshold_set(self, entry: LogEntry, event: Any) -> str:
        team = self._team(entry.originator_id, entry)
        team.low_balance_threshold_nanos = event.threshold_nanos
        self._touch_team(team)
        return (f"low-balance threshold set to "
                f"{format_nanos(event.threshold_nanos, team.currency)} "
                f"(was {format_nanos(event.previous_nanos, team.currency)})")

    def _top_up_credited(self, entry: LogEntry, event: Any) -> str:
        team = self._team(entry.originator_id, entry)
        team.credited_nanos += event.amount_nanos
        self._touch_team(team)
        top_up = TopUpView(team_id=team.team_id, top_up_id=event.top_up_id,
                           amount_nanos=event.amount_nanos, amount_minor=event.amount_minor,
                           currency=event.currency, credited_at=event.timestamp)
        self.top_ups[(team.team_id, event.top_up_id)] = top_up
        self._touch_top_up(top_up)
        return (f"top-up {event.top_up_id} credited "
                f"{format_nanos(event.amount_nanos, team.currency)}")

    def _top_up_refunded(self, entry: LogEntry, event: Any) -> str:
        team = self._team(entry.originator_id, entry)
        team.refunded_nanos += event.amount_nanos
        self._touch_team(team)
        top_up = self.top_ups.get((team.team_id, event.top_up_id))
        if top_up is not None:
            top_up.refunded_nanos += event.amount_nanos
            self._touch_top_up(top_up)
        return (f"refund {event.refund_id} of top-up {event.top_up_id}: "
                f"{format_nanos(event.amount_nanos, team.currency)}")

    def _adjustment_recorded(self, entry: LogEntry, event: Any) -> str:
        team = self._team(entry.originator_id, entry)
        team.adjusted_nanos += event.amount_nanos
        self._touch_team(team)
        return (f"adjustment {event.adjustment_id} of "
                f"{format_nanos(event.amount_nanos, team.currency)}: {event.reason}")

    def _team_suspended(self, entry: LogEntry, event: Any) -> str:
        team = self._team(entry.originator_id, entry)
        team.suspended = True
        self._touch_team(team)
        return f"team suspended: {event.reason}"

    def _team_reactivated(self, entry: LogEntry, event: Any) -> str:
        team = self._team(entry.originator_id, entry)
        team.suspended = False
        self._touch_team(team)
        return "team reactivated"

    # Account events ------------------------------------------------------------------------

    def _account_opened(self, entry: LogEntry, event: Any) -> str:
        account = AccountView(account_id=entry.originator_id, team_id=event.team_id,
                              account_key=event.account_key, name=event.name)
        self.accounts[account.account_id] = account
        self._touch_account(account)
        return f"account {event.name!r} ({event.account_key}, {event.kind}) opened"

    # Invoice events ------------------------------------------------------------------------

    def _invoice_drafted(self, entry: LogEntry, event: Any) -> str:
        invoice = InvoiceView(invoice_id=entry.originator_id, team_id=event.team_id,
                              currency=event.currency, period_start=event.period_start,
                              period_end=event.period_end, status="draft",
                              subtotal_nanos=event.subtotal_nanos)
        self.invoices[invoice.invoice_id] = invoice
        self._touch_invoice(invoice)
        return (f"invoice for {event.period_start}..{event.period_end} drafted: "
                f"{len(event.lines)} lines, {format_nanos(event.subtotal_nanos, event.currency)}")

    def _invoice_finalized(self, entry: LogEntry, event: Any) -> str:
        invoice = self._invoice(entry)
        invoice.status, invoice.number = "finalized", event.number
        invoice.total_minor = event.total_minor
        self._touch_invoice(invoice)
        return (f"invoice {event.number} finalized: total "
                f"{format_nanos(event.total_nanos, invoice.currency)} (rounding "
                f"{format_nanos(event.rounding_difference_nanos, invoice.currency)})")

    def _invoice_paid(self, entry: LogEntry, event: Any) -> str:
        invoice = self._invoice(entry)
        invoice.status, invoice.payment_reference = "paid", event.payment_reference
        self._touch_invoice(invoice)
        return f"invoice {invoice.number} paid ({event.payment_reference})"

    def _invoice_voided(self, entry: LogEntry, event: Any) -> str:
        invoice = self._invoice(entry)
        invoice.status = "void"
        self._touch_invoice(invoice)
        return f"invoice {invoice.number or invoice.invoice_id} voided: {event.reason}"

    def _credit_note_issued(self, entry: LogEntry, event: Any) -> str:
        invoice = self._invoice(entry)
        invoice.credited_nanos += event.amount_nanos
        self._touch_invoice(invoice)
        return (f"credit note {event.credit_note_id} on invoice {invoice.number}: "
                f"{format_nanos(event.amount_nanos, invoice.currency)}, {event.reason}")

    # Snapshots for stores ------------------------------------------------------------------

    def copy(self) -> ViewFolder:
        """A deep enough copy for a store that must not share rows with the runner's folder."""
        return ViewFolder(
            position=self.position, audit_head=self.audit_head,
            teams={k: replace(v) for k, v in self.teams.items()},
            accounts={k: replace(v) for k, v in self.accounts.items()},
            invoices={k: replace(v) for k, v in self.invoices.items()},
            top_ups={k: replace(v) for k, v in self.top_ups.items()},
        )


def _account_status_handler(status: str) -> Any:
    def apply(folder: ViewFolder, entry: LogEntry, event: Any) -> str:
        account = folder._account(entry)
        account.status = status
        folder._touch_account(account)
        reason = getattr(event, "reason", None)
        return f"account {account.name!r} {status}" + (f": {reason}" if reason else "")
    return apply


# Events whose audit rows show the team balance before and after (usage takes its own path,
# `_apply_usage`, and always shows them).
_MONEY_EVENTS = frozenset({"Team.TopUpCredited", "Team.TopUpRefunded",
                           "Team.AdjustmentRecorded"})

_HANDLERS: dict[str, Any] = {
    "Team.Registered": ViewFolder._team_registered,
    "Team.CreditLimitSet": ViewFolder._credit_limit_set,
    "Team.LowBalanceThresholdSet": ViewFolder._threshold_set,
    "Team.TopUpCredited": ViewFolder._top_up_credited,
    "Team.TopUpRefunded": ViewFolder._top_up_refunded,
    "Team.AdjustmentRecorded": ViewFolder._adjustment_recorded,
    "Team.Suspended": ViewFolder._team_suspended,
    "Team.Reactivated": ViewFolder._team_reactivated,
    "Account.Opened": ViewFolder._account_opened,
    "Account.Suspended": _account_status_handler("suspended"),
    "Account.Reactivated": _account_status_handler("active"),
    "Account.Closed": _account_status_handler("closed"),
    "Invoice.Drafted": ViewFolder._invoice_drafted,
    "Invoice.Finalized": ViewFolder._invoice_finalized,
    "Invoice.Paid": ViewFolder._invoice_paid,
    "Invoice.Voided": ViewFolder._invoice_voided,
    "Invoice.CreditNoteIssued": ViewFolder._credit_note_issued,
}


def _actor_of(event: Any) -> str | None:
    actor = getattr(event, "actor", None)
    return str(actor) if actor is not None else None


_SKIPPED_FIELDS = frozenset({"timestamp", "originator_id", "originator_version",
                             "originator_topic", "actor"})


def _generic_summary(event_type: str, event: Any) -> str:
    """A readable line for events without a dedicated summary: the name and its fields."""
    fields = ", ".join(f"{k}={v}" for k, v in sorted(vars(event).items())
                       if k not in _SKIPPED_FIELDS and not isinstance(v, (dict, list)))
    return f"{event_type}: {fields}" if fields else event_type
