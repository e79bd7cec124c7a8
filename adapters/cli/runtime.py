"""`ledger up`, `ledger consume` and `ledger demo`.

`ledger up` runs the whole service in one process: with no LEDGER_DATABASE_URL / LEDGER_NATS_URL
it starts embedded PostgreSQL and NATS under the data folder (kept between runs), creates the
stream, and runs every runner of `adapters.runtime.processes.UP_RUNNERS` until Ctrl-C. One per data
folder (an OS lock); it writes the URLs, with their credentials, to `<data folder>/servers.json`
(0600) so that other commands in another terminal attach to the same servers. If an embedded
server dies, `ledger up` stops and exits non-zero with the reason (docs/operations.md).

`ledger credentials producer` prints the NATS URL producers publish usage with.

`ledger consume` is one usage consumer process (what compose runs two or more of): it serves the
partitions of member `--member` of `--members`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from rich.console import Console

from adapters.nats.connection import connect_nats
from adapters.nats.ingest_settings import IngestSettings
from adapters.runtime.collector import tune_collector
from adapters.runtime.composition import (
    attached_servers,
    configured_runtime,
    data_folder_lock,
    open_ledger,
    prepare_data_dir,
    running_servers,
    servers_file,
    write_servers_file,
)
from adapters.runtime.processes import UP_RUNNERS, Runtime, load_runner, run_together
from adapters.runtime.settings import ConfigurationError, Settings, redacted

HEALTH_MAX_AGE_SECONDS_DEFAULT = 30.0
EXIT_SERVER_DIED = 69  # sysexits.h EX_UNAVAILABLE, as adapters.cli.main
console = Console(stderr=True)

__all__ = ["configured_runtime", "register", "servers_file"]


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)


def run_up(args: argparse.Namespace) -> int:
    from adapters.cli.main import configure_logging

    configure_logging()
    settings = Settings.from_env()
    ingest = IngestSettings.from_env()
    runners = [load_runner(spec) for spec in UP_RUNNERS]
    data_dir = prepare_data_dir(settings.data_dir)
    with data_folder_lock(data_dir), running_servers(settings) as servers:
        runtime = Runtime(database_url=servers.database_url, nats_url=servers.nats_url,
                          data_dir=data_dir, ingest=ingest)
        first_token = _first_operator_token(servers.database_url)
        path = servers_file(data_dir)
        console.print(f"[bold]ledger up[/bold]  data folder: {runtime.data_dir}"
                      f"{' (embedded servers)' if servers.embedded else ''}")
        console.print(f"  PostgreSQL: {redacted(servers.database_url)}")
        console.print(f"  NATS:       {redacted(servers.nats_url)}")
        console.print(f"  runners:    {', '.join(UP_RUNNERS)}")
        console.print(f"  credentials are in {path} (0600); producers publish usage on "
                      "ledger.usage.v1.<account_id> with `ledger credentials producer`")
        console.print("  try `ledger demo` in another terminal; Ctrl-C stops")
        if first_token is not None:
            # Shown once: only its digest is stored. Printed on stdout, not the log stream.
            sys.stdout.write(
                "\nFirst operator token (shown once, keep it safe):\n"
                f"  {first_token}\n"
                "Log in: open /login on the HTTP API address printed below and paste it; "
                "or call the API with "
                "`Authorization: Bearer <token>`. More tokens: `ledger token create`.\n\n")
            sys.stdout.flush()

        async def main() -> str | None:
            stop = asyncio.Event()
            stop_on_signals(stop)
            # Written once Ctrl-C is ours to handle: other commands attach from here on.
            write_servers_file(data_dir, servers)
            return await run_together(runtime, runners, stop, watch=servers.stopped_server)

        try:
            tune_collector()  # the usage consumer runs in this process
            problem = asyncio.run(main())
        finally:
            path.unlink(missing_ok=True)
    if problem is not None:
        sys.stderr.write(f"ledger up: {problem}; stopped the ledger: start it again (what was "
                         "acknowledged is kept)\n")
        return EXIT_SERVER_DIED
    console.print("ledger stopped")
    return 0


def _first_operator_token(database_url: str) -> str | None:
    """Create the tables (once, before the runners open the ledger together and race to
    create them, and before other commands attach) and, on a new ledger, the first operator
    token: its secret, to be shown once."""
    from services.tokens import ensure_first_operator_token

    ledger = open_ledger(database_url)
    try:
        issued = ensure_first_operator_token(ledger)
    finally:
        ledger.close()
    return issued.secret if issued is not None else None


def run_credentials(args: argparse.Namespace) -> int:
    """Print a NATS URL with its credential, for producers (or the ledger's own)."""
    servers = attached_servers(Settings.from_env(), need_database=False, need_nats=True)
    url = servers.producer_nats_url if args.user == "producer" else servers.nats_url
    sys.stdout.write(url + "\n")
    return 0


def run_consume(args: argparse.Namespace) -> int:
    from adapters.nats.usage_consumer import partitions_for_member
    from adapters.runtime.usage_runner import consume

    runtime = configured_runtime(Settings.from_env())
    count = runtime.ingest.partitions
    if args.partitions:
        try:
            partitions = [int(p) for p in args.partitions.split(",")]
        except ValueError:
            raise ConfigurationError("--partitions takes numbers separated by commas, e.g. "
                                     "0,2,4") from None
        outside = [p for p in partitions if not 0 <= p < count]
        if outside:
            raise ConfigurationError(
                f"--partitions {outside} outside 0 to {count - 1} (LEDGER_USAGE_PARTITIONS is "
                f"{count})")
    else:
        try:
            partitions = partitions_for_member(count, args.member, args.members)
        except ValueError as error:
            raise ConfigurationError(str(error)) from None
    console.print(f"usage consumer: partitions {partitions} of {runtime.ingest.partitions}, "
                  f"NATS {redacted(runtime.nats_url)}")

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await consume(runtime, stop, partitions, console)

    tune_collector()  # adapters.runtime.collector: ~15% of the bus path's CPU otherwise
    asyncio.run(main())
    return 0


def run_init(args: argparse.Namespace) -> int:
    """Create the ledger's tables (event store and read models) and the usage stream, once,
    before the processes start. (Opening them creates them too, under advisory locks, so that
    several processes starting together are safe either way.)"""
    from adapters.nats.streams import ensure_stream
    from adapters.postgres.view_store import PostgresViewStore
    from adapters.runtime.composition import open_ledger

    runtime = configured_runtime(Settings.from_env())
    open_ledger(runtime.database_url).close()
    PostgresViewStore(runtime.database_url).close()

    async def main() -> None:
        connection = await connect_nats(runtime.nats_url, "ledger-init")
        try:
            await ensure_stream(connection.jetstream(), runtime.ingest)
        finally:
            await connection.close()

    asyncio.run(main())
    console.print(f"tables and stream ready ({runtime.ingest.partitions} partitions, "
                  f"{runtime.ingest.replicas} replicas)")
    return 0


def _database_url_if_known(settings: Settings) -> str | None:
    """LEDGER_DATABASE_URL, else the running `ledger up`'s database, else None."""
    return attached_servers(settings, need_database=False).database_url or None


def run_health(args: argparse.Namespace) -> int:
    """Exit 0 if the ledger is healthy: the heartbeat file (if given) was touched within
    --max-age-seconds, and the projections (if a database is known) are not stopped on a
    failure. Each problem is one line; any problem exits 1."""
    from adapters.postgres.view_status import projection_health

    problems: list[str] = []
    path = Path(args.file or os.environ.get("LEDGER_HEALTH_FILE") or "")
    heartbeat = bool(str(path)) and str(path) != "."
    if heartbeat:
        try:
            age = time.time() - path.stat().st_mtime
            if age > args.max_age_seconds:
                problems.append(f"{path} is {age:.0f}s old")
        except FileNotFoundError:
            problems.append(f"{path} does not exist yet")
    database_url = _database_url_if_known(Settings.from_env())
    if database_url is not None:
        health = projection_health(database_url)
        if health.ok:
            console.print(f"healthy: {health.message}")
        else:
            problems.append(health.message)
    if not heartbeat and database_url is None:
        console.print("give --file or set LEDGER_HEALTH_FILE, or LEDGER_DATABASE_URL (or run "
                      "`ledger up`) to check the projections")
        return 2
    for problem in problems:
        console.print(f"unhealthy: {problem}", markup=False)
    return 1 if problems else 0


def run_demo(args: argparse.Namespace) -> int:
    from adapters.runtime.demo import run_demo as demo

    runtime = configured_runtime(Settings.from_env(), producer=True)
    return asyncio.run(demo(runtime, records=args.records, console=console))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = subparsers.add_parser("up", help="run the whole ledger on this machine (embedded "
                               "PostgreSQL and NATS unless configured)")
    up.set_defaults(handler=run_up)

    consume = subparsers.add_parser("consume", help="run one usage consumer process")
    consume.add_argument("--member", type=int, default=0,
                         help="this process's number among --members (from 0)")
    consume.add_argument("--members", type=int, default=1,
                         help="how many consumer processes share the partitions")
    consume.add_argument("--partitions", default="",
                         help="explicit partitions to serve, e.g. 0,1,2 (overrides --member)")
    consume.set_defaults(handler=run_consume)

    init = subparsers.add_parser("init", help="create the tables and the usage stream")
    init.set_defaults(handler=run_init)

    health = subparsers.add_parser("health", help="check a consumer's heartbeat file and that "
                                   "the projections are not stopped on a failure")
    health.add_argument("--file", default="", help="default LEDGER_HEALTH_FILE")
    health.add_argument("--max-age-seconds", type=float,
                        default=HEALTH_MAX_AGE_SECONDS_DEFAULT)
    health.set_defaults(handler=run_health)

    demo = subparsers.add_parser("demo", help="register demo teams and publish realistic usage")
    demo.add_argument("--records", type=int, default=5000, help="usage records to publish")
    demo.set_defaults(handler=run_demo)

    credentials = subparsers.add_parser(
        "credentials", help="print the NATS URL (with its credential) of a user of the bus")
    credentials.add_argument("user", choices=("producer", "ledger"),
                             help="producer: may publish usage only; ledger: everything")
    credentials.set_defaults(handler=run_credentials)
