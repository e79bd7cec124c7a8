"""Benchmark: catch-up rate of all projections, against the raw notification-log read rate,
and the commit-to-projection lag at a steady usage rate.

    uv run python bench/projections_catchup.py [--events 1000000] [--lag-seconds 20]

Starts its own durable embedded PostgreSQL in a temporary folder on a free port (or uses
LEDGER_BENCH_DATABASE_URL, a server whose user may CREATE DATABASE). Then, in one run:

1. build:   a log of --events events through the real service: teams, top-ups, accounts with
            packages, and usage via `Ledger.record_usage_batch` in batches of 10,000 (most of the
            log is `Account.UsageRecorded`, as in production).
2. raw:     read the whole notification log, (a) with the library's `select_notifications` in
            pages of 5,000 and (b) with the projections' own binary reader: no decoding.
3. catchup: build every read model (balances, usage buckets, audit chain, lists) from position 0
            with the projection runner, in batches; events/s and the ratio to the raw rates.
4. lag:     the runner follows the log (LISTEN/NOTIFY) while a writer process records
            --lag-rate usage records/s, one batch per --lag-tick-seconds (0.25 s); lag = wall
            time from a writer commit to the commit of the projection batch that covers it;
            p50/p99/max in ms.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import random
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from rich.console import Console
from rich.progress import Progress

from adapters.postgres.notification_log import PostgresNotificationLog
from adapters.runtime.collector import tune_collector
from adapters.runtime.embedded_postgres import EmbeddedPostgres
from adapters.runtime.priced_teams import numbered_keys, open_priced_team
from adapters.runtime.projection_process import open_runner
from adapters.runtime.settings import eventsourcing_env
from domain.pricing import PriceTerms
from domain.usage import UsageRecord
from services.actor import Actor
from services.ledger import Ledger

MODELS = ("model-small", "model-large", "model-code", "model-vision")
TIMEZONES = ("UTC", "Europe/Berlin", "America/New_York", "Pacific/Auckland", "Asia/Kolkata")
RECORD_BATCH = 10_000
READ_PAGE = 5_000
console = Console()


def build_log(ledger: Ledger, events: int, teams: int, accounts_per_team: int) -> int:
    terms = PriceTerms(request_nanos=100_000, input_token_nanos=3_000,
                       cached_input_token_nanos=300, output_token_nanos=15_000)
    since = datetime.now(UTC) - timedelta(days=120)
    account_ids: list[UUID] = []
    for t in range(teams):
        account_ids += open_priced_team(
            ledger, team_key=f"team{t}", owner=Actor("owner"), package_key="bench", terms=terms,
            since=since, timezone=TIMEZONES[t % len(TIMEZONES)], top_up_minor=10_000_000,
            credit_limit_nanos=10**12,
            account_keys=numbered_keys("a", accounts_per_team)).account_ids
    rng = random.Random(7)
    head = ledger.recorder.max_notification_id() or 0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("building the log", total=events, completed=head)
        n = 0
        while head < events:
            size = min(RECORD_BATCH, events - head)
            records = [UsageRecord(
                usage_id=f"bench-{n + i}", account_id=account_ids[rng.randrange(len(account_ids))],
                occurred_at=since + timedelta(seconds=rng.randrange(0, 120 * 86400)),
                model=MODELS[rng.randrange(len(MODELS))], success=rng.random() > 0.05,
                input_tokens=rng.randint(100, 20_000), output_tokens=rng.randint(10, 4_000),
                cached_input_tokens=rng.randint(0, 5_000)) for i in range(size)]
            n += size
            ledger.record_usage_batch(records)
            head = ledger.recorder.max_notification_id() or 0
            progress.update(task, completed=head)
    return head


def raw_library_rate(ledger: Ledger) -> tuple[int, float]:
    started, count, position = time.perf_counter(), 0, 0
    while True:
        page = ledger.recorder.select_notifications(position + 1, READ_PAGE)
        if not page:
            return count, time.perf_counter() - started
        count += len(page)
        position = page[-1].id


def raw_reader_rate(url: str) -> tuple[int, float]:
    log = PostgresNotificationLog(url)
    started, count, position = time.perf_counter(), 0, 0
    while True:
        page = log.read_after(position, READ_PAGE)
        if not page:
            log.close()
            return count, time.perf_counter() - started
        count += len(page)
        position = page[-1].position


def catch_up_rate(url: str, head: int) -> tuple[int, float]:
    with open_runner(url) as runner, Progress(console=console, transient=True) as progress:
        task = progress.add_task("projections catching up", total=head)
        started = time.perf_counter()
        count = runner.catch_up(on_batch=lambda n: progress.advance(task, n))
        return count, time.perf_counter() - started


def _writer(url: str, account_ids: list[str], rate: int, seconds: float, tick_seconds: float,
            results: Any) -> None:
    """A separate process recording `rate` usage records/s; sends back (last id, commit time)."""
    ledger = Ledger(env=eventsourcing_env(url))
    ids = [UUID(a) for a in account_ids]
    now = datetime.now(UTC)
    # Warm up: load every account into the service's cache before the clock starts.
    ledger.record_usage_batch([UsageRecord(
        usage_id=f"warm-{n}", account_id=a, occurred_at=now, model=MODELS[0], success=True,
        input_tokens=1, output_tokens=1) for n, a in enumerate(ids)])
    commits: list[tuple[int, float]] = []
    # The commit time is taken where the recorder's insert returns, right after the database
    # commit: the service does more work before record_usage_batch returns.
    insert_events = ledger.recorder.insert_events

    def timed_insert(stored_events: Any, **kwargs: Any) -> Any:
        notification_ids = insert_events(stored_events, **kwargs)
        if notification_ids:
            commits.append((max(notification_ids), time.time()))
        return notification_ids

    ledger.recorder.insert_events = timed_insert  # type: ignore[method-assign]
    per_tick = int(rate * tick_seconds)
    rng = random.Random(11)
    started = time.perf_counter()
    tick = 0
    while time.perf_counter() - started < seconds:
        now = datetime.now(UTC)
        ledger.record_usage_batch([UsageRecord(
            usage_id=f"lag-{tick}-{i}", account_id=ids[rng.randrange(len(ids))],
            occurred_at=now, model=MODELS[i % len(MODELS)], success=True, input_tokens=500,
            output_tokens=100) for i in range(per_tick)])
        tick += 1
        time.sleep(max(0.0, started + tick * tick_seconds - time.perf_counter()))
    ledger.close()
    results.put((commits, time.perf_counter() - started))


def measure_lag(url: str, rate: int, seconds: float,
                tick_seconds: float) -> tuple[list[float], float]:
    """Lag in ms from each writer commit to the projection commit that covers it, and the
    rate the writer achieved. The writer is another process, as the gateway's consumers are:
    in this one it would share the interpreter lock with the projections."""
    projected: list[tuple[int, float]] = []  # (tracking position, wall time) per batch
    stop = threading.Event()
    with open_runner(url) as runner:
        runner.catch_up()
        original = runner.store.finish

        def timed_finish(staged: Any) -> None:
            original(staged)
            projected.append((staged.changes.last_position, time.time()))

        runner.store.finish = timed_finish  # type: ignore[method-assign]
        follower = threading.Thread(target=runner.run_forever, args=(stop,))
        follower.start()
        with psycopg.connect(url) as conn:
            account_ids = [str(r[0]) for r in conn.execute(
                "SELECT account_id FROM ledger_views.accounts")]
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        writer = context.Process(target=_writer, args=(url, account_ids, rate, seconds,
                                                          tick_seconds, results))
        writer.start()
        commits, writer_seconds = results.get()
        writer.join()
        deadline = time.perf_counter() + 30
        while (not projected or projected[-1][0] < commits[-1][0]) and \
                time.perf_counter() < deadline:
            time.sleep(0.01)
        stop.set()
        follower.join()
    lags = []
    for position, committed in commits:
        covered = next(t for p, t in projected if p >= position)
        lags.append((covered - committed) * 1000)
    records = len(commits) * int(rate * tick_seconds)
    return lags, records / writer_seconds


def _log_length(admin: str, url: str) -> int:
    """How many events an existing bench database holds (0 when there is none)."""
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'bench_projections'"
                        ).fetchone() is None:
            return 0
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('ledger_events')").fetchone() == (None,):
            return 0
        row = conn.execute("SELECT coalesce(max(notification_id), 0) FROM ledger_events"
                           ).fetchone()
        return int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--teams", type=int, default=20)
    parser.add_argument("--accounts", type=int, default=50, help="accounts per team")
    parser.add_argument("--lag-rate", type=int, default=1000, help="usage records per second")
    parser.add_argument("--lag-seconds", type=float, default=20.0)
    parser.add_argument("--lag-tick-seconds", type=float, default=0.25,
                        help="the writer commits one batch per tick (rate x tick records)")
    parser.add_argument("--reuse-log", action="store_true",
                        help="keep an existing bench_projections database whose log already holds "
                             "--events events (drop only its read models); for repeated runs")
    parser.add_argument("--skip-lag", action="store_true", help="measure the catch-up only")
    args = parser.parse_args()
    # As `ledger project` and `ledger up` run the runner (adapters.runtime.collector); the raw
    # reads, measured in this process too, get the same settings.
    tune_collector()
    with tempfile.TemporaryDirectory(prefix="bench-projections-") as folder:
        Path(folder).chmod(0o711)  # as root, PostgreSQL's own user passes through
        external = os.environ.get("LEDGER_BENCH_DATABASE_URL")
        server = None
        if external:
            admin = external
        else:
            server = EmbeddedPostgres(Path(folder) / "pg", durable=True).start()
            admin = server.url
        url = admin.rsplit("/", 1)[0] + "/bench_projections"
        reused = args.reuse_log and _log_length(admin, url) >= args.events
        if not reused:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute("DROP DATABASE IF EXISTS bench_projections")
                conn.execute("CREATE DATABASE bench_projections")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS ledger_views CASCADE")
        ledger = Ledger(env=eventsourcing_env(url))
        try:
            started = time.perf_counter()
            if reused:
                head = ledger.recorder.max_notification_id() or 0
                console.print(f"log reused: {head:,} events")
            else:
                head = build_log(ledger, args.events, args.teams, args.accounts)
                console.print(f"log built: {head:,} events in "
                              f"{time.perf_counter() - started:.0f}s")
            # A long-lived events table has planner statistics (the library's table sets
            # autovacuum_analyze_scale_factor 0.01); a freshly bulk-loaded one has none yet,
            # and then pages are read with a bitmap scan and a sort. Both readers benefit.
            # And a checkpoint: the build leaves a gigabyte of dirty pages and WAL, whose
            # write-back would otherwise land on whichever measurement runs next.
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE ledger_events")
                try:
                    conn.execute("CHECKPOINT")
                except psycopg.errors.InsufficientPrivilege:
                    console.print("note: no CHECKPOINT (needs superuser or pg_checkpoint)")
            lib_count, lib_seconds = raw_library_rate(ledger)
            raw_count, raw_seconds = raw_reader_rate(url)
            count, seconds = catch_up_rate(url, head)
            lib_rate, raw_rate, rate = (lib_count / lib_seconds, raw_count / raw_seconds,
                                        count / seconds)
            console.print(f"machine: {platform.platform()}, {os.cpu_count()} cores, "
                          f"Python {platform.python_version()}")
            console.print(f"raw read, library select_notifications: {lib_rate:,.0f} events/s "
                          f"({lib_count:,} in {lib_seconds:.1f}s)")
            console.print(f"raw read, projections' binary reader:   {raw_rate:,.0f} events/s "
                          f"({raw_count:,} in {raw_seconds:.1f}s)")
            console.print(f"catch-up of all projections:            {rate:,.0f} events/s "
                          f"({count:,} in {seconds:.1f}s); {rate / lib_rate:.2f}x the library "
                          f"read rate, {rate / raw_rate:.2f}x the binary read rate")
            if args.skip_lag:
                return
            lags, achieved = measure_lag(url, args.lag_rate, args.lag_seconds,
                                         args.lag_tick_seconds)
            lags.sort()
            p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
            console.print(f"lag at {args.lag_rate} records/s (writer process achieved "
                          f"{achieved:,.0f}/s) over {len(lags)} writer commits: "
                          f"p50 {statistics.median(lags):.0f} ms, p99 {p99:.0f} ms, "
                          f"max {lags[-1]:.0f} ms")
        finally:
            ledger.close()
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
