"""The monthly invoicing job `ledger up` runs (issue 12), so that nobody has to remember it.

Every `LEDGER_INVOICING_INTERVAL_SECONDS` (default one hour), for every team in the teams read
model (at most `TEAMS_PER_PASS_MAX` per pass; a longer list continues on the next pass), as
`Actor.system("invoicing")` (`services.invoicing.monthly_job`):

1. each calendar month (team's timezone) that has ended and has no invoice is drafted from the
   team's usage, oldest first, from the month the team was registered in (or the month after its
   latest invoice);
2. each draft whose month has been over for `LEDGER_INVOICE_FINALIZE_AFTER_HOURS` (default 72)
   is finalized and collected: a zero total is marked paid by prepaid credit, a total above zero
   is collected through Stripe; without Stripe it stays finalized and uncollected (a warning, and
   listed in the status) and is collected by the first pass after Stripe is configured.

Time is the ledger's clock. A team that fails (Stripe unreachable, a rule refused) is logged and
listed; the pass goes on with the next team and the next pass tries it again. Two `ledger up`
processes may run it together: commands and ids are derived from team and month, so each month
gets one invoice. The last pass is written to `<data folder>/invoicing.json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import psycopg
import stripe

from adapters.postgres.view_schema import LIVE_SCHEMA, connect, q
from adapters.runtime.composition import open_ledger
from adapters.runtime.job_status import write_job_status
from adapters.runtime.processes import Runtime
from adapters.runtime.settings import bounded_number
from adapters.stripe.billing import StripeBilling
from adapters.stripe.settings import StripeSettings
from domain.errors import LedgerError
from services.invoicing.collection import InvoiceCollection
from services.invoicing.monthly_job import invoice_team
from services.ledger import Ledger
from services.payments.port import PaymentProviderError

ENV_INTERVAL = "LEDGER_INVOICING_INTERVAL_SECONDS"
INTERVAL_SECONDS_DEFAULT = 3600.0
INTERVAL_SECONDS_MIN = 10.0
INTERVAL_SECONDS_MAX = 7 * 86400.0
ENV_FINALIZE_AFTER = "LEDGER_INVOICE_FINALIZE_AFTER_HOURS"
FINALIZE_AFTER_HOURS_DEFAULT = 72.0
FINALIZE_AFTER_HOURS_MIN = 0.0
FINALIZE_AFTER_HOURS_MAX = 28 * 24.0  # within the next month: its own draft comes after
TEAMS_PER_PASS_MAX = 10_000
STATUS_FILE_NAME = "invoicing.json"
FAILURE_TEXT_LENGTH_MAX = 500

log = logging.getLogger(__name__)


def interval_seconds(env: dict[str, str] | None = None) -> float:
    return bounded_number(env, ENV_INTERVAL, INTERVAL_SECONDS_DEFAULT, INTERVAL_SECONDS_MIN,
                          INTERVAL_SECONDS_MAX, "seconds")


def finalize_after(env: dict[str, str] | None = None) -> timedelta:
    return timedelta(hours=bounded_number(env, ENV_FINALIZE_AFTER, FINALIZE_AFTER_HOURS_DEFAULT,
                                          FINALIZE_AFTER_HOURS_MIN, FINALIZE_AFTER_HOURS_MAX,
                                          "hours"))


def teams_after(database_url: str, after: UUID | None, limit: int = TEAMS_PER_PASS_MAX,
                schema: str = LIVE_SCHEMA) -> list[UUID]:
    """Up to `limit` teams of the teams read model, in id order, after `after` (none while the
    projections have not made the read models yet, on a fresh database)."""
    with connect(database_url) as conn:
        try:
            rows = conn.execute(q("SELECT team_id FROM {s}.teams WHERE team_id > %s "
                                  "ORDER BY team_id LIMIT %s", schema),
                                (after or UUID(int=0), limit)).fetchall()
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            log.info("invoicing: the teams read model does not exist yet; next pass")
            return []
    return [row[0] for row in rows]


@dataclass
class PassReport:
    started_at: str
    stripe_configured: bool
    teams: int = 0
    drafted: list[dict[str, str]] = field(default_factory=list)
    finalized: list[dict[str, str]] = field(default_factory=list)
    paid_by_prepaid_credit: list[dict[str, str]] = field(default_factory=list)
    sent_to_stripe: list[dict[str, str]] = field(default_factory=list)
    uncollected: list[dict[str, str]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    next_team_after: str | None = None  # where the next pass continues (None: from the start)
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.failures and not self.uncollected


def collection_for(ledger: Ledger, settings: StripeSettings | None,
                   http_client: stripe.HTTPClient | None = None) -> InvoiceCollection:
    if settings is None:
        return InvoiceCollection(ledger)
    return StripeBilling.create(ledger, settings, http_client).invoices


def invoicing_pass(ledger: Ledger, database_url: str, settings: StripeSettings | None,
                   http_client: stripe.HTTPClient | None = None, after: UUID | None = None,
                   teams_max: int = TEAMS_PER_PASS_MAX,
                   grace: timedelta | None = None) -> PassReport:
    """One pass over up to `teams_max` teams after `after` (see the module docstring)."""
    started = time.monotonic()
    report = PassReport(started_at=ledger.clock().isoformat(),
                        stripe_configured=settings is not None)
    collection = collection_for(ledger, settings, http_client)
    grace = finalize_after() if grace is None else grace
    teams = teams_after(database_url, after, teams_max)
    report.next_team_after = str(teams[-1]) if len(teams) == teams_max else None
    for team_id in teams:
        report.teams += 1
        try:
            outcome = invoice_team(ledger, collection, team_id, grace)
        except (PaymentProviderError, LedgerError) as error:
            text = str(getattr(error, "message", error))[:FAILURE_TEXT_LENGTH_MAX]
            report.failures.append({"team_id": str(team_id), "error": text})
            log.warning("invoicing team %s failed: %s", team_id, text)
            continue
        for name in ("drafted", "finalized", "paid_by_prepaid_credit", "sent_to_stripe",
                     "uncollected"):
            entries: list[dict[str, str]] = getattr(report, name)
            entries.extend({"team_id": str(team_id), "invoice": item}
                           for item in getattr(outcome, name))
        for number in outcome.uncollected:
            log.warning("invoice %s of team %s is finalized with an amount due but Stripe is "
                        "not configured: it is collected on the first pass after an operator "
                        "sets LEDGER_STRIPE_API_KEY (docs/stripe.md)", number, team_id)
    report.seconds = round(time.monotonic() - started, 3)
    return report


def write_status(data_dir: Path, report: PassReport) -> Path:
    return write_job_status(data_dir / STATUS_FILE_NAME, report)


async def run_invoicing(runtime: Runtime, stop: asyncio.Event) -> None:
    """A `ledger up` runner: a pass at start, then every interval, until `stop`."""
    interval, grace = interval_seconds(), finalize_after()
    ledger = open_ledger(runtime.database_url)
    after: UUID | None = None
    try:
        while not stop.is_set():
            settings = StripeSettings.from_env()
            report = await asyncio.to_thread(invoicing_pass, ledger, runtime.database_url,
                                             settings, None, after, TEAMS_PER_PASS_MAX, grace)
            after = None if report.next_team_after is None else UUID(report.next_team_after)
            write_status(runtime.data_dir, report)
            (log.info if report.clean else log.warning)(
                "invoicing: %d team(s), %d drafted, %d finalized, %d sent to Stripe, "
                "%d uncollected (Stripe %s), %d failure(s) in %.1fs", report.teams,
                len(report.drafted), len(report.finalized), len(report.sent_to_stripe),
                len(report.uncollected),
                "configured" if report.stripe_configured else "not configured",
                len(report.failures), report.seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    finally:
        ledger.close()
