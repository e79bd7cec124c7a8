"""The `ledger` command line. Each group of subcommands lives in its own module and registers
itself through a `register(subparsers)` function listed in COMMAND_MODULES.

Errors reach the user as one line on standard error and a non-zero exit, never as a traceback:
bad input or configuration exits with EXIT_BAD_INPUT (2, like argparse), a server that cannot be
reached with EXIT_UNAVAILABLE, anything unforeseen with EXIT_SOFTWARE (the traceback is shown
with LEDGER_DEBUG=1). Every wait for a server is bounded (adapters.runtime.settings
CONNECT_TIMEOUT_SECONDS, adapters.nats.connection FIRST_CONNECT_WAIT_SECONDS).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError, PersistenceError

from adapters.runtime.server_processes import EmbeddedServerError
from adapters.runtime.settings import (
    ConfigurationError,
    apply_postgres_session_options,
    first_line,
    redacted,
)

COMMAND_MODULES: list[str] = [
    "adapters.cli.runtime",
    "adapters.cli.audit",
    "adapters.cli.tokens",
    "adapters.cli.billing",
    "adapters.cli.invoices",
    "adapters.http.serve",
]
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 69  # sysexits.h EX_UNAVAILABLE
EXIT_SOFTWARE = 70  # sysexits.h EX_SOFTWARE
DEBUG_VARIABLE = "LEDGER_DEBUG"


class OneLineFormatter(logging.Formatter):
    """Log records as one line each: an exception adds its type and message, not its
    traceback (LEDGER_DEBUG=1 shows tracebacks)."""

    def format(self, record: logging.LogRecord) -> str:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and not os.environ.get(DEBUG_VARIABLE):
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None,
                                            "exc_text": None})
            text = super().format(record)
            return f"{text}: {type(error).__name__}: {first_line(error)}"
        return super().format(record)


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(name)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ledger",
                                     description="Event-sourced billing ledger")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def explain(error: BaseException) -> tuple[str, int]:
    """The one line a user sees for `error`, and the exit code."""
    if isinstance(error, ConfigurationError):
        return str(error), EXIT_BAD_INPUT
    if isinstance(error, psycopg.OperationalError | OperationalError | InterfaceError):
        return (f"cannot use the database ({redacted(first_line(error))}); check "
                "LEDGER_DATABASE_URL and that the server runs", EXIT_UNAVAILABLE)
    if isinstance(error, psycopg.Error | PersistenceError):
        return f"database error: {redacted(first_line(error))}", EXIT_SOFTWARE
    if isinstance(error, ConnectionError | TimeoutError | EmbeddedServerError):
        return first_line(error), EXIT_UNAVAILABLE
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror}", EXIT_BAD_INPUT
    if isinstance(error, ValueError):
        return first_line(error), EXIT_BAD_INPUT
    return (f"unexpected {type(error).__name__}: {first_line(error)} (set {DEBUG_VARIABLE}=1 "
            "for the traceback)", EXIT_SOFTWARE)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_postgres_session_options()  # before any command opens a connection
    try:
        result: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        message, code = explain(error)
        sys.stderr.write(f"ledger {args.command}: {message}\n")
        return code
    return result

