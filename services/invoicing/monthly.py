"""The lines of a team's monthly invoice, computed from the event log.

Source: the `Account.UsageRecorded` events of the team's accounts, read from the event store
itself (not a read model). Each event carries the exact cost in nanos it was priced at when it
was recorded, so the lines are exact by construction, and the log is complete up to the
versions read: nothing a read model might lag behind.

The month is the calendar month in the team's timezone: a record belongs to the month of the
local date of its `occurred_at`. What was read is kept on the invoice as its *basis*: per account
`covered` (the highest version read) and `resume` (the first version read but left for a later
month, because it happened after this one), and the end of the month. The next month's draft
reads each account from there, so each record is billed exactly once:

- covered by the previous basis and dated before its month's end: billed already, skipped;
- dated in the month: a usage line (per account and model);
- dated before the month: a correction line (per account, model and month) with its reason:
  it arrived after the previous invoice was drafted (a late record for a finalized month), or
  its month's invoice was voided (a draft after a voided invoice starts from the basis that
  invoice started from), or it precedes the team's first invoice;
- dated after the month: left for a later invoice (`resume`).

Prepaid credit: the team's funds (top-ups - refunds + adjustments) minus the prepaid credit that
earlier invoices applied; this invoice applies as much of it as its usage needs, as a negative
line. The amount due is the sum of the lines (rounded once when finalized).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from domain.account import Account
from domain.errors import InvalidInputError
from domain.team import Team

# Events read from an account's log per query while drafting.
EVENTS_PAGE_SIZE = 5_000
MONTH_PATTERN = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
# How many months back a draft looks for an earlier invoice of the team (to refuse a gap).
EARLIER_MONTHS_CHECKED = 24
PREPAID_KIND, USAGE_KIND, CORRECTION_KIND = "prepaid_credit", "usage", "correction"


def month_period(month: str) -> tuple[str, str]:
    """"2026-11" -> ("2026-11-01", "2026-12-01"): the period, its end exclusive."""
    match = MONTH_PATTERN.match(month) if isinstance(month, str) else None
    if match is None:
        raise InvalidInputError(f"month must be YYYY-MM (e.g. 2026-11), got {month!r}")
    year, number = int(match[1]), int(match[2])
    start = date(year, number, 1)
    end = date(year + number // 12, number % 12 + 1, 1)
    return start.isoformat(), end.isoformat()


def previous_month(month: str, back: int = 1) -> str:
    start = date.fromisoformat(month_period(month)[0])
    index = start.year * 12 + start.month - 1 - back
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


@dataclass
class _Tally:
    requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    amount_nanos: int = 0

    def add(self, e: Account.UsageRecorded) -> None:
        self.requests += 1
        self.input_tokens += e.input_tokens
        self.cached_input_tokens += e.cached_input_tokens
        self.output_tokens += e.output_tokens
        self.amount_nanos += e.cost_nanos


@dataclass
class MonthlyDraft:
    lines: list[dict[str, Any]]
    basis: dict[str, Any]
    usage_nanos: int = 0  # usage lines only: the month's usage window
    corrections_nanos: int = 0
    prepaid_applied_nanos: int = 0
    tallies: dict[tuple[str, str, str], _Tally] = field(default_factory=dict)


@dataclass(frozen=True)
class PreviousInvoice:
    """What a draft needs of the invoice before it (None fields: no earlier invoice)."""

    label: str  # its number, or its period when it has none
    basis: dict[str, Any]  # the basis this draft starts from


INVOICE_PAYMENT_PREFIX = "in_"  # a paid Stripe invoice credited to the balance


def funds_nanos(team: Team) -> int:
    """Prepaid credit ever received: top-ups (not invoice payments, which settle usage already
    billed) less their refunds, plus adjustments."""
    return sum(v for k, v in team.top_ups.items() if not k.startswith(INVOICE_PAYMENT_PREFIX)) \
        - sum(team.refunds.values()) + sum(team.adjustments.values())


def draft_month(team: Team, month: str, previous: PreviousInvoice | None,
                account_names: dict[UUID, str],
                read_events: Callable[[UUID, int], Iterable[Any]]) -> MonthlyDraft:
    """The lines and basis of `team`'s invoice for `month`; `read_events(account, after)`
    yields the account's events with versions above `after`, in order."""
    start, end = (date.fromisoformat(d) for d in month_period(month))
    zone = ZoneInfo(team.timezone)
    base: dict[str, dict[str, int | None]] = previous.basis["accounts"] if previous else {}
    # Covered records dated before this day were billed by the invoices before.
    billed_before = date.fromisoformat(previous.basis["period_end"]) if previous else date.min
    accounts: dict[str, dict[str, int | None]] = {}
    draft = MonthlyDraft(lines=[], basis={})
    for account_id in team.account_ids:
        earlier = base.get(str(account_id), {"covered": 0, "resume": None})
        covered = int(earlier["covered"] or 0)
        resume = earlier["resume"]
        after = covered if resume is None else min(covered, int(resume) - 1)
        read_to, first_later = covered, None
        for e in read_events(account_id, after):
            read_to = max(read_to, e.originator_version)
            if not isinstance(e, Account.UsageRecorded):
                continue
            day = _local_day(e.occurred_at, zone)
            if e.originator_version <= covered and day < billed_before:
                continue  # billed already
            if day >= end:
                first_later = first_later or e.originator_version
            elif day >= start:
                draft.tallies.setdefault((USAGE_KIND, str(account_id), e.model), _Tally()).add(e)
            else:
                draft.tallies.setdefault((f"{day:%Y-%m}", str(account_id), e.model),
                                         _Tally()).add(e)
        accounts[str(account_id)] = {"covered": read_to, "resume": first_later}
    for (kind, account_key, model), tally in sorted(draft.tallies.items()):
        name = account_names.get(UUID(account_key), account_key)
        line = {"kind": USAGE_KIND if kind == USAGE_KIND else CORRECTION_KIND,
                "account_id": account_key, "account_name": name, "model": model,
                "quantity": tally.requests, "requests": tally.requests,
                "input_tokens": tally.input_tokens,
                "cached_input_tokens": tally.cached_input_tokens,
                "output_tokens": tally.output_tokens, "amount_nanos": tally.amount_nanos}
        counts = (f"{tally.requests} requests, {tally.input_tokens} input, "
                  f"{tally.cached_input_tokens} cached, {tally.output_tokens} output tokens")
        if kind == USAGE_KIND:
            line["description"] = f"{name} / {model}: {counts}"
            draft.usage_nanos += tally.amount_nanos
        else:
            reason = (f"usage of {kind} that no earlier invoice billed (recorded after invoice "
                      f"{previous.label} was drafted, or its month's invoice was voided)"
                      if previous else f"usage of {kind} from before the team's first invoice")
            line.update(usage_month=kind, reason=reason,
                        description=f"Correction: {name} / {model}: {counts}; {reason}")
            draft.corrections_nanos += tally.amount_nanos
        draft.lines.append(line)
    applied_before = int(previous.basis["prepaid_applied_total_nanos"]) if previous else 0
    available = max(0, funds_nanos(team) - applied_before)
    draft.prepaid_applied_nanos = min(available, draft.usage_nanos + draft.corrections_nanos)
    if draft.prepaid_applied_nanos:
        draft.lines.append({
            "kind": PREPAID_KIND, "quantity": 1, "amount_nanos": -draft.prepaid_applied_nanos,
            "description": "Prepaid credit applied (top-ups, refunds and adjustments not "
                           "applied to an earlier invoice)"})
    draft.basis = {"month": month, "period_end": end.isoformat(), "accounts": accounts,
                   "prepaid_applied_nanos": draft.prepaid_applied_nanos,
                   "prepaid_applied_total_nanos": applied_before + draft.prepaid_applied_nanos,
                   "previous": previous.label if previous else None,
                   # Where this draft started: a draft after this invoice is voided starts here.
                   "started_from": {"accounts": base, "period_end": billed_before.isoformat(),
                                    "prepaid_applied_total_nanos": applied_before}}
    return draft


def _local_day(occurred_at: datetime, zone: ZoneInfo) -> date:
    return occurred_at.astimezone(zone).date()
