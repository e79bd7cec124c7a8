"""`POST /v1/usage` against the service layer in the same run.

Both sides record the same records (priced, idempotent, one event each) into their own fresh
database on one embedded PostgreSQL (durable: fsync on):
- service: `Ledger.record_usage_batch` in batches of `--batch`, in this process, with the
  collector settings `ledger serve` runs with (adapters.runtime.collector);
- http: the API served by uvicorn in its own process (as `ledger serve` runs it), fed batches of
  `--batch` records as JSON by `--clients` concurrent clients in this process, each record
  answered recorded/duplicate/rejected. Every record must come back "recorded".

Goal (issue 11): HTTP at least 0.5x the service layer's records/s.
Run: `uv run --locked python bench/http_usage.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.nats.usage_contract import UsageMessage
from adapters.runtime.collector import tune_collector
from bench.http_reads import free_port, serve, wait_ready
from bench.ingest_common import bench_servers, machine, priced_accounts
from bench.record_usage import make_records
from domain.usage import UsageRecord

console = Console()

RECORDS_DEFAULT = 20_000
BATCH_DEFAULT = 500
CLIENTS_DEFAULT = 2
ACCOUNTS = 20
REQUEST_TIMEOUT_SECONDS = 60.0


def setup(database_url: str) -> list[UUID]:
    from adapters.runtime.composition import open_ledger

    ledger = open_ledger(database_url)
    try:
        return [a.account_id for a in priced_accounts(ledger, ACCOUNTS)]
    finally:
        ledger.close()


def publisher_token(database_url: str) -> str:
    from adapters.runtime.composition import open_ledger
    from services.actor import Actor
    from services.tokens import Tokens

    ledger = open_ledger(database_url)
    try:
        return Tokens(ledger).issue(kind="service", subject="bench-gateway", name="bench",
                                    scopes=["usage:publish"], expires_at=None,
                                    actor=Actor.operator("bench")).secret
    finally:
        ledger.close()


def bench_service(database_url: str, records: list[UsageRecord], batch: int) -> float:
    from adapters.runtime.composition import open_ledger

    ledger = open_ledger(database_url)
    try:
        started = time.perf_counter()
        for offset in range(0, len(records), batch):
            outcome = ledger.record_usage_batch(records[offset:offset + batch])
            assert len(outcome.recorded) == len(records[offset:offset + batch])
        return time.perf_counter() - started
    finally:
        ledger.close()


async def post_all(base: str, token: str, bodies: list[bytes], clients: int) -> int:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    recorded = 0
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def client() -> None:
        nonlocal recorded
        async with httpx.AsyncClient(base_url=base, timeout=REQUEST_TIMEOUT_SECONDS) as http:
            while not queue.empty():
                body = queue.get_nowait()
                answer = await http.post("/v1/usage", content=body, headers=headers)
                assert answer.status_code == 200, answer.text[:500]
                results = answer.json()["results"]
                assert all(r["outcome"] == "recorded" for r in results), results[:3]
                recorded += len(results)

    await asyncio.gather(*(client() for _ in range(clients)))
    return recorded


def bench_http(database_url: str, nats_url: str, records: list[UsageRecord], batch: int,
               clients: int, workers: int) -> float:
    token = publisher_token(database_url)
    bodies = [b'{"records": [' + b",".join(UsageMessage.from_record(r).to_json()
                                             for r in records[offset:offset + batch]) + b"]}"
              for offset in range(0, len(records), batch)]
    port = free_port()
    server = serve(database_url, nats_url, port, workers)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base)
        started = time.perf_counter()
        recorded = asyncio.run(post_all(base, token, bodies, clients))
        seconds = time.perf_counter() - started
        assert recorded == len(records), recorded
        return seconds
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextlib.contextmanager
def collector_as_served() -> Iterator[None]:
    """The collector settings `ledger serve` runs with (adapters.runtime.collector), for the
    service-layer baseline only: the clients in this process keep CPython's defaults."""
    thresholds = gc.get_threshold()
    tune_collector()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=RECORDS_DEFAULT)
    parser.add_argument("--batch", type=int, default=BATCH_DEFAULT)
    parser.add_argument("--clients", type=int, default=CLIENTS_DEFAULT)
    parser.add_argument("--workers", type=int, default=1,
                        help="HTTP worker processes of the served API (LEDGER_HTTP_WORKERS)")
    args = parser.parse_args()
    with bench_servers() as servers:
        service_url, http_url = servers.database("service"), servers.database("http")
        with console.status("setting up two ledgers"):
            service_accounts, http_accounts = setup(service_url), setup(http_url)
        with console.status(f"service layer: {args.records} records"):
            service_records = make_records(service_accounts, args.records)
            with collector_as_served():
                service_seconds = bench_service(service_url, service_records, args.batch)
        with console.status(f"POST /v1/usage: {args.records} records"):
            http_seconds = bench_http(http_url, servers.nats_url,
                                      make_records(http_accounts, args.records), args.batch,
                                      args.clients, args.workers)
    service_rate, http_rate = args.records / service_seconds, args.records / http_seconds
    table = Table(title=f"{args.records} records, batches of {args.batch}; {machine()}")
    for column in ("path", "seconds", "records/s", "vs service"):
        table.add_column(column, justify="right")
    table.add_row("service layer", f"{service_seconds:.2f}", f"{service_rate:,.0f}", "1.00x")
    table.add_row(f"POST /v1/usage ({args.clients} clients, {args.workers} worker(s))",
                  f"{http_seconds:.2f}",
                  f"{http_rate:,.0f}", f"{http_rate / service_rate:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
