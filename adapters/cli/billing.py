"""`ledger` commands for money that comes in through Stripe.

    ledger reconcile --team T [--json] [--refresh]
        the team's top-ups and refunds in the ledger against Stripe's charges and refunds;
        every difference listed with both sides; exit 1 on any difference. --refresh first
        reads the team's unfinished payments and unpaid invoices from Stripe and records what
        Stripe says (the same path as their webhooks), which heals webhooks that never came.

The database is LEDGER_DATABASE_URL, or that of the `ledger up` running on LEDGER_DATA_DIR;
Stripe is configured by LEDGER_STRIPE_* (docs/stripe.md).
"""

from __future__ import annotations

import argparse
import json
import sys

from adapters.cli.audit import parse_team
from adapters.runtime.composition import attached_servers, open_ledger
from adapters.runtime.settings import ConfigurationError, Settings
from adapters.stripe.checkout_gateway import StripeCheckoutGateway
from adapters.stripe.gateway import StripeGateway, make_client
from adapters.stripe.invoices import StripeInvoices
from adapters.stripe.settings import StripeSettings
from domain.errors import LedgerError
from domain.money import format_nanos
from services.invoicing.collection import InvoiceCollection
from services.payments.checkout import Checkout
from services.payments.port import PaymentProviderError
from services.payments.reconciliation import Reconciliation, reconcile_team
from services.payments.top_ups import TopUps

EXIT_DIFFERENT = 1


def _side(amount_nanos: int | None, currency: str) -> str:
    return "missing" if amount_nanos is None else format_nanos(amount_nanos, currency)


def _print_text(report: Reconciliation) -> None:
    print(f"team {report.team_id} ({report.currency}), Stripe customer "
          f"{report.customer_id or 'none'}: {report.top_ups_compared} top-ups and "
          f"{report.refunds_compared} refunds compared")
    print(f"{report.invoices_compared} invoices compared")
    for d in report.differences:
        ledger_status = "" if d.ledger_status is None else f" ({d.ledger_status})"
        stripe_status = "" if d.stripe_status is None else f" ({d.stripe_status})"
        print(f"DIFFERENT {d.kind} {d.stripe_object_id}: ledger "
              f"{_side(d.ledger_nanos, report.currency)}{ledger_status}, Stripe "
              f"{_side(d.stripe_nanos, report.currency)}{stripe_status}")
    print("ledger and Stripe agree" if report.matches
          else f"{len(report.differences)} difference(s)")


def _print_json(report: Reconciliation) -> None:
    json.dump({"team_id": str(report.team_id), "currency": report.currency,
               "customer_id": report.customer_id, "matches": report.matches,
               "differences": [{"kind": d.kind, "stripe_object_id": d.stripe_object_id,
                                "ledger_nanos": None if d.ledger_nanos is None
                                else str(d.ledger_nanos),
                                "stripe_nanos": None if d.stripe_nanos is None
                                else str(d.stripe_nanos), "ledger_status": d.ledger_status,
                                "stripe_status": d.stripe_status}
                               for d in report.differences]},
              sys.stdout, indent=2)
    sys.stdout.write("\n")


def cmd_reconcile(args: argparse.Namespace) -> int:
    settings = StripeSettings.from_env()
    if settings is None:
        raise ConfigurationError("Stripe is not configured: set LEDGER_STRIPE_API_KEY and "
                                 "LEDGER_STRIPE_WEBHOOK_SECRETS (docs/stripe.md)")
    team_id = parse_team(args.team)
    ledger = open_ledger(attached_servers(Settings.from_env()).database_url)
    client = make_client(settings)
    gateway = StripeGateway(client)
    try:
        if args.refresh:
            top_ups = TopUps(ledger, gateway, settings.top_up_limits)
            refreshed = top_ups.refresh_open_payments(team_id)
            links = settings.checkout_links()
            if links is not None:  # Checkout payments that have no PaymentIntent yet too
                refreshed += Checkout(top_ups, StripeCheckoutGateway(client),
                                      links).refresh_open_checkouts(team_id)
            print(f"refreshed {refreshed} unfinished payment(s) from Stripe")
            invoices = InvoiceCollection(ledger, StripeInvoices(client))
            print(f"refreshed {invoices.refresh_open_invoices(team_id)} unpaid invoice(s)")
        report = reconcile_team(ledger, gateway, team_id, StripeInvoices(client))
    except PaymentProviderError as error:
        raise ConnectionError(error.message) from None
    except LedgerError as error:  # an unknown team, for example
        raise ConfigurationError(error.message) from None
    finally:
        ledger.close()
    (_print_json if args.json else _print_text)(report)
    return 0 if report.matches else EXIT_DIFFERENT


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reconcile = subparsers.add_parser(
        "reconcile", help="compare a team's top-ups and refunds with Stripe's")
    reconcile.add_argument("--team", required=True, help="team id or team key")
    reconcile.add_argument("--json", action="store_true", help="print JSON")
    reconcile.add_argument("--refresh", action="store_true",
                           help="first record what Stripe says about unfinished payments")
    reconcile.set_defaults(handler=cmd_reconcile)
