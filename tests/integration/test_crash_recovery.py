"""Nothing acknowledged is lost and nothing is charged twice when the ledger crashes.

(a) `kill -9` of the whole `ledger up` process group, 20 times at moments drawn from a seeded
    random generator, under a steady producer: the records the producer saw acknowledged are
    exactly the records charged, each once (count and cost).
(b) `pg_ctl restart -m immediate` of the database 5 times under load, with `ledger up` on it:
    the same, and the time until a record acknowledged just before each restart is charged
    (printed; see docs/operations.md for the figures).
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import nats
import psycopg
import pytest
from eventsourcing.persistence import PersistenceError

from adapters.nats.ingest_settings import STREAM_NAME
from adapters.nats.usage_contract import UsageMessage, usage_message_id, usage_subject
from adapters.runtime.composition import open_ledger, servers_file
from adapters.runtime.demo import PricedAccount, realistic_record
from adapters.runtime.embedded_postgres import EmbeddedPostgres, postgres_bin_dir
from domain.usage import UsageRecord
from tests.integration.ledger_up_support import LedgerUp
from tests.integration.support import accounts, expected_spent

pytestmark = pytest.mark.slow
T = TypeVar("T")

SEED = 20261201
KILLS = 20
# A third of the kills land while `ledger up` is still starting (servers half up), the others
# while it runs; measured from the start or from "ready", so that a slow machine changes the
# timings, not what is tested.
KILL_DURING_START_SHARE = 1 / 3
KILL_DURING_START_SECONDS = (0.2, 4.0)
KILL_WHILE_RUNNING_SECONDS = (0.2, 3.0)
DATABASE_RESTARTS = 5
RESTART_EVERY_SECONDS = (1.0, 3.0)
ACCOUNTS = 4
PRODUCER_PAUSE_SECONDS = 0.003
PUBLISH_TIMEOUT_SECONDS = 1.0
RETRY_PAUSE_SECONDS = 0.1
RECORDS_MIN = 200  # the test means nothing if the producer got nothing through
DRAIN_TIMEOUT_SECONDS = 120.0
RECOVERY_TIMEOUT_SECONDS = 60.0
START_TIMEOUT_SECONDS = 90.0
READ_ATTEMPTS = 20


@pytest.fixture
def crash_folder() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="ledger-crash-"))
    folder.chmod(0o711)  # PostgreSQL's system user passes through it when we are root
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Producer:
    """Publishes records one after another; a record is retried (same id) until acknowledged,
    so every record it started is acknowledged once it stops."""

    url: str
    accounts: list[PricedAccount]
    rng: random.Random
    acked: list[UsageRecord] = field(default_factory=list)
    acked_at: list[float] = field(default_factory=list)
    failures: int = 0
    stopping: bool = False

    def record(self, n: int) -> UsageRecord:
        start = datetime.now(UTC) - timedelta(minutes=5)
        return realistic_record(self.rng, self.accounts[n % len(self.accounts)], f"crash-{n}",
                                start + timedelta(milliseconds=n))

    async def run(self) -> None:
        connection = await nats.connect(self.url, max_reconnect_attempts=-1,
                                        reconnect_time_wait=0.2, connect_timeout=2)
        js = connection.jetstream(timeout=PUBLISH_TIMEOUT_SECONDS)
        n = 0
        try:
            while not self.stopping:
                record = self.record(n)
                payload = UsageMessage.from_record(record).to_json()
                while True:
                    try:
                        await js.publish(usage_subject(record.account_id), payload,
                                         stream=STREAM_NAME,
                                         headers={"Nats-Msg-Id": usage_message_id(record)})
                        break
                    except Exception:  # no server, no stream yet, timeout: try again
                        self.failures += 1
                        await asyncio.sleep(RETRY_PAUSE_SECONDS)
                self.acked.append(record)
                self.acked_at.append(time.monotonic())
                n += 1
                await asyncio.sleep(PRODUCER_PAUSE_SECONDS)
        finally:
            await connection.close()


def retrying(function: Callable[..., T], *args: object) -> T:
    """Reading while `ledger up` (re)starts: it may be creating its tables at that moment."""
    for attempt in range(READ_ATTEMPTS):
        try:
            return function(*args)
        except (PersistenceError, psycopg.Error):
            if attempt == READ_ATTEMPTS - 1:
                raise
            time.sleep(RETRY_PAUSE_SECONDS)
    raise AssertionError("unreachable")


def charged_count(database_url: str, priced: list[PricedAccount]) -> tuple[int, dict[str, int]]:
    ledger = open_ledger(database_url)
    try:
        count = sum(ledger.get_account(a.account_id).usage_count for a in priced)
        spent = {str(a.account_id): ledger.get_account(a.account_id).spent_nanos
                 for a in priced}
        return count, spent
    finally:
        ledger.close()


def is_charged(database_url: str, record: UsageRecord) -> bool:
    from services.keyed_recording import USAGE_SCOPE

    ledger = open_ledger(database_url)
    try:
        return bool(ledger.keyed.select_keys(USAGE_SCOPE, [record.usage_id]))
    finally:
        ledger.close()


def opened_accounts(database_url: str, team_key: str) -> list[PricedAccount]:
    ledger = open_ledger(database_url)
    try:
        return accounts(ledger, ACCOUNTS, team_key=team_key)
    finally:
        ledger.close()


async def wait_for_file(path: Path, up: LedgerUp) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not path.exists():
        assert up.process is not None
        if up.process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"ledger up did not start:\n{up.output()[-3000:]}")
        await asyncio.sleep(0.2)


async def drain(database_url: str, producer: Producer, priced: list[PricedAccount]) -> None:
    """Wait until every acknowledged record is charged; then compare count and cost."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    while True:
        count, spent = await asyncio.to_thread(retrying, charged_count, database_url, priced)
        if count >= len(producer.acked) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert len(producer.acked) >= RECORDS_MIN, len(producer.acked)
    # Each record once: as many charges as acknowledged records, and exactly their cost.
    assert count == len(producer.acked), (count, len(producer.acked))
    assert spent == expected_spent(producer.acked)
    missing = [r.usage_id for r in producer.acked[-50:]
               if not await asyncio.to_thread(retrying, is_charged, database_url, r)]
    assert missing == []


def test_kill_9_of_the_ledger_up_group_loses_and_doubles_nothing(crash_folder: Path) -> None:
    data_dir = crash_folder / "data"
    rng = random.Random(SEED)

    async def scenario() -> None:
        up = LedgerUp(data_dir, crash_folder / "up.log").start()
        written = json.loads(servers_file(data_dir).read_text())
        database_url = written["database_url"]
        priced = retrying(opened_accounts, database_url, "crash")
        producer = Producer(written["producer_nats_url"], priced, random.Random(SEED))
        producing = asyncio.create_task(producer.run())
        try:
            for kill in range(KILLS):
                if rng.random() < KILL_DURING_START_SHARE:
                    await asyncio.sleep(rng.uniform(*KILL_DURING_START_SECONDS))
                else:
                    await wait_for_file(servers_file(data_dir), up)
                    await asyncio.sleep(rng.uniform(*KILL_WHILE_RUNNING_SECONDS))
                await asyncio.to_thread(up.kill_group)
                assert producing.done() is False
                print(f"kill {kill + 1}: {len(producer.acked)} acknowledged so far")
                up = LedgerUp(data_dir, crash_folder / "up.log").start(wait=False)
            await wait_for_file(servers_file(data_dir), up)
            producer.stopping = True
            await asyncio.wait_for(producing, DRAIN_TIMEOUT_SECONDS)
            await drain(database_url, producer, priced)
            print(f"{KILLS} kills: {len(producer.acked)} records acknowledged, all charged "
                  f"once; {producer.failures} publish attempts failed and were retried")
        finally:
            producer.stopping = True
            if up.process is not None and up.process.poll() is None:
                up.interrupt()
            if not producing.done():
                producing.cancel()
        assert "Traceback" not in up.output()

    asyncio.run(scenario())


def pg_ctl_restart_immediately(server: EmbeddedPostgres) -> None:
    owner = server.pgdata.stat()
    # Its own log: the server's first log file belongs to whoever started it.
    result = subprocess.run([str(postgres_bin_dir() / "pg_ctl"), "-D", str(server.pgdata),
                             "-m", "immediate", "-w", "-t", "60",
                             "-l", str(server.data_dir / "pg_ctl.log"), "restart"],
                            capture_output=True, text=True, user=owner.st_uid,
                            group=owner.st_gid, extra_groups=[], cwd=server.pgdata)
    assert result.returncode == 0, result.stdout + result.stderr


def test_database_restarts_under_load_lose_and_double_nothing(crash_folder: Path) -> None:
    rng = random.Random(SEED)
    database = EmbeddedPostgres(crash_folder / "external-postgres").start()
    database_url = database.create_database("ledger")
    data_dir = crash_folder / "data"
    recoveries: list[float] = []

    async def scenario() -> None:
        up = LedgerUp(data_dir, crash_folder / "up.log",
                      LEDGER_DATABASE_URL=database_url).start()
        priced = retrying(opened_accounts, database_url, "restart")
        written = json.loads(servers_file(data_dir).read_text())
        producer = Producer(written["producer_nats_url"], priced, random.Random(SEED))
        producing = asyncio.create_task(producer.run())
        try:
            for restart in range(DATABASE_RESTARTS):
                await asyncio.sleep(rng.uniform(*RESTART_EVERY_SECONDS))
                while not producer.acked:
                    await asyncio.sleep(0.1)
                last = producer.acked[-1]
                began = time.monotonic()
                await asyncio.to_thread(pg_ctl_restart_immediately, database)
                while not await asyncio.to_thread(retrying, is_charged, database_url, last):
                    assert time.monotonic() - began < RECOVERY_TIMEOUT_SECONDS, \
                        f"not recovered:\n{up.output()[-3000:]}"
                    await asyncio.sleep(0.1)
                recoveries.append(time.monotonic() - began)
                print(f"restart {restart + 1}: recovered in {recoveries[-1]:.1f}s")
            producer.stopping = True
            await asyncio.wait_for(producing, DRAIN_TIMEOUT_SECONDS)
            await drain(database_url, producer, priced)
            assert up.process is not None and up.process.poll() is None
            # One line per failure while the database was away, never a traceback.
            assert "Traceback" not in up.output(), up.output()[-3000:]
        finally:
            producer.stopping = True
            if up.process is not None and up.process.poll() is None:
                assert up.interrupt() == 0, up.output()[-3000:]
            if not producing.done():
                producing.cancel()
        print(f"{DATABASE_RESTARTS} database restarts: {len(producer.acked)} records, all "
              f"charged once; recovery {min(recoveries):.1f}-{max(recoveries):.1f}s")

    try:
        asyncio.run(scenario())
    finally:
        database.stop()
