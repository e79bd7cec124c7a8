"""Benchmark: sustained end-to-end ingest over NATS JetStream, against the service layer alone.

    uv run python bench/ingest_sustained.py [--records 300000] [--accounts 1000]
                                             [--consumers 1] [--baseline-records 100000]
                                             [--baseline-rounds 3] [--rounds 1] [--drain]
                                             [--paired] [--goal 0.6]
                                             [--compare-checkout DIR]

On one machine (everything on it: embedded PostgreSQL with fsync on, embedded NATS with file
storage, the publisher in this process, `ledger consume` processes):

1. service:  `Ledger.record_usage_batch` straight into PostgreSQL, batches of 1000, in a fresh
             database: the ceiling for the bus path (the core issue's service-layer figure);
             --baseline-rounds times, each in its own database, and the best is divided by.
2. ingest:   publish --records records as fast as the publisher can (pipelined, each with
             Nats-Msg-Id), and measure the rate at which the ledger commits them, from the first
             publish to the moment the ledger's `usage_recorded` counter reaches --records;
             --rounds times, each in its own database and stream. With --rounds as many as
             --baseline-rounds, the best end-to-end round is divided by the best service round:
             the same estimator on both sides (one round against the best of three reads low
             on a noisy machine). Every round's ratio is printed too.

   With --paired, --rounds pairs instead: a service round, then an end-to-end round, each
             pair's ratio printed and their median reported beside the best/best ratio. On a
             VM whose speed drifts within minutes (the service layer alone read 25,000 and
             33,000 records/s twenty minutes apart on 2026-12-04), the two sides of a pair ran
             on the same VM, so the pair's ratio is the figure that survives the drift.

3. drain:   (with --drain) the same records published first with no consumer running, then
             the consumer processes started: the rate at which they drain the backlog, from
             their first commit to the last. The publisher's CPU (which in production runs on
             the producers' machines) is then not on these 2 cores while the ledger consumes.

Warm-up (unless --cold): before timing, each path charges one record per account, so both
time a process whose account cache is warm, as a long-running consumer's is. Until 2026-12-04
neither warmed up: a fresh process loads each account from the event store on its first record,
one after another (~350 ms for 500 accounts here), which was ~19% of a 50,000-record service
round and ~5% of a 100,000-record end-to-end round, so the ratio read high. The drain publishes
the warm-up records first and times from the moment they are all committed.

Prints the rates and the ratios to the service layer. Records are made before timing starts.
With each consumer figure: how busy each consumer process was (share of one core: its
interpreter lock allows one) and how idle the whole machine was, so a run bound by the
consumer's own pipeline (busy well under 100%, cores idle) reads apart from one bound by the
machine's CPU (nothing idle: the publisher, NATS and PostgreSQL share the cores). End to end,
also the NATS server's CPU per record and this process's (the publisher, and the watcher
thread polling PostgreSQL), so the three shares of the cores are read from one run.

The whole machine's CPU per record (all cores' busy time, every process: PostgreSQL and the
kernel too) is measured for the service layer and for each consumer figure, with the ceiling it
sets: at that CPU per record, with every core busy all the time, the rate could be at most
cores / CPU per record. Divided by the service layer's rate, that ceiling says whether a ratio
goal is reachable at all on this machine before any pipeline is tuned; the share of it a run
reached says how much time went to waiting. With a ratio goal (--goal; by default issue 10's:
0.6x for one consumer process, 0.8x for two), the budget it allows the whole machine per record,
less the service layer's own share of it: what the bus path (publisher, NATS, delivery,
decoding, acks) may cost at most, against what it cost in the run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ingest_common import (
    REPO_ROOT,
    BenchServers,
    ConsumerProcesses,
    MachineCpu,
    bench_servers,
    cpu_ceiling,
    machine,
    priced_accounts,
)
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from adapters.nats.ingest_settings import IngestSettings
from adapters.nats.streams import recreate_stream
from adapters.nats.usage_publisher import UsagePublisher
from adapters.runtime.collector import tune_collector
from adapters.runtime.composition import open_ledger
from adapters.runtime.demo import PricedAccount, realistic_record
from domain.usage import UsageRecord
from services.ledger import Ledger

console = Console()
SERVICE_BATCH_RECORDS = 1000
POLL_INTERVAL_SECONDS = 0.1
INGEST_TIMEOUT_SECONDS = 600.0
# Rounds of either kind in one run (each takes a fresh database, and up to minutes).
ROUNDS_MAX = 10
BASELINE_ROUNDS_DEFAULT = 3
# Issue 10's goals: end to end at least this share of the service layer, by consumer processes.
GOAL_RATIOS = {1: 0.6, 2: 0.8}


def make_records(accounts: list[PricedAccount], count: int, prefix: str) -> list[UsageRecord]:
    rng = random.Random(7)
    start = datetime.now(UTC) - timedelta(hours=1)
    return [realistic_record(rng, accounts[i % len(accounts)], f"{prefix}-{i}",
                             start + timedelta(microseconds=i))
            for i in range(count)]


@dataclass(frozen=True)
class ServiceRound:
    rate: float  # records/s
    machine_us_per_record: float  # the whole machine's CPU (this process and PostgreSQL)


def warmup_records(accounts: list[PricedAccount], prefix: str) -> list[UsageRecord]:
    """One record per account: charged before timing, it loads every account into the
    process's cache (see the module docstring)."""
    return make_records(accounts, len(accounts), f"{prefix}-warmup")


def bench_service(database_url: str, accounts_count: int, count: int, *,
                  warm: bool) -> ServiceRound:
    ledger = open_ledger(database_url)
    accounts = priced_accounts(ledger, accounts_count)
    records = make_records(accounts, count, "service")
    warmup = warmup_records(accounts, "service") if warm else []
    for offset in range(0, len(warmup), SERVICE_BATCH_RECORDS):
        ledger.record_usage_batch(warmup[offset:offset + SERVICE_BATCH_RECORDS])
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("service layer: record_usage_batch", total=count)
        machine_cpu = MachineCpu()
        started = time.perf_counter()
        for offset in range(0, count, SERVICE_BATCH_RECORDS):
            outcome = ledger.record_usage_batch(records[offset:offset + SERVICE_BATCH_RECORDS])
            assert not outcome.rejections and not outcome.duplicates
            progress.advance(task, SERVICE_BATCH_RECORDS)
        seconds = time.perf_counter() - started
        busy_seconds = machine_cpu.reading().busy_seconds
    assert ledger.keyed.counter_values()["usage_recorded"] == len(warmup) + count
    ledger.close()
    return ServiceRound(count / seconds, busy_seconds / count * 1e6)


async def fresh_ledger_and_stream(database_url: str, nats_url: str, args: argparse.Namespace,
                                  prefix: str
                                  ) -> tuple[IngestSettings, Ledger, list[UsageRecord],
                                             list[UsageRecord]]:
    """An empty usage stream, a ledger with --accounts priced accounts, --records records for
    them and the warm-up records (none with --cold), made before any timing starts."""
    settings = IngestSettings.from_env()
    await recreate_stream(nats_url, settings)
    ledger = open_ledger(database_url)
    accounts = priced_accounts(ledger, args.accounts)
    warmup = [] if args.cold else warmup_records(accounts, prefix)
    return settings, ledger, make_records(accounts, args.records, prefix), warmup


def recorded_count(ledger: Ledger) -> int:
    return ledger.keyed.counter_values().get("usage_recorded", 0)


async def bench_ingest(database_url: str, servers: BenchServers, args: argparse.Namespace,
                       checkout: Path = REPO_ROOT) -> dict[str, float]:
    nats_url, folder = servers.nats_url, servers.folder
    settings, ledger, records, warmup = await fresh_ledger_and_stream(
        database_url, nats_url, args, "ingest")
    consumers = ConsumerProcesses(database_url, nats_url, settings, args.consumers, folder,
                                  checkout)
    try:
        consumers.wait_ready()
        if warmup:
            async with await UsagePublisher.connect(nats_url) as publisher:
                await publisher.publish_many(warmup)
            deadline = time.perf_counter() + INGEST_TIMEOUT_SECONDS
            with console.status(f"end to end: warming up on {len(warmup):,} records"):
                while recorded_count(ledger) < len(warmup):
                    if time.perf_counter() > deadline:
                        raise RuntimeError("the warm-up records were not committed in "
                                           f"{INGEST_TIMEOUT_SECONDS}s")
                    await asyncio.sleep(POLL_INTERVAL_SECONDS)
        total = len(warmup) + args.records
        rss_peak = 0
        done = threading.Event()
        finished: dict[str, float] = {}

        def watch(started: float) -> None:
            # A thread, so the publisher's event loop does not delay the measurement.
            nonlocal rss_peak
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("ingest: committed in the ledger", total=args.records)
                while time.perf_counter() - started < INGEST_TIMEOUT_SECONDS:
                    recorded = recorded_count(ledger) - len(warmup)
                    rss_peak = max(rss_peak, consumers.rss_bytes())
                    progress.update(task, completed=recorded)
                    if recorded >= args.records:
                        finished["committed"] = time.perf_counter()
                        break
                    time.sleep(POLL_INTERVAL_SECONDS)
            done.set()

        cpu_before = consumers.cpu_seconds()
        nats_before, bench_before = servers.nats_cpu_seconds(), time.process_time()
        machine_cpu = MachineCpu()
        async with await UsagePublisher.connect(nats_url) as publisher:
            started = time.perf_counter()
            watcher = threading.Thread(target=watch, args=(started,), daemon=True)
            watcher.start()
            report = await publisher.publish_many(records)
            published = time.perf_counter()
        await asyncio.to_thread(done.wait)
        cpu_seconds = consumers.cpu_seconds() - cpu_before
        nats_seconds = servers.nats_cpu_seconds() - nats_before
        bench_seconds = time.process_time() - bench_before
        cpu_used = machine_cpu.reading()
        if "committed" not in finished:
            raise RuntimeError(f"not every record was committed in {INGEST_TIMEOUT_SECONDS}s")
        assert report.published == args.records
        assert recorded_count(ledger) == total
        return {"publish_rate": args.records / (published - started),
                "commit_rate": args.records / (finished["committed"] - started),
                "seconds": finished["committed"] - started,
                "rss_peak_mib": rss_peak / 2**20,
                "cpu_us_per_record": cpu_seconds / args.records * 1e6,
                "nats_us_per_record": nats_seconds / args.records * 1e6,
                "bench_us_per_record": bench_seconds / args.records * 1e6,
                "machine_us_per_record": cpu_used.busy_seconds / args.records * 1e6,
                "consumer_busy": cpu_seconds / (finished["committed"] - started) / args.consumers,
                "machine_idle": cpu_used.idle_share}
    finally:
        consumers.stop()
        ledger.close()


async def bench_drain(database_url: str, servers: BenchServers, args: argparse.Namespace,
                      checkout: Path = REPO_ROOT) -> dict[str, float]:
    nats_url, folder = servers.nats_url, servers.folder
    settings, ledger, records, warmup = await fresh_ledger_and_stream(
        database_url, nats_url, args, "drain")
    total = len(warmup) + args.records
    try:
        with console.status(f"drain: publishing a backlog of {args.records:,} records"):
            async with await UsagePublisher.connect(nats_url) as publisher:
                report = await publisher.publish_many(warmup + records)
        assert report.published == total
        consumers = ConsumerProcesses(database_url, nats_url, settings, args.consumers, folder,
                                      checkout)
        try:
            first: tuple[float, int] | None = None
            cpu_first = nats_first = 0.0
            deadline = time.perf_counter() + INGEST_TIMEOUT_SECONDS
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("drain: committed in the ledger", total=total)
                while True:
                    recorded = recorded_count(ledger)
                    now = time.perf_counter()
                    progress.update(task, completed=recorded)
                    # Timed from the first commit (cold: the first batch's accounts are
                    # loaded), or once the warm-up records are committed.
                    if first is None and recorded > 0 and recorded >= len(warmup):
                        first, cpu_first = (now, recorded), consumers.cpu_seconds()
                        nats_first = servers.nats_cpu_seconds()
                        machine_cpu = MachineCpu()
                    if recorded >= total:
                        break
                    if now > deadline:
                        raise RuntimeError(f"backlog not drained in {INGEST_TIMEOUT_SECONDS}s")
                    time.sleep(POLL_INTERVAL_SECONDS)
            assert first is not None
            drained = total - first[1]
            cpu_seconds = consumers.cpu_seconds() - cpu_first
            cpu_used = machine_cpu.reading()
            nats_seconds = servers.nats_cpu_seconds() - nats_first
            return {"drain_rate": drained / (now - first[0]),
                    "cpu_us_per_record": cpu_seconds / drained * 1e6,
                    "nats_us_per_record": nats_seconds / drained * 1e6,
                    "consumer_busy": cpu_seconds / (now - first[0]) / args.consumers,
                    "machine_idle": cpu_used.idle_share,
                    "machine_us_per_record": cpu_used.busy_seconds / drained * 1e6}
        finally:
            consumers.stop()
    finally:
        ledger.close()


def ingest_round(servers: BenchServers, args: argparse.Namespace, database: str, label: str,
                 checkout: Path = REPO_ROOT) -> dict[str, float]:
    """One end-to-end round in a fresh database and stream, printed whole."""
    result = asyncio.run(bench_ingest(servers.database(database), servers, args, checkout))
    console.print(f"{label}: {result}", markup=False)
    return result


def best_ingest_round(servers: BenchServers, args: argparse.Namespace, service_rate: float,
                      database_prefix: str, label: str, checkout: Path) -> dict[str, float]:
    """--rounds end-to-end rounds of one source tree, each in a fresh database and stream;
    every round is printed with its ratio, and the best is returned."""
    rounds = [ingest_round(servers, args, f"{database_prefix}_{number}",
                           f"{label}, round {number + 1}", checkout)
              for number in range(args.rounds)]
    if args.rounds > 1:
        console.print(f"{label}, end to end: " + ", ".join(
            f"{result['commit_rate']:,.0f} ({result['commit_rate'] / service_rate:.2f}x)"
            for result in rounds) + " records/s")
    return max(rounds, key=lambda result: result["commit_rate"])


def machine_budget(result: dict[str, float], service_rate: float,
                   consumers: int) -> tuple[str, str]:
    """The whole machine's CPU per record, what is left of it besides the measured processes,
    and the two ceilings on the rate: every core busy all the time (`cpu_ceiling`), and every
    consumer process busy all of its one core (its interpreter lock allows no more); the lower
    one binds, and the share of it the run reached is the rest: time spent waiting."""
    machine_us = result["machine_us_per_record"]
    ceiling = cpu_ceiling(machine_us)
    consumer_us = result["cpu_us_per_record"]
    processes_ceiling = consumers * 1e6 / consumer_us if consumer_us > 0 else 0.0
    binding = min(ceiling, processes_ceiling)
    rate = result.get("commit_rate", result.get("drain_rate", 0.0))
    named = sum(result.get(key, 0.0) for key in ("cpu_us_per_record", "nats_us_per_record",
                                                 "bench_us_per_record"))
    return (f"{machine_us:.0f} us/record",
            f"{machine_us - named:.0f} us of it outside the processes above (PostgreSQL, the "
            f"kernel); all cores busy, this CPU per record allows {ceiling:,.0f}/s = "
            f"{ceiling / service_rate:.2f}x the service layer; the consumer process(es), each "
            f"busy all of one core, {processes_ceiling:,.0f}/s = "
            f"{processes_ceiling / service_rate:.2f}x; reached {rate / binding:.0%} of the "
            "lower")


def paired_rounds(servers: BenchServers, args: argparse.Namespace
                  ) -> tuple[list[ServiceRound], list[dict[str, float]], float]:
    """--paired: --rounds pairs of a service round and an end-to-end round, back to back;
    returns both kinds of rounds and the median of the pairs' ratios."""
    services: list[ServiceRound] = []
    ingests: list[dict[str, float]] = []
    for number in range(args.rounds):
        services.append(bench_service(servers.database(f"bench_service_{number}"),
                                      args.accounts, args.baseline_records,
                                      warm=not args.cold))
        ingests.append(ingest_round(servers, args, f"bench_ingest_{number}",
                                    f"pair {number + 1}, end to end"))
        console.print(f"pair {number + 1}: service layer {services[-1].rate:,.0f}, end to end "
                      f"{ingests[-1]['commit_rate']:,.0f} records/s = "
                      f"{ingests[-1]['commit_rate'] / services[-1].rate:.2f}x")
    ratios = [ingest["commit_rate"] / service.rate for service, ingest
              in zip(services, ingests, strict=True)]
    return services, ingests, statistics.median(ratios)


def goal_budget(goal: float, service: ServiceRound, result: dict[str, float],
                cores: int) -> tuple[str, str]:
    """What a ratio goal allows the whole machine per record end to end, and how much of that
    is left for the bus path once the service layer's own work (measured alone) is paid."""
    allowed_us = cores * 1e6 / (goal * service.rate)
    bus_allowed_us = allowed_us - service.machine_us_per_record
    bus_measured_us = result["machine_us_per_record"] - service.machine_us_per_record
    return (f"<= {allowed_us:.0f} us/record",
            f"the whole machine's CPU per record that {goal}x of the service layer allows on "
            f"{cores} cores; the service layer's own work takes {service.machine_us_per_record:.0f}"
            f", leaving {bus_allowed_us:.0f} us for the bus path (publisher, NATS, delivery, "
            f"decoding, acks); it cost {bus_measured_us:.0f} us in this run (of it NATS "
            f"{result['nats_us_per_record']:.0f}, the bench process "
            f"{result['bench_us_per_record']:.0f})")


def bound_by(result: dict[str, float]) -> str:
    """Who limited the run: each consumer process's busy share of one core (its interpreter
    lock allows at most one) and the machine's idle share of all cores."""
    return (f"each consumer busy {result['consumer_busy']:.0%} of a core, machine idle "
            f"{result['machine_idle']:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--baseline-records", type=int, default=100_000)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--baseline-rounds", type=int, default=None,
                        help="service-layer rounds, each in a fresh database; the best is the "
                             f"baseline (default {BASELINE_ROUNDS_DEFAULT}; not with --paired)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="end-to-end rounds, each in a fresh database and stream; the best "
                             "is reported (as many as --baseline-rounds: like with like)")
    parser.add_argument("--consumers", type=int, default=1,
                        help="`ledger consume` processes sharing the partitions")
    parser.add_argument("--compare-checkout", type=Path, default=None,
                        help="another source tree with its own .venv (say, `git archive` of an "
                             "older commit, then `uv sync` in it): its consumer is measured "
                             "first, in the same run, against the same service-layer baseline "
                             "(as many --rounds; with --drain, its drain too)")
    parser.add_argument("--drain", action="store_true",
                        help="also drain a backlog published before the consumers start")
    parser.add_argument("--paired", action="store_true",
                        help="--rounds pairs of a service round then an end-to-end round; the "
                             "median of the pairs' ratios is reported too")
    parser.add_argument("--cold", action="store_true",
                        help="time from a cold account cache on both paths, as before "
                             "2026-12-04 (the ratio then reads high: see the module docstring)")
    parser.add_argument("--goal", type=float, default=None,
                        help="a ratio goal to print the bus path's CPU budget for (default: "
                             "issue 10's, 0.6 for one consumer process and 0.8 for two)")
    args = parser.parse_args()
    if args.paired and (args.baseline_rounds is not None or args.compare_checkout is not None):
        parser.error("--paired sets the service rounds itself (one per --rounds) and measures "
                     "this checkout only: leave out --baseline-rounds and --compare-checkout")
    if args.baseline_rounds is None:
        args.baseline_rounds = args.rounds if args.paired else BASELINE_ROUNDS_DEFAULT
    goal = args.goal if args.goal is not None else GOAL_RATIOS.get(args.consumers)
    if goal is not None and not 0 < goal <= 1:
        parser.error(f"--goal must be above 0 and at most 1, got {goal}")
    for name in ("rounds", "baseline_rounds"):
        if not 1 <= getattr(args, name) <= ROUNDS_MAX:
            parser.error(f"--{name.replace('_', '-')} must be 1 to {ROUNDS_MAX}, "
                         f"got {getattr(args, name)}")
    # The collector settings of `ledger consume` (adapters.runtime.collector), so the
    # service-layer baseline runs as the consumer process does.
    tune_collector()
    console.print(f"machine: {machine()}")
    settings = IngestSettings.from_env()
    console.print(f"settings: {settings}")
    paired_median = None
    with bench_servers() as servers:
        compared = None
        if args.paired:
            service_rounds, ingest_rounds, paired_median = paired_rounds(servers, args)
            best = max(service_rounds, key=lambda round_: round_.rate)
            service_rate = best.rate
            ingest = max(ingest_rounds, key=lambda result: result["commit_rate"])
        else:
            # The best of several baseline rounds: the service layer alone moved by up to 30%
            # between runs here, and the highest is the conservative ceiling to divide by.
            service_rounds = [bench_service(servers.database(f"bench_service_{n}"),
                                            args.accounts, args.baseline_records,
                                            warm=not args.cold)
                              for n in range(args.baseline_rounds)]
            best = max(service_rounds, key=lambda round_: round_.rate)
            service_rate = best.rate
            console.print("service layer: "
                          + ", ".join(f"{round_.rate:,.0f}" for round_ in service_rounds)
                          + " records/s")
            if args.compare_checkout is not None:
                compared = best_ingest_round(servers, args, service_rate, "bench_compared",
                                             args.compare_checkout.name,
                                             args.compare_checkout.resolve())
            ingest = best_ingest_round(servers, args, service_rate, "bench_ingest",
                                       "this checkout", REPO_ROOT)
        compared_drain = None
        if args.drain and args.compare_checkout is not None:
            compared_drain = asyncio.run(bench_drain(
                servers.database("bench_compared_drain"), servers, args,
                args.compare_checkout.resolve()))
        drain = (asyncio.run(bench_drain(servers.database("bench_drain"), servers, args))
                 if args.drain else None)
    table = Table(title=f"sustained ingest, {args.records:,} records, "
                        f"{args.consumers} consumer process(es)")
    for column in ("path", "records/s", "note"):
        table.add_column(column)
    table.add_row("service layer (record_usage_batch)", f"{service_rate:,.0f}",
                  f"best of {args.baseline_rounds} rounds of {args.baseline_records:,} records, "
                  f"batches of {SERVICE_BATCH_RECORDS}; the whole machine's CPU "
                  f"{best.machine_us_per_record:.0f} us/record (this process and PostgreSQL)")
    rounds = [("", ingest)]
    if compared is not None:
        rounds.insert(0, (f"{args.compare_checkout.name}: ", compared))
    for label, result in rounds:
        table.add_row(f"{label}publisher (stream acknowledged)",
                      f"{result['publish_rate']:,.0f}", "")
        table.add_row(f"{label}end to end (publish -> committed)",
                      f"{result['commit_rate']:,.0f}",
                      f"{result['seconds']:.1f}s; ratio to service layer "
                      f"{result['commit_rate'] / service_rate:.2f}"
                      + (f" (best of {args.rounds} rounds)" if args.rounds > 1 else ""))
        if not label and paired_median is not None:
            table.add_row("end to end, paired", f"{paired_median:.2f}x",
                          f"the median of {args.rounds} pairs' ratios (each end-to-end round "
                          "divided by the service round run just before it)")
        table.add_row(f"{label}consumer CPU", f"{result['cpu_us_per_record']:.0f} us/record",
                      "user + system, all consumer processes; " + bound_by(result))
        table.add_row(f"{label}NATS server CPU", f"{result['nats_us_per_record']:.0f} us/record",
                      "storing, delivering, taking acks (deleting acked records)")
        table.add_row(f"{label}bench process CPU",
                      f"{result['bench_us_per_record']:.0f} us/record",
                      "the publisher, and the watcher thread polling PostgreSQL")
        table.add_row(f"{label}whole machine CPU",
                      *machine_budget(result, service_rate, args.consumers))
        if not label and goal is not None:
            table.add_row(f"goal {goal}x", *goal_budget(goal, best, result, os.cpu_count() or 1))
        table.add_row(f"{label}consumer RSS peak", f"{result['rss_peak_mib']:.0f} MiB",
                      "all processes")
    if compared_drain is not None:
        table.add_row(f"{args.compare_checkout.name}: drain a backlog",
                      f"{compared_drain['drain_rate']:,.0f}",
                      f"ratio to service layer {compared_drain['drain_rate'] / service_rate:.2f}; "
                      f"consumer CPU {compared_drain['cpu_us_per_record']:.0f} us/record, "
                      f"NATS {compared_drain['nats_us_per_record']:.0f}; "
                      + bound_by(compared_drain))
        table.add_row(f"{args.compare_checkout.name}: drain: whole machine CPU",
                      *machine_budget(compared_drain, service_rate, args.consumers))
    if drain is not None:
        table.add_row("drain a backlog (no publisher running)", f"{drain['drain_rate']:,.0f}",
                      f"ratio to service layer {drain['drain_rate'] / service_rate:.2f}; "
                      f"consumer CPU {drain['cpu_us_per_record']:.0f} us/record, NATS "
                      f"{drain['nats_us_per_record']:.0f}; " + bound_by(drain))
        table.add_row("drain: whole machine CPU",
                      *machine_budget(drain, service_rate, args.consumers))
    console.print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    console.print(table)


if __name__ == "__main__":
    main()
