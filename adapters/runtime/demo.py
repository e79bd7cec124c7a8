"""`ledger demo`: a few teams, accounts and packages, then realistic usage over the bus.

Setting up is idempotent (deterministic keys and idempotency keys), so the demo can run again
against the same data folder. Usage comes in waves: a steady trickle, then bursts, over several
models, with some failed requests and three records that end on the rejected subject: one of an
unknown account, one that is not a record, and a conflicting copy of a record already sent (same
usage_id, other content: its message id differs, so the broker passes it on and the ledger
rejects it as a conflict).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from adapters.nats.usage_contract import usage_subject
from adapters.nats.usage_publisher import UsagePublisher
from adapters.runtime.composition import open_ledger
from adapters.runtime.priced_teams import PricedAccount, open_priced_team
from adapters.runtime.processes import Runtime
from domain.money import format_nanos
from domain.pricing import PriceTerms
from domain.usage import UsageRecord
from services.actor import Actor
from services.ledger import Ledger

MODELS = ("claude-code-small", "claude-code-large", "gpt-x", "gpt-x-mini", "embed-1")
FAILURE_RATE_PERCENT = 7
BURST_EVERY_RECORDS = 1000
BURST_SIZE_RECORDS = 500
STEADY_CHUNK_RECORDS = 100
STEADY_PAUSE_SECONDS = 0.05
DEMO_RECORDS_MAX = 1_000_000
WAIT_FOR_LEDGER_SECONDS = 120.0
LEDGER_POLL_SECONDS = 0.5
DEMO_BAD_RECORDS = 3  # an unknown account, not a record, a conflicting copy
DEMO_OPERATOR = Actor.operator("demo-operator")

DEMO_TEAMS = {
    "acme": ("Acme Robotics", ["alice", "bob", "ci-bot"]),
    "globex": ("Globex", ["carol", "dan"]),
    "initech": ("Initech", ["erin", "frank", "grace", "build-key"]),
}
DEMO_PACKAGES = {
    "starter": PriceTerms(request_nanos=50_000, input_token_nanos=3_000,
                          cached_input_token_nanos=300, output_token_nanos=15_000),
    "pro": PriceTerms(request_nanos=0, input_token_nanos=2_500, cached_input_token_nanos=250,
                      output_token_nanos=12_000, bill_failed_requests=True),
}


def realistic_record(rng: random.Random, account: PricedAccount, usage_id: str,
                     occurred_at: datetime) -> UsageRecord:
    model = rng.choice(MODELS)
    return UsageRecord(
        usage_id=usage_id, account_id=account.account_id, occurred_at=occurred_at, model=model,
        success=rng.randrange(100) >= FAILURE_RATE_PERCENT,
        input_tokens=rng.randint(200, 30_000), output_tokens=rng.randint(0, 4_000),
        cached_input_tokens=rng.choice((0, 0, rng.randint(100, 20_000))))




def open_demo_accounts(ledger: Ledger) -> list[PricedAccount]:
    """The demo teams, each with its people's accounts on one of the demo packages."""
    accounts: list[PricedAccount] = []
    for index, (team_key, (_name, people)) in enumerate(DEMO_TEAMS.items()):
        package_key = list(DEMO_PACKAGES)[index % len(DEMO_PACKAGES)]
        accounts += open_priced_team(
            ledger, team_key=f"demo-{team_key}", account_keys=people,
            owner=Actor(f"demo-{team_key}-owner"), package_key=f"demo-{package_key}",
            terms=DEMO_PACKAGES[package_key], operator=DEMO_OPERATOR).accounts
    return accounts


async def publish_in_waves(publisher: UsagePublisher, batch: list[UsageRecord],
                           console: Console) -> None:
    """A steady trickle with pauses, and a burst every BURST_EVERY_RECORDS records."""
    with Progress(console=console) as progress:
        task = progress.add_task("publishing usage (steady, then bursts)", total=len(batch))
        sent = 0
        while sent < len(batch):
            burst = sent and sent % BURST_EVERY_RECORDS < STEADY_CHUNK_RECORDS
            size = BURST_SIZE_RECORDS if burst else STEADY_CHUNK_RECORDS
            chunk = batch[sent:sent + size]
            await publisher.publish_many(chunk)
            sent += len(chunk)
            progress.advance(task, len(chunk))
            if not burst:
                await asyncio.sleep(STEADY_PAUSE_SECONDS)


async def publish_bad_records(publisher: UsagePublisher, rng: random.Random,
                              accounts: list[PricedAccount], batch: list[UsageRecord],
                              run_id: str) -> None:
    """Records that cannot be accepted, to show the rejected subject at work: an unknown
    account, a message that is not a record, a conflicting copy of the first record."""
    unknown = realistic_record(rng, PricedAccount(uuid4(), DEMO_PACKAGES["pro"]),
                               f"demo-{run_id}-unknown", datetime.now(UTC))
    await publisher.publish_usage(unknown)
    await publisher.publish_raw(usage_subject(accounts[0].account_id),
                                b'{"usage_id": "demo-bad", "tokens": "many"}')
    await publisher.publish_usage(dataclasses.replace(
        batch[0], input_tokens=batch[0].input_tokens + 1))


async def wait_for_ledger(ledger: Ledger, before: dict[str, int], expected: int) -> int:
    """How many records the ledger took in since `before`, once it reached `expected` or
    WAIT_FOR_LEDGER_SECONDS passed."""
    deadline = time.monotonic() + WAIT_FOR_LEDGER_SECONDS
    done = 0
    while time.monotonic() < deadline:
        after = ledger.keyed.counter_values()
        done = sum(after.values()) - sum(before.values())
        if done >= expected:
            break
        await asyncio.sleep(LEDGER_POLL_SECONDS)
    return done


def print_accounts(ledger: Ledger, accounts: list[PricedAccount], console: Console) -> None:
    table = Table(title="demo accounts")
    for column in ("team", "account", "requests", "spent"):
        table.add_column(column)
    for priced in accounts:
        account = ledger.get_account(priced.account_id)
        team = ledger.get_team(account.team_id)
        table.add_row(team.name, account.name, str(account.usage_count),
                      format_nanos(account.spent_nanos, team.currency))
    console.print(table)
    console.print(f"ledger counters: {ledger.keyed.counter_values()}")


async def run_demo(runtime: Runtime, *, records: int, console: Console) -> int:
    if not 1 <= records <= DEMO_RECORDS_MAX:
        raise SystemExit(f"--records must be 1 to {DEMO_RECORDS_MAX}, got {records}")
    ledger = open_ledger(runtime.database_url)
    try:
        console.print("registering demo teams, packages and accounts")
        accounts = open_demo_accounts(ledger)
        before = ledger.keyed.counter_values()
        rng = random.Random()
        run_id = uuid4().hex[:8]
        now = datetime.now(UTC)
        batch = [realistic_record(rng, rng.choice(accounts), f"demo-{run_id}-{i}",
                                  now - timedelta(milliseconds=rng.randint(0, 600_000)))
                 for i in range(records)]
        publisher = await UsagePublisher.connect(runtime.nats_url)
        async with publisher:
            await publish_in_waves(publisher, batch, console)
            await publish_bad_records(publisher, rng, accounts, batch, run_id)
        console.print(f"published {records} records and {DEMO_BAD_RECORDS} bad ones; waiting "
                      "for the ledger")
        expected = records + DEMO_BAD_RECORDS
        done = await wait_for_ledger(ledger, before, expected)
        if done < expected:
            console.print(f"[red]the ledger took in {done} of {expected} records in "
                          f"{WAIT_FOR_LEDGER_SECONDS:.0f}s: is `ledger up` (or `ledger consume`) "
                          "running?[/red]")
            return 1
        print_accounts(ledger, accounts, console)
        return 0
    finally:
        ledger.close()
