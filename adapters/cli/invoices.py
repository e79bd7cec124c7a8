"""`ledger invoices` commands.

    ledger invoices draft --team T --month YYYY-MM [--json]
        draft the team's invoice for a calendar month (in the team's timezone) from its priced
        usage: lines per account and model, corrections for late usage of earlier months, the
        prepaid credit applied; prints the lines and the amount due. Acts as the system actor
        "ledger-cli" (an operator's tool, like `ledger reconcile`).

The database is LEDGER_DATABASE_URL, or that of the `ledger up` running on LEDGER_DATA_DIR.
"""

from __future__ import annotations

import argparse
import json
import sys

from adapters.cli.audit import parse_team
from adapters.runtime.composition import attached_servers, open_ledger
from adapters.runtime.settings import ConfigurationError, Settings
from domain.errors import LedgerError
from domain.money import format_nanos
from services.actor import Actor
from services.invoicing.drafting import draft_monthly_invoice

CLI_ACTOR = Actor.system("ledger-cli")


def cmd_draft(args: argparse.Namespace) -> int:
    team_id = parse_team(args.team)
    ledger = open_ledger(attached_servers(Settings.from_env()).database_url)
    try:
        invoice = ledger.get_invoice(draft_monthly_invoice(ledger, team_id, args.month,
                                                           CLI_ACTOR))
    except LedgerError as error:  # an unknown team, a month not ended, one drafted already
        raise ConfigurationError(error.message) from None
    finally:
        ledger.close()
    if args.json:
        json.dump({"invoice_id": str(invoice.id), "period_start": invoice.period_start,
                   "period_end": invoice.period_end, "currency": invoice.currency,
                   "subtotal_nanos": str(invoice.subtotal_nanos),
                   "lines": [{**line, "amount_nanos": str(line["amount_nanos"])}
                             for line in invoice.lines]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"invoice {invoice.id} drafted for {invoice.period_start}..{invoice.period_end}")
    for line in invoice.lines:
        print(f"  {format_nanos(int(line['amount_nanos']), invoice.currency):>28}  "
              f"{line['description']}")
    print(f"amount due {format_nanos(invoice.subtotal_nanos, invoice.currency)} (rounded "
          "once when finalized)")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    invoices = subparsers.add_parser("invoices", help="monthly invoices from priced usage")
    actions = invoices.add_subparsers(dest="invoice_command", required=True)
    draft = actions.add_parser("draft", help="draft a team's invoice for a month from usage")
    draft.add_argument("--team", required=True, help="team id or team key")
    draft.add_argument("--month", required=True, help="YYYY-MM, in the team's timezone")
    draft.add_argument("--json", action="store_true", help="print JSON")
    draft.set_defaults(handler=cmd_draft)
