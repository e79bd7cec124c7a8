"""The periodic Stripe reconciliation `ledger up` runs when Stripe is configured (issue 12).

Every `LEDGER_STRIPE_RECONCILE_INTERVAL_SECONDS` (default one hour), for every team that has
started a payment through the ledger or has an invoice (the payments and invoices read models;
at most `RECONCILE_TEAMS_PER_PASS_MAX` per pass):

1. the team's unfinished payments and unpaid Stripe-collected invoices are read from Stripe and
   recorded as Stripe reports them (the same path as their webhooks), so a webhook that never
   came is healed within one interval;
2. the team's top-ups, refunds, lost disputes and invoices are compared with Stripe's
   (`services.payments.reconciliation`), and every difference is logged with both sides.

The last pass is written to `<data folder>/stripe-reconcile.json` (when it ran, teams compared,
each difference with both sides, teams that failed and why) for operators and monitoring; a pass
with any difference or failure logs a warning. Stripe
being unreachable fails that team's comparison, not the pass: the next interval tries again.
Differences are never "fixed" by this job: a difference is for a person to look at
(`ledger reconcile --team T` shows the same with exit status 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import stripe

from adapters.postgres.view_schema import LIVE_SCHEMA, connect, q
from adapters.runtime.composition import open_ledger
from adapters.runtime.job_status import write_job_status
from adapters.runtime.processes import Runtime
from adapters.runtime.settings import bounded_number
from adapters.stripe.gateway import StripeGateway, make_client
from adapters.stripe.invoices import StripeInvoices
from adapters.stripe.settings import StripeSettings
from domain.errors import LedgerError
from services.invoicing.collection import InvoiceCollection
from services.payments.port import PaymentProviderError
from services.payments.reconciliation import reconcile_team
from services.payments.top_ups import TopUps

ENV_INTERVAL = "LEDGER_STRIPE_RECONCILE_INTERVAL_SECONDS"
INTERVAL_SECONDS_DEFAULT = 3600.0
INTERVAL_SECONDS_MIN = 10.0
INTERVAL_SECONDS_MAX = 7 * 86400.0
RECONCILE_TEAMS_PER_PASS_MAX = 10_000
STATUS_FILE_NAME = "stripe-reconcile.json"
FAILURE_TEXT_LENGTH_MAX = 500

log = logging.getLogger(__name__)


def interval_seconds(env: dict[str, str] | None = None) -> float:
    return bounded_number(env, ENV_INTERVAL, INTERVAL_SECONDS_DEFAULT, INTERVAL_SECONDS_MIN,
                          INTERVAL_SECONDS_MAX, "seconds")


def teams_with_payments(database_url: str, limit: int = RECONCILE_TEAMS_PER_PASS_MAX,
                        schema: str = LIVE_SCHEMA) -> list[UUID]:
    """Teams that started a payment through the ledger or have an invoice, from the read
    models (a team that has neither has nothing at Stripe to compare)."""
    with connect(database_url) as conn:
        try:
            rows = conn.execute(q("SELECT team_id FROM {s}.payments UNION SELECT team_id FROM "
                                  "{s}.invoices ORDER BY team_id LIMIT %s", schema),
                                (limit,)).fetchall()
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            return []  # a new ledger whose projections have not made the read models yet
    return [row[0] for row in rows]


@dataclass
class PassReport:
    started_at: str
    teams: int = 0
    refreshed_payments: int = 0
    refreshed_invoices: int = 0
    differences: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.differences and not self.failures


def reconcile_all(database_url: str, settings: StripeSettings,
                  http_client: stripe.HTTPClient | None = None) -> PassReport:
    """One pass over every team with payments or invoices (see the module docstring)."""
    started = time.monotonic()
    report = PassReport(started_at=datetime.now(UTC).isoformat())
    ledger = open_ledger(database_url)
    try:
        client = make_client(settings, http_client)
        gateway, stripe_invoices = StripeGateway(client), StripeInvoices(client)
        top_ups = TopUps(ledger, gateway, settings.top_up_limits)
        collection = InvoiceCollection(ledger, stripe_invoices, top_ups.ensure_customer)
        for team_id in teams_with_payments(database_url):
            report.teams += 1
            try:
                report.refreshed_payments += top_ups.refresh_open_payments(team_id)
                report.refreshed_invoices += collection.refresh_open_invoices(team_id)
                result = reconcile_team(ledger, gateway, team_id, stripe_invoices)
            except (PaymentProviderError, LedgerError) as error:
                text = str(getattr(error, "message", error))[:FAILURE_TEXT_LENGTH_MAX]
                report.failures.append({"team_id": str(team_id), "error": text})
                log.warning("reconciling team %s with Stripe failed: %s", team_id, text)
                continue
            for difference in result.differences:
                entry = {"team_id": str(team_id), "currency": result.currency,
                         **asdict(difference)}
                # Nanos as decimal strings, like every amount the ledger writes out.
                for side in ("ledger_nanos", "stripe_nanos"):
                    if entry[side] is not None:
                        entry[side] = str(entry[side])
                report.differences.append(entry)
                log.warning("Stripe reconciliation: team %s %s %s: ledger %s, Stripe %s "
                            "nanos %s", team_id, difference.kind, difference.stripe_object_id,
                            difference.ledger_nanos, difference.stripe_nanos, result.currency)
    finally:
        ledger.close()
    report.seconds = round(time.monotonic() - started, 3)
    return report


def write_status(data_dir: Path, report: PassReport) -> Path:
    return write_job_status(data_dir / STATUS_FILE_NAME, report)


async def run_stripe_reconciler(runtime: Runtime, stop: asyncio.Event) -> None:
    """A `ledger up` runner: a pass at start, then every interval, until `stop`."""
    settings = StripeSettings.from_env()
    if settings is None:
        log.info("Stripe is not configured: no periodic reconciliation")
        await stop.wait()
        return
    interval = interval_seconds()
    while not stop.is_set():
        report = await asyncio.to_thread(reconcile_all, runtime.database_url, settings)
        write_status(runtime.data_dir, report)
        (log.info if report.clean else log.warning)(
            "Stripe reconciliation: %d team(s), %d payment(s) and %d invoice(s) refreshed, "
            "%d difference(s), %d failure(s) in %.1fs", report.teams,
            report.refreshed_payments, report.refreshed_invoices,
            len(report.differences), len(report.failures), report.seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
