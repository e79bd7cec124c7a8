"""Helpers of the ingestion tests: fresh streams, priced accounts, consumer processes, waiting."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import nats.errors

from adapters.nats.ingest_settings import IngestSettings
from adapters.nats.usage_publisher import UsagePublisher
from adapters.runtime.demo import realistic_record
from adapters.runtime.priced_teams import PricedAccount, numbered_keys, open_priced_team
from domain.pricing import PriceTerms
from domain.usage import UsageRecord
from services.actor import Actor
from services.ledger import Ledger

REPO_ROOT = Path(__file__).resolve().parents[2]
TERMS = PriceTerms(request_nanos=40_000, input_token_nanos=3_001, cached_input_token_nanos=299,
                   output_token_nanos=15_013, bill_failed_requests=True)
PROCESS_STOP_SECONDS = 20.0


def unpriced_record(usage_id: str) -> UsageRecord:
    """A valid record of an account nobody opened: enough to publish (the ledger would reject
    it as an unknown account)."""
    return UsageRecord(usage_id=usage_id, account_id=uuid4(), occurred_at=datetime.now(UTC),
                       model="gpt-x", success=True, input_tokens=10, output_tokens=5)


# A paced publisher's chunks, and how it retries one that gave up during a node loss.
PACED_CHUNK_RECORDS = 50
PACED_CHUNK_ATTEMPTS_MAX = 5
PACED_CHUNK_RETRY_PAUSE_SECONDS = 2.0


async def publish_paced(publisher: UsagePublisher, records: list[UsageRecord],
                        pause_seconds: float) -> None:
    """Publish `records` in chunks, `pause_seconds` apart, as a steady producer does while a
    cluster loses a node. A chunk whose publish gave up (no stream leader yet) is published
    again: the same ids make the second copy harmless."""
    for start in range(0, len(records), PACED_CHUNK_RECORDS):
        for attempt in range(1, PACED_CHUNK_ATTEMPTS_MAX + 1):
            try:
                await publisher.publish_many(records[start:start + PACED_CHUNK_RECORDS])
                break
            except (nats.errors.Error, TimeoutError):
                if attempt == PACED_CHUNK_ATTEMPTS_MAX:
                    raise
                await asyncio.sleep(PACED_CHUNK_RETRY_PAUSE_SECONDS)
        await asyncio.sleep(pause_seconds)


def accounts(ledger: Ledger, count: int, team_key: str = "test") -> list[PricedAccount]:
    return open_priced_team(ledger, team_key=team_key, terms=TERMS,
                            owner=Actor(f"{team_key}-owner"),
                            account_keys=numbered_keys("account-", count)).accounts


def make_records(accounts: list[PricedAccount], count: int, prefix: str,
                 seed: int = 11) -> list[UsageRecord]:
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(hours=1)
    return [realistic_record(rng, accounts[i % len(accounts)], f"{prefix}-{i}",
                             start + timedelta(milliseconds=i))
            for i in range(count)]


def cost_of(record: UsageRecord) -> int:
    return TERMS.cost_nanos(success=record.success, input_tokens=record.input_tokens,
                            cached_input_tokens=record.cached_input_tokens,
                            output_tokens=record.output_tokens)


def spent_by_account(ledger: Ledger, accounts: Iterable[PricedAccount]) -> dict[str, int]:
    return {str(a.account_id): ledger.get_account(a.account_id).spent_nanos for a in accounts}


def expected_spent(records: Iterable[UsageRecord]) -> dict[str, int]:
    spent: dict[str, int] = {}
    for record in records:
        key = str(record.account_id)
        spent[key] = spent.get(key, 0) + cost_of(record)
    return spent


def processed(ledger: Ledger) -> int:
    """Messages the ledger has answered for: recorded, duplicate or rejected."""
    return sum(ledger.keyed.counter_values().values())


async def wait_until(condition, timeout_seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout_seconds:.0f}s")


def assert_charged_exactly_once(ledger: Ledger, priced: list[PricedAccount],
                                records: list[UsageRecord]) -> None:
    """Every record recorded once, none rejected or in conflict, and each account charged
    exactly what its records cost."""
    counters = ledger.keyed.counter_values()
    assert counters["usage_recorded"] == len(records)
    assert counters.get("usage_rejected", 0) == counters.get("usage_conflicts", 0) == 0
    assert spent_by_account(ledger, priced) == expected_spent(records)


class ConsumerProcess:
    """A real `ledger consume` process."""

    def __init__(self, database_url: str, nats_url: str, *, member: int, members: int,
                 settings: IngestSettings, log_path: Path) -> None:
        self.args = [sys.executable, "-m", "adapters.cli", "consume", "--member", str(member),
                     "--members", str(members)]
        self.env = {
            **os.environ,
            "LEDGER_DATABASE_URL": database_url,
            "LEDGER_NATS_URL": nats_url,
            "LEDGER_USAGE_PARTITIONS": str(settings.partitions),
            "LEDGER_INGEST_BATCH_SIZE": str(settings.batch_size),
            "LEDGER_INGEST_ACK_WAIT_SECONDS": str(settings.ack_wait_seconds),
            "LEDGER_USAGE_DUPLICATE_WINDOW_SECONDS": str(settings.duplicate_window_seconds),
            "LEDGER_USAGE_PIN_TTL_SECONDS": str(settings.pin_ttl_seconds),
            "LEDGER_USAGE_REPLICAS": str(settings.replicas),
        }
        self.log_path = log_path
        # Touched by the consumer while it is connected and every partition loop runs.
        self.health_file = log_path.with_suffix(".health")
        self.env["LEDGER_HEALTH_FILE"] = str(self.health_file)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> ConsumerProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.args, env=self.env, cwd=REPO_ROOT,
                                            stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int:
        """SIGTERM and wait: the clean stop `ledger consume` promises."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(PROCESS_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError("consumer did not stop within "
                                 f"{PROCESS_STOP_SECONDS:.0f}s of SIGTERM") from None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def serving(self) -> bool:
        """Set up and pulling: its health file exists (see LEDGER_HEALTH_FILE)."""
        return self.alive() and self.health_file.exists()
