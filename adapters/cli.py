"""The `ledger` command line. Each group of subcommands lives in its own module and registers
itself through a `register(subparsers)` function listed in COMMAND_MODULES."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES: list[str] = [
    "adapters.cli_runtime",
    "adapters.cli_audit",
    "adapters.cli_tokens",
    "adapters.http.serve",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ledger",
                                     description="Event-sourced billing ledger")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
