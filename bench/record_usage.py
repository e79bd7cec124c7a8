"""Benchmark: usage recording through the service layer into PostgreSQL, against two baselines.

    uv run python bench/record_usage.py [--records 200000] [--accounts 1000] [--batch 1000]

Runs, in one process and against one PostgreSQL server (embedded, durable, on a free port; or
LEDGER_BENCH_DATABASE_URL), each in a fresh database:

1. service:  `Ledger.record_usage_batch` with idempotency on (keys checked and written in the
             same transaction), pricing by the package in force, batches of --batch records.
2. library:  eventsourcing's plain batched save: a stock `Application` and a stock `Aggregate`
             whose `@event` method records an equivalent usage event; the same batches.
3. copy:     raw PostgreSQL `COPY` of equivalent rows (id, version, topic, state) into a table
             shaped like the events table: the floor no event store can beat.

Prints records/s for each and the ratios service/library and service/copy. Records are made
before timing starts; what is timed is recording them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from adapters.runtime.embedded_servers import EmbeddedPostgres
from adapters.runtime.settings import eventsourcing_env
from domain.pricing import PriceTerms
from domain.usage import UsageRecord
from services.actor import Actor
from services.ledger import Ledger

MODELS = ("model-small", "model-large", "model-code", "model-vision")
console = Console()


@dataclass(frozen=True)
class Result:
    name: str
    records: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def make_records(account_ids: list[UUID], count: int, seed: int = 7) -> list[UsageRecord]:
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(hours=1)
    return [
        UsageRecord(
            usage_id=f"bench-{i}",
            account_id=account_ids[i % len(account_ids)],
            occurred_at=start + timedelta(milliseconds=i),
            model=rng.choice(MODELS),
            success=rng.random() > 0.05,
            input_tokens=rng.randint(100, 20_000),
            output_tokens=rng.randint(10, 4_000),
            cached_input_tokens=rng.randint(0, 5_000),
        )
        for i in range(count)
    ]


def bench_service(url: str, records_count: int, accounts: int, batch: int) -> Result:
    ledger = Ledger(env=eventsourcing_env(url))
    owner, operator = Actor("owner"), Actor.operator("operator")
    team_id = ledger.register_team(team_key="bench", name="Bench", currency="USD",
                                   timezone="UTC", actor=owner)
    package_id = ledger.create_package(
        package_key="bench", name="Bench", currency="USD",
        terms=PriceTerms(request_nanos=100_000, input_token_nanos=3_000,
                         cached_input_token_nanos=300, output_token_nanos=15_000),
        actor=operator)
    account_ids = []
    since = datetime.now(UTC) - timedelta(days=1)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("opening accounts", total=accounts)
        for n in range(accounts):
            account_id = ledger.open_account(team_id, account_key=f"a{n}", name=f"A{n}",
                                             actor=owner)
            ledger.assign_package(account_id, package_id, owner, effective_from=since)
            account_ids.append(account_id)
            progress.advance(task)
    records = make_records(account_ids, records_count)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("service: record_usage_batches", total=records_count)
        started = time.perf_counter()
        batches = (records[offset:offset + batch] for offset in range(0, records_count, batch))
        for outcome in ledger.record_usage_batches(batches):
            assert not outcome.rejections and not outcome.duplicates
            progress.advance(task, len(outcome.recorded))
        seconds = time.perf_counter() - started
    recorded = ledger.keyed.counter_values()["usage_recorded"]
    assert recorded == records_count, recorded
    ledger.close()
    return Result("service (idempotent, priced)", records_count, seconds)


class PlainAccount(Aggregate):
    @event("Opened")
    def __init__(self, name: str) -> None:
        self.name = name
        self.spent_nanos = 0

    @event("UsageRecorded")
    def record_usage(self, usage_id: str, occurred_at: datetime, model: str, success: bool,
                     input_tokens: int, cached_input_tokens: int, output_tokens: int,
                     cost_nanos: int, team_id: UUID, package_id: UUID,
                     package_version: int) -> None:
        self.spent_nanos += cost_nanos


class PlainApplication(Application[UUID]):
    name = "Plain"


def bench_library(url: str, records_count: int, accounts: int, batch: int) -> Result:
    env = eventsourcing_env(url)
    env.pop("APPLICATION_RECORDER_TOPIC")
    env["PERSISTENCE_MODULE"] = "eventsourcing.postgres"  # the stock factory and recorder
    app = PlainApplication(env=env)
    plain = [PlainAccount(name=f"A{n}") for n in range(accounts)]
    app.save(*plain)
    team_id, package_id = uuid4(), uuid4()
    records = make_records([a.id for a in plain], records_count)
    by_id = {a.id: a for a in plain}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("library: plain batched save", total=records_count)
        started = time.perf_counter()
        for offset in range(0, records_count, batch):
            touched = {}
            for r in records[offset:offset + batch]:
                account = by_id[r.account_id]
                account.record_usage(r.usage_id, r.occurred_at, r.model, r.success,
                                     r.input_tokens, r.cached_input_tokens, r.output_tokens,
                                     100_000, team_id, package_id, 1)
                touched[account.id] = account
            app.save(*touched.values())
            progress.advance(task, batch)
        seconds = time.perf_counter() - started
    app.close()
    return Result("library (plain Aggregate save)", records_count, seconds)


def bench_copy(url: str, records_count: int, accounts: int) -> Result:
    account_ids = [uuid4() for _ in range(accounts)]
    records = make_records(account_ids, records_count)
    topic = "domain.account:Account.UsageRecorded"
    versions: dict[UUID, int] = {}
    rows = []
    for r in records:
        version = versions.get(r.account_id, 1) + 1
        versions[r.account_id] = version
        state = json.dumps({
            "usage_id": r.usage_id, "occurred_at": r.occurred_at.isoformat(),
            "model": r.model, "success": r.success, "input_tokens": r.input_tokens,
            "cached_input_tokens": r.cached_input_tokens, "output_tokens": r.output_tokens,
            "cost_nanos": 100_000, "timestamp": r.occurred_at.isoformat(),
        }).encode()
        rows.append((r.account_id, version, topic, state))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE copy_events (originator_id uuid NOT NULL, "
                     "originator_version bigint NOT NULL, topic text, state bytea, "
                     "notification_id bigserial, "
                     "PRIMARY KEY (originator_id, originator_version))")
        conn.execute("CREATE UNIQUE INDEX ON copy_events (notification_id)")
        started = time.perf_counter()
        with conn.cursor() as cursor, cursor.copy(
                "COPY copy_events (originator_id, originator_version, topic, state) "
                "FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        seconds = time.perf_counter() - started
    return Result("raw PostgreSQL COPY", records_count, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--only", choices=["service", "library", "copy"], default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as folder:
        Path(folder).chmod(0o711)  # as root, PostgreSQL's own user passes through
        external = os.environ.get("LEDGER_BENCH_DATABASE_URL")
        server = None
        if external is None:
            server = EmbeddedPostgres(Path(folder) / "pg", durable=True).start()
        base_url = external or server.url if server else external
        assert base_url is not None

        def fresh(name: str) -> str:
            with psycopg.connect(base_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
                conn.execute(f'CREATE DATABASE "{name}"')
            return base_url.rsplit("/", 1)[0] + f"/{name}"

        results = []
        try:
            if args.only in (None, "service"):
                results.append(bench_service(fresh("bench_service"), args.records,
                                             args.accounts, args.batch))
            if args.only in (None, "library"):
                results.append(bench_library(fresh("bench_library"), args.records,
                                             args.accounts, args.batch))
            if args.only in (None, "copy"):
                results.append(bench_copy(fresh("bench_copy"), args.records, args.accounts))
        finally:
            if server is not None:
                server.stop()

    table = Table(title=f"{args.records:,} usage records over {args.accounts:,} accounts, "
                        f"batches of {args.batch:,} ({os.cpu_count()} cores, "
                        f"{platform.processor() or platform.machine()})")
    table.add_column("path")
    table.add_column("seconds", justify="right")
    table.add_column("records/s", justify="right")
    for result in results:
        table.add_row(result.name, f"{result.seconds:.2f}", f"{result.rate:,.0f}")
    console.print(table)
    rates = {r.name.split()[0]: r.rate for r in results}
    if "service" in rates and "library" in rates:
        console.print(f"service / library = {rates['service'] / rates['library']:.2f}x")
    if "service" in rates and "raw" in rates:
        console.print(f"service / COPY    = {rates['service'] / rates['raw']:.2f}x")


if __name__ == "__main__":
    main()
