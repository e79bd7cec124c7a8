"""Shared parts of the ingestion benchmarks: embedded servers, priced accounts, consumer processes.

Every benchmark starts its own embedded PostgreSQL (durable: fsync on, as in production) and
NATS (JetStream file storage) in a temporary folder, on free ports, and removes them at the end.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import psutil

from adapters.nats.ingest_settings import IngestSettings
from adapters.runtime.embedded_nats import EmbeddedNats
from adapters.runtime.embedded_postgres import EmbeddedPostgres
from adapters.runtime.priced_teams import PricedAccount, numbered_keys, open_priced_team
from domain.pricing import PriceTerms
from services.actor import Actor
from services.ledger import Ledger

REPO_ROOT = Path(__file__).resolve().parents[1]
TERMS = PriceTerms(request_nanos=40_000, input_token_nanos=3_000, cached_input_token_nanos=300,
                   output_token_nanos=15_000)
CONSUMER_READY_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class BenchServers:
    postgres: EmbeddedPostgres
    nats_url: str
    folder: Path
    nats_pid: int

    def nats_cpu_seconds(self) -> float:
        return process_cpu_seconds(self.nats_pid)

    def database(self, name: str) -> str:
        return self.postgres.create_database(name)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time one process has used so far."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


@contextmanager
def bench_servers() -> Iterator[BenchServers]:
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as folder:
        Path(folder).chmod(0o711)  # as root, PostgreSQL's own user passes through
        postgres = EmbeddedPostgres(Path(folder) / "postgres").start()
        nats_server = EmbeddedNats(Path(folder) / "nats").start()
        try:
            assert nats_server.process is not None
            yield BenchServers(postgres, nats_server.url, Path(folder), nats_server.process.pid)
        finally:
            nats_server.stop()
            postgres.stop()


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    memory_gib = psutil.virtual_memory().total / 2**30
    return (f"{os.cpu_count()} cores ({cpu}), {memory_gib:.0f} GiB RAM, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}")


class MachineCpuReading(NamedTuple):
    idle_share: float  # of all cores; near 0: the run was bound by the machine's CPU
    busy_seconds: float  # CPU time all cores spent on anything but idling


class MachineCpu:
    """The whole machine's CPU between `__init__` and `reading()` (system-wide CPU times).

    A reading gives the idle share of all cores (near 0 means the run was bound by the
    machine's CPU, not by one process) and the busy time of all cores (every process:
    PostgreSQL, NATS, the publisher, the consumers, the kernel), both over the same span:
    divided by the records, the busy time is the whole machine's CPU per record, the figure a
    2-core machine's rate is bound by (`cpu_ceiling`)."""

    def __init__(self) -> None:
        self.before = psutil.cpu_times()

    def reading(self) -> MachineCpuReading:
        after = psutil.cpu_times()
        spent = sum(after) - sum(self.before)
        idle = (after.idle + after.iowait) - (self.before.idle + self.before.iowait)
        return MachineCpuReading(idle / spent if spent > 0 else 0.0, spent - idle)


def cpu_ceiling(machine_us_per_record: float) -> float:
    """The most records/s this machine's cores can give at this much CPU per record (every core
    busy all the time, nothing waiting): the bound on any rate, whatever the pipeline does."""
    cores = os.cpu_count() or 1
    return cores * 1e6 / machine_us_per_record if machine_us_per_record > 0 else 0.0


def priced_accounts(ledger: Ledger, count: int) -> list[PricedAccount]:
    return open_priced_team(ledger, team_key="bench", terms=TERMS, owner=Actor("bench-owner"),
                            account_keys=numbered_keys("account-", count)).accounts




class ConsumerProcesses:
    """`ledger consume` processes sharing the partitions, ready once each wrote a heartbeat."""

    def __init__(self, database_url: str, nats_url: str, settings: IngestSettings,
                 count: int, folder: Path, checkout: Path = REPO_ROOT) -> None:
        """`checkout`: the source tree (with its own `.venv`) the processes run from; another
        checkout compares two versions of the consumer in one run."""
        python = (sys.executable if checkout == REPO_ROOT
                  else str(checkout / ".venv" / "bin" / "python"))
        self.processes: list[subprocess.Popen[bytes]] = []
        self.heartbeats = [folder / f"consumer-{m}.heartbeat" for m in range(count)]
        for member, heartbeat in enumerate(self.heartbeats):
            heartbeat.unlink(missing_ok=True)
            env = {**os.environ, "LEDGER_DATABASE_URL": database_url,
                   "LEDGER_NATS_URL": nats_url, "LEDGER_HEALTH_FILE": str(heartbeat),
                   "LEDGER_USAGE_PARTITIONS": str(settings.partitions),
                   "LEDGER_INGEST_BATCH_SIZE": str(settings.batch_size),
                   "LEDGER_INGEST_WAIT_MS": str(settings.wait_ms),
                   "LEDGER_INGEST_IN_FLIGHT_MAX": str(settings.in_flight_max)}
            log = (folder / f"consumer-{member}.log").open("wb")
            self.processes.append(subprocess.Popen(
                [python, "-m", "adapters.cli", "consume", "--member", str(member),
                 "--members", str(count)], env=env, cwd=checkout, stdout=log,
                stderr=subprocess.STDOUT))

    def wait_ready(self) -> None:
        deadline = time.monotonic() + CONSUMER_READY_TIMEOUT_SECONDS
        while not all(h.exists() for h in self.heartbeats):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                raise RuntimeError("consumer processes did not start; see their logs in "
                                   f"{self.heartbeats[0].parent}")
            time.sleep(0.1)

    def rss_bytes(self) -> int:
        total = 0
        for process in self.processes:
            with suppress(psutil.NoSuchProcess):
                total += psutil.Process(process.pid).memory_info().rss
        return total

    def cpu_seconds(self) -> float:
        """User + system CPU time of the consumer processes so far."""
        total = 0.0
        for process in self.processes:
            with suppress(psutil.NoSuchProcess):
                total += process_cpu_seconds(process.pid)
        return total

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
