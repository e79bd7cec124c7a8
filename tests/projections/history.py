"""Building histories for projection tests through the real Ledger service."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from adapters.memory.notification_log import MemoryNotificationLog
from adapters.runtime.priced_teams import numbered_keys, open_priced_team
from adapters.runtime.projection_process import open_runner
from adapters.runtime.settings import eventsourcing_env
from domain.payment import Payment
from domain.pricing import PriceTerms
from domain.usage import UsageRecord
from services.actor import Actor
from services.ledger import Ledger

OWNER = Actor("owner")
OPERATOR = Actor.operator("operator")
STRIPE = Actor.system("stripe")
# 1 nano per input token, 2 per output token, 100 per request: costs are easy to check by hand.
TERMS = PriceTerms(request_nanos=100, input_token_nanos=1, cached_input_token_nanos=0,
                   output_token_nanos=2)
PRICED_SINCE = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Team:
    ledger: Ledger
    team_id: UUID
    account_ids: list[UUID]


@contextmanager
def ledger_at(database_url: str) -> Iterator[Ledger]:
    ledger = Ledger(env=eventsourcing_env(database_url))
    try:
        yield ledger
    finally:
        ledger.close()


def make_team(ledger: Ledger, key: str = "acme", timezone: str = "UTC",
              accounts: int = 2) -> Team:
    team = open_priced_team(ledger, team_key=key, terms=TERMS, owner=OWNER, operator=OPERATOR,
                            package_key=f"{key}-pkg", timezone=timezone, since=PRICED_SINCE,
                            account_keys=numbered_keys(f"{key}-a", accounts))
    return Team(ledger, team.team_id, team.account_ids)


def usage(account_id: UUID, usage_id: str, occurred_at: datetime, *, model: str = "m1",
          success: bool = True, input_tokens: int = 10, output_tokens: int = 5) -> UsageRecord:
    return UsageRecord(usage_id=usage_id, account_id=account_id, occurred_at=occurred_at,
                       model=model, success=success, input_tokens=input_tokens,
                       output_tokens=output_tokens)


def cost_of(record: UsageRecord) -> int:
    return TERMS.cost_nanos(success=record.success, input_tokens=record.input_tokens,
                            cached_input_tokens=record.cached_input_tokens,
                            output_tokens=record.output_tokens)


def mixed_history(ledger: Ledger) -> Team:
    """Two teams; top-ups, a refund, adjustments, a credit limit, usage, suspensions, invoices,
    and a Stripe payment still processing (it fills the payments table, moves no balance)."""
    team = make_team(ledger, "acme", "Europe/Berlin", accounts=3)
    other = make_team(ledger, "globex", "Pacific/Auckland", accounts=1)
    ledger.credit_top_up(team.team_id, "pi_1", 10_000, "USD", STRIPE)  # 100.00 USD
    ledger.credit_top_up(team.team_id, "pi_2", 500, "USD", STRIPE)
    ledger.refund_top_up(team.team_id, "pi_2", "re_1", 200, "USD", STRIPE)
    ledger.record_adjustment(team.team_id, "adj-1", -1_000_000, "goodwill reversal", OWNER)
    ledger.set_credit_limit(team.team_id, 5_000_000_000, OWNER)
    ledger.set_low_balance_threshold(team.team_id, 1_000_000_000, OWNER)
    start = datetime(2026, 11, 20, 22, 0, tzinfo=UTC)
    records = [usage(team.account_ids[i % 3], f"u{i}", start + timedelta(hours=i),
                     model=("m1", "m2")[i % 2], success=i % 7 != 0, input_tokens=100 + i,
                     output_tokens=i) for i in range(60)]
    ledger.record_usage_batch(records[:40])
    ledger.record_usage_batch([usage(other.account_ids[0], "g1", start)])
    ledger.suspend_account(team.account_ids[2], "lost laptop", OWNER)
    ledger.record_usage_batch(records[40:])
    ledger.reactivate_account(team.account_ids[2], OWNER)
    ledger.close_account(team.account_ids[1], "left the company", OWNER)
    invoice_id = ledger.draft_invoice(team.team_id, period_start="2026-11-01",
                                      period_end="2026-12-01",
                                      lines=[{"description": "usage", "amount_nanos": 12_345}],
                                      actor=OWNER)
    ledger.finalize_invoice(invoice_id, OWNER)
    ledger.mark_invoice_paid(invoice_id, "in_1", OWNER)
    ledger.suspend_team(other.team_id, "unpaid", OWNER)
    payment = Payment.start(team_id=team.team_id, request_key="first", amount_nanos=10**10,
                            amount_minor=100, currency="USD", payment_method_id="pm_card_visa",
                            actor=OWNER.user_id)
    payment.attach_stripe_object("pi_first", STRIPE.user_id)
    ledger.save(payment)
    return team


def project(database_url: str) -> int:
    """Catch the live read models up with the log; return the position they reached."""
    with open_runner(database_url) as runner:
        runner.catch_up()
        return runner.position


@contextmanager
def memory_ledger() -> Iterator[Ledger]:
    """A Ledger on eventsourcing's in-memory (POPO) store."""
    ledger = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    try:
        yield ledger
    finally:
        ledger.close()


def memory_log(ledger: Ledger) -> MemoryNotificationLog:
    """The in-memory Ledger's notification log, read as the projections read PostgreSQL's."""
    return MemoryNotificationLog(ledger.recorder)
