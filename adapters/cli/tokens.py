"""`ledger token create|list|revoke`: API tokens from the command line.

Whoever runs the CLI against the database is already trusted with it, so the CLI acts as an
operator named `cli:<login name>`; that name is the recorded actor of what it issues or revokes.
The secret of a new token is printed once, on stdout (so it can be captured), and never again.
"""

from __future__ import annotations

import argparse
import getpass
import json
from datetime import datetime
from uuid import UUID

from rich.console import Console
from rich.table import Table

from adapters.runtime.settings import Settings
from domain.errors import LedgerError
from domain.tokens import PrincipalKind, Scope
from services.actor import Actor

console = Console(stderr=True)


def database_url() -> str:
    """LEDGER_DATABASE_URL, else the database of the `ledger up` running in the data folder."""
    settings = Settings.from_env()
    if settings.database_url:
        return settings.database_url
    from adapters.runtime.composition import configured_runtime

    return configured_runtime(settings).database_url


def cli_actor() -> Actor:
    return Actor.operator(f"cli:{getpass.getuser()}")


def run_create(args: argparse.Namespace) -> int:
    from adapters.runtime.composition import open_ledger
    from services.tokens import Tokens

    expires_at = None
    if args.expires_at:
        try:
            expires_at = datetime.fromisoformat(args.expires_at)
        except ValueError:
            console.print("--expires-at takes an ISO time with an offset, e.g. "
                          "2027-01-01T00:00:00+00:00")
            return 2
    ledger = open_ledger(database_url())
    try:
        issued = Tokens(ledger).issue(kind=args.kind, subject=args.subject,
                                      name=args.name or f"{args.kind} {args.subject}",
                                      scopes=args.scope or [], expires_at=expires_at,
                                      actor=cli_actor())
    except LedgerError as error:
        console.print(f"[red]not issued:[/red] {error.message}")
        return 2
    finally:
        ledger.close()
    console.print(f"token {issued.token.id} issued for {args.kind} {args.subject!r}. "
                  "This is the only time it is shown; keep it safe:")
    print(issued.secret)
    console.print("use it as `Authorization: Bearer <token>`, or log in to the dashboard at "
                  "/login (`ledger serve` prints the address)")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from adapters.runtime.composition import open_ledger
    from services.tokens import Tokens, describe

    ledger = open_ledger(database_url())
    try:
        tokens = [describe(t) for t in Tokens(ledger).list()]
    finally:
        ledger.close()
    if args.json:
        print(json.dumps(tokens, indent=2))
        return 0
    table = Table("token id", "kind", "subject", "name", "scopes", "issued", "expires", "revoked")
    for t in tokens:
        table.add_row(str(t["token_id"]), str(t["kind"]), str(t["subject"]), str(t["name"]),
                      ",".join(t["scopes"]) if isinstance(t["scopes"], list) else "",
                      str(t["issued_at"])[:19], str(t["expires_at"] or "")[:19],
                      str(t["revoked_at"] or "")[:19])
    Console().print(table)
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    from adapters.runtime.composition import open_ledger
    from services.tokens import Tokens

    try:
        token_id = UUID(args.token_id)
    except ValueError:
        console.print("give the token id (a UUID, as `ledger token list` shows), not the secret")
        return 2
    ledger = open_ledger(database_url())
    try:
        Tokens(ledger).revoke(token_id, args.reason, cli_actor())
    except LedgerError as error:
        console.print(f"[red]not revoked:[/red] {error.message}")
        return 2
    finally:
        ledger.close()
    console.print(f"token {token_id} revoked; its dashboard sessions end with it")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = subparsers.add_parser("token", help="create, list and revoke API tokens")
    commands = token.add_subparsers(dest="token_command", required=True)

    create = commands.add_parser("create", help="issue a token (printed once)")
    create.add_argument("--kind", choices=[k.value for k in PrincipalKind], default="user")
    create.add_argument("--subject", required=True,
                        help="the user id (operator, user) or the service's name")
    create.add_argument("--name", default="", help="what the token is for")
    create.add_argument("--scope", action="append", choices=[s.value for s in Scope],
                        help="service tokens: a scope (repeat for several)")
    create.add_argument("--expires-at", default="", help="ISO time with offset; default never")
    create.set_defaults(handler=run_create)

    listing = commands.add_parser("list", help="every token (never a secret)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=run_list)

    revoke = commands.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("token_id")
    revoke.add_argument("--reason", required=True)
    revoke.set_defaults(handler=run_revoke)


