"""`ledger` commands for the read models and the auditor's tools.

    ledger project [--once]                 run the projections (catch up, then follow the log)
    ledger replay                           rebuild every read model and compare with the live one
    ledger balance --team T [--as-of TIME]  balance and usage windows, now or at a past moment
    ledger authorize --account A            may the account spend now? (from the read models)
    ledger audit verify                     check the hash chain and that every event is readable
    ledger audit export --team T            the team's audit trail as CSV or JSON lines

The database is LEDGER_DATABASE_URL, or that of the `ledger up` running on LEDGER_DATA_DIR (these
commands never start or stop a server); NATS (for `project` to publish view changes) is
--nats-url, LEDGER_NATS_URL, that of the running `ledger up`, or none.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from adapters.postgres.audit_queries import export, team_audit_rows
from adapters.postgres.notification_log import PostgresNotificationLog
from adapters.postgres.view_store import PostgresViewStore
from adapters.runtime.auditor_tools import balance_as_of, replay, verify
from adapters.runtime.collector import tune_collector
from adapters.runtime.composition import attached_servers
from adapters.runtime.projection_process import ledger_decoder, open_runner, run_projections
from adapters.runtime.settings import ConfigurationError, Settings, nats_servers, redacted
from domain.ids import team_id_for
from domain.money import format_nanos
from projections.as_of import TeamNotInHistoryError

console = Console(stderr=True)


@contextmanager
def _database_url() -> Iterator[str]:
    yield attached_servers(Settings.from_env()).database_url


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                    TextColumn("{task.completed:,} events"),
                    TimeRemainingColumn(), console=console, transient=True)


def parse_team(value: str) -> UUID:
    """A team id, or a team key (the id is derived from it)."""
    try:
        return UUID(value)
    except ValueError:
        return team_id_for(value)


def parse_time(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 time; use e.g. 2026-11-24T18:00:00Z") from None
    if moment.utcoffset() is None:
        raise argparse.ArgumentTypeError(f"{value!r} has no UTC offset; add Z or +hh:mm")
    return moment


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


# project ----------------------------------------------------------------------------------

def cmd_project(args: argparse.Namespace) -> int:
    from adapters.cli.main import configure_logging

    configure_logging(logging.INFO)
    if args.nats_url:
        nats_servers(args.nats_url, "--nats-url")
    # Catch-up holds whole pages of events alive: 21,700-26,100 -> 32,600-37,100 events/s with
    # the collector run less often (bench/projections_catchup.py, adapters.runtime.collector).
    tune_collector()
    with _database_url() as url:
        if args.once:
            with open_runner(url) as runner, _progress() as progress:
                head = runner.log.head_position()
                task = progress.add_task("projecting", total=max(head - runner.position, 0))
                count = runner.catch_up(on_batch=lambda n: progress.advance(task, n))
            console.print(f"projected {count:,} events; read models at position "
                          f"{runner.position:,}")
            return 0
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        nats_url = args.nats_url or attached_servers(Settings.from_env()).nats_url or None
        console.print(f"projecting {redacted(url)} (publishing on "
                      f"{redacted(nats_url) if nats_url else 'no NATS'}); Ctrl-C stops")
        run_projections(url, nats_url, stop)
        return 0


# replay -----------------------------------------------------------------------------------

def cmd_replay(args: argparse.Namespace) -> int:
    tune_collector()  # 7-19% less time on a 200,000-event log (BENCHMARKS.md)
    with _database_url() as url, _progress() as progress:
        task = progress.add_task("replaying the log", total=None)
        report = replay(url, on_start=lambda p: progress.update(task, total=p),
                        on_batch=lambda n: progress.advance(task, n))
    table = Table(title=f"replay to log position {report.position:,}")
    for column in ("read model", "live rows", "replay rows", "live hash", "replay hash", ""):
        table.add_column(column)
    for t in report.tables:
        table.add_row(t.table, f"{t.live_rows:,}", f"{t.replay_rows:,}", t.live_hash[:16],
                      t.replay_hash[:16], "equal" if t.equal else "[red]DIFFERENT[/red]")
    Console().print(table)
    print(f"canonical hash live   {report.canonical_hash('live')}")
    print(f"canonical hash replay {report.canonical_hash('replay')}")
    if report.equal:
        print("replay equals the live read models")
        return 0
    for t in report.tables:
        for live, replayed in t.differences:
            print(f"{t.table}: first differing rows\n  live:   {live}\n  replay: {replayed}")
    print("replay DIFFERS from the live read models")
    return 1


# balance ----------------------------------------------------------------------------------

def cmd_balance(args: argparse.Namespace) -> int:
    team_id = parse_team(args.team)
    with _database_url() as url:
        if args.as_of is not None:
            with _progress() as progress:
                task = progress.add_task(f"replaying history to {args.as_of.isoformat()}",
                                         total=None)
                try:
                    answer = balance_as_of(url, ledger_decoder(url), team_id, args.as_of,
                                           on_batch=lambda n: progress.advance(task, n))
                except TeamNotInHistoryError as error:
                    console.print(f"[red]{error}[/red]")
                    return 2
        else:
            with PostgresViewStore(url) as store:
                found = store.balance(team_id, datetime.now(UTC))
            if found is None:
                console.print(f"[red]team {team_id} is not in the read models; check the id "
                              "or run `ledger project`[/red]")
                return 2
            answer = found
    if args.json:
        _print_json(answer)
    else:
        _print_balance(answer)
    return 0


def _print_balance(answer: dict[str, Any]) -> None:
    balance = answer["balance"]
    currency = balance["currency"]
    out = Console()
    out.print(f"[bold]{balance['name']}[/bold] ({balance['team_id']}) as of {answer['as_of']}, "
              f"log position {answer['position']:,} ({answer['lag_events']:,} behind head)")
    for key in ("balance_nanos", "available_nanos", "credit_limit_nanos", "credited_nanos",
                "refunded_nanos", "adjusted_nanos", "spent_nanos"):
        out.print(f"  {key.removesuffix('_nanos'):<12} {format_nanos(balance[key], currency)}")
    if balance["low_balance"]:
        out.print("  [yellow]low balance[/yellow]")
    table = Table(title=f"usage ({balance['timezone']})")
    for column in ("window", "requests", "success rate", "input", "cached", "output", "cost"):
        table.add_column(column)
    for name, totals in answer["usage"]["windows"].items():
        rate = totals["success_rate"]
        table.add_row(name, f"{totals['requests']:,}",
                      "-" if rate is None else f"{rate:.1%}", f"{totals['input_tokens']:,}",
                      f"{totals['cached_input_tokens']:,}", f"{totals['output_tokens']:,}",
                      format_nanos(totals["cost_nanos"], currency))
    out.print(table)


# authorize --------------------------------------------------------------------------------

def cmd_authorize(args: argparse.Namespace) -> int:
    with _database_url() as url, PostgresViewStore(url) as store:
        answer = store.authorize(args.account)
    _print_json(answer.as_dict())
    return 0 if answer.allowed else 3


# audit ------------------------------------------------------------------------------------

def cmd_audit_verify(args: argparse.Namespace) -> int:
    tune_collector()  # 14-23% less time on a 200,000-event log (BENCHMARKS.md)
    with _database_url() as url:
        decoder = ledger_decoder(url)
        log = PostgresNotificationLog(url)
        head = log.head_position()
        log.close()
        with _progress() as progress:
            task = progress.add_task("verifying the audit chain", total=head)
            report = verify(url, decoder, on_progress=lambda n: progress.advance(task, n))
    print(f"{report.events:,} stored events, {report.audit_rows:,} audit rows, audited up to "
          f"position {report.audited_position:,}, {report.gaps:,} positions never used "
          "(rolled-back inserts)")
    if report.ok:
        print("audit chain intact; every stored event is readable")
        return 0
    for problem in report.problems:
        print(problem)
    if report.problems_total > len(report.problems):
        print(f"... and {report.problems_total - len(report.problems):,} more")
    print(f"TAMPERING OR DAMAGE DETECTED: {report.problems_total:,} problems")
    return 1


def cmd_audit_export(args: argparse.Namespace) -> int:
    team_id = parse_team(args.team)
    with _database_url() as url:
        rows = team_audit_rows(url, team_id)
        if args.output:
            folder = Path(args.output).resolve().parent
            if not folder.is_dir():
                raise ConfigurationError(f"--output {args.output}: folder {folder} does not "
                                         "exist; create it or choose another file")
            with Path(args.output).open("w", newline="") as out:
                count = export(rows, out, args.format)
            console.print(f"wrote {count:,} audit rows to {args.output}")
        else:
            export(rows, sys.stdout, args.format)
    return 0


def register(subparsers: Any) -> None:
    project = subparsers.add_parser("project", help="run the projections (read models)")
    project.add_argument("--once", action="store_true",
                         help="catch up with the log and exit instead of following it")
    project.add_argument("--nats-url", help="publish view changes here (default LEDGER_NATS_URL)")
    project.set_defaults(handler=cmd_project)

    replay_parser = subparsers.add_parser(
        "replay", help="rebuild every read model from the log and compare with the live ones")
    replay_parser.set_defaults(handler=cmd_replay)

    balance = subparsers.add_parser("balance", help="a team's balance and usage windows")
    balance.add_argument("--team", required=True, help="team id or team key")
    balance.add_argument("--as-of", type=parse_time,
                         help="a past moment (ISO 8601 with offset): replay history to it")
    balance.add_argument("--json", action="store_true", help="print the full answer as JSON")
    balance.set_defaults(handler=cmd_balance)

    authorize = subparsers.add_parser("authorize", help="may an account spend now?")
    authorize.add_argument("--account", required=True, type=UUID, help="account id")
    authorize.set_defaults(handler=cmd_authorize)

    audit = subparsers.add_parser("audit", help="the auditor's tools")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    audit_verify = audit_commands.add_parser(
        "verify", help="check the hash chain and that every stored event is readable")
    audit_verify.set_defaults(handler=cmd_audit_verify)
    audit_export = audit_commands.add_parser("export", help="a team's audit trail for auditors")
    audit_export.add_argument("--team", required=True, help="team id or team key")
    audit_export.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    audit_export.add_argument("--output", help="file to write (default: standard output)")
    audit_export.set_defaults(handler=cmd_audit_export)
