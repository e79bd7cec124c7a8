"""Dashboard live latency: from a usage record's commit to the new number in a real browser.

    uv run --locked python bench/dashboard_latency.py [--samples 50] [--pause-seconds 0.3]

Goal (issue 11): the time from a usage commit to the number changing in the browser, p99 < 1 s.

Setup, as the browser test builds it (tests/browser/test_dashboard.py): an embedded PostgreSQL
(durable: fsync on) and NATS (bench_servers()), a team with one priced account and an owner
token, the usage consumer (all partitions, default ingest settings) on an event loop of its own,
the projection runner with its NATS views publisher, and the app (API and dashboard, LiveHub on
NATS) under uvicorn on a free loopback port, all threads of this process. Debian's chromium
(headless, through Playwright's async API) logs in with the owner's token and opens
/dashboard/teams/{team}?window=total (the total window, so a run across midnight UTC still counts
every record).

Each sample publishes one usage record on the bus (UsagePublisher.publish_usage, awaited until
the stream stored it) and records three instants on the machine's wall clock (CLOCK_REALTIME,
shared by Python, PostgreSQL and chromium):
- published: `time.time()` just before the publish call;
- committed: `pg_xact_commit_timestamp(xmin)` of the record's idempotency-key row (scope `usage`,
  key = usage_id), written in the same transaction as its event. Exact to the microsecond: the
  script turns on PostgreSQL's `track_commit_timestamp` (ALTER SYSTEM and a restart of the
  embedded server before anything else). PostgreSQL takes this instant when it writes the
  commit record, just before flushing the WAL (fsync), so commit-to-browser includes that flush;
- in the browser: a MutationObserver on the page notes `Date.now()` (1 ms resolution) in the
  microtask right after the swap that makes #kpi-requests (the element the browser test reads)
  first hold the expected count. That is the DOM change; painting it takes about one more
  frame, not counted. Python then waits for that note with page.wait_for_function (the polling
  there adds nothing to the figure).

The same observer takes the Resource Timing entry of the page's /live fetch (the re-rendered
fragment live.js swaps in), which splits commit-to-browser into "commit to live.js's fetch"
(projections, views message on NATS, LiveHub, server-sent event, the 200 ms fetch spacing of
live.js) and "the /live fetch" (server render and transfer, Resource Timing's startTime to
responseEnd, on the page's monotonic clock); what is left is live.js reading the body and
swapping it in. Each row's percentiles are taken on their own, so the parts' p50s need not add
up to the whole's.

Baseline in the same run, interleaved with the samples so both see the same load: the page
fetches /healthz (`fetch` in page.evaluate, performance.now() around it, body read) once per
sample. The ratio commit-to-browser / healthz makes runs on a noisy shared machine comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import psycopg
import uvicorn
from playwright.async_api import Page, ViewportSize, async_playwright
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.http.app import create_app
from adapters.nats.ingest_settings import IngestSettings
from adapters.nats.streams import recreate_stream
from adapters.nats.usage_consumer import UsageConsumer
from adapters.nats.usage_publisher import UsagePublisher
from adapters.runtime.composition import open_ledger
from adapters.runtime.embedded_postgres import EmbeddedPostgres
from adapters.runtime.projection_process import run_projections
from bench.ingest_common import bench_servers, machine, priced_accounts
from domain.usage import UsageRecord
from services.keyed_recording import USAGE_SCOPE
from services.ledger import Ledger
from services.tokens import BOOTSTRAP_ACTOR, Tokens

console = Console()

SAMPLES_DEFAULT = 50
SAMPLES_MAX = 10_000
PAUSE_SECONDS_DEFAULT = 0.3
PAUSE_SECONDS_MAX = 60.0
GOAL_P99_MS = 1000.0
WINDOW = "total"
TEAM_KEY = "bench"  # priced_accounts' team; its owner is "bench-owner"
OWNER = f"{TEAM_KEY}-owner"
ACCOUNTS = 1
DATABASE_NAME = "bench_dashboard"
# The idempotency keys live next to the events of the Ledger application ("ledger_events").
KEYS_TABLE = "ledger_idempotency_keys"
STARTUP_TIMEOUT_SECONDS = 60.0
CATCH_UP_TIMEOUT_SECONDS = 60.0
SHUTDOWN_TIMEOUT_SECONDS = 30.0
POLL_SECONDS = 0.05
# How long one sample may take to show in the browser before the run fails: ten times the goal.
SAMPLE_TIMEOUT_MS = 10 * GOAL_P99_MS
# How long the committed row may take to be readable after the browser showed it (never, in
# practice: the number is computed from it).
COMMIT_LOOKUP_TIMEOUT_SECONDS = 10.0
PAGE_TIMEOUT_MS = 30_000
HTTP_TIMEOUT_SECONDS = 10.0
CHROMIUM_PATH = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}

# Installed once on the page: notes when #kpi-requests first shows `expected`, and the /live
# fetch that brought it. All in the page's own task, so Python's polling does not blur it.
OBSERVER_JS = """() => {
  const state = {expected: null, shownAt: null, fetchStartMsAgo: null, fetchMs: null};
  window.__benchLatency = state;
  const check = () => {
    if (state.expected === null || state.shownAt !== null) return;
    const element = document.getElementById("kpi-requests");
    if (!element || element.textContent.trim() !== state.expected) return;
    state.shownAt = Date.now();
    const now = performance.now();
    const fetches = performance.getEntriesByType("resource")
      .filter((entry) => entry.name.includes("/live?"));
    const last = fetches[fetches.length - 1];
    if (last) {
      state.fetchStartMsAgo = now - last.startTime;
      state.fetchMs = last.responseEnd - last.startTime;
    }
  };
  new MutationObserver(check).observe(document.body,
    {subtree: true, childList: true, characterData: true});
}"""
ARM_JS = """(expected) => {
  const state = window.__benchLatency;
  performance.clearResourceTimings();
  state.expected = expected;
  state.shownAt = null;
  state.fetchStartMsAgo = null;
  state.fetchMs = null;
}"""
HEALTHZ_JS = """async () => {
  const started = performance.now();
  const response = await fetch("/healthz", {cache: "no-store"});
  await response.text();
  if (!response.ok) throw new Error(`/healthz answered ${response.status}`);
  return performance.now() - started;
}"""


@dataclass
class Samples:
    publish_to_commit: list[float] = field(default_factory=list)
    commit_to_browser: list[float] = field(default_factory=list)
    publish_to_browser: list[float] = field(default_factory=list)
    commit_to_live_fetch: list[float] = field(default_factory=list)
    live_fetch: list[float] = field(default_factory=list)
    healthz: list[float] = field(default_factory=list)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(condition: Callable[[], bool], what: str, timeout_seconds: float) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not happen within {timeout_seconds:.0f}s")
        time.sleep(POLL_SECONDS)


def track_commit_timestamps(postgres: EmbeddedPostgres) -> None:
    """Turn on `track_commit_timestamp` (it only takes effect at server start) and restart."""
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
    postgres.stop()
    postgres.start()
    with psycopg.connect(postgres.url) as conn:
        row = conn.execute("SHOW track_commit_timestamp").fetchone()
    if row is None or row[0] != "on":
        raise SystemExit(f"track_commit_timestamp is {row}, not on, after the restart")


class ConsumerThread:
    """The real usage consumer of every partition, on an event loop of its own."""

    def __init__(self, database_url: str, nats_url: str, settings: IngestSettings) -> None:
        self.ledger = open_ledger(database_url)
        self.consumer = UsageConsumer(self.ledger, nats_url,
                                      partitions=range(settings.partitions), settings=settings)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="consumer",
                                       daemon=True)
        self.thread.start()
        self.done = asyncio.run_coroutine_threadsafe(self.consumer.run(), self.loop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.consumer.stop)
        try:
            self.done.result(SHUTDOWN_TIMEOUT_SECONDS)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(SHUTDOWN_TIMEOUT_SECONDS)
            self.loop.close()
            self.ledger.close()


@dataclass
class Stack:
    base_url: str
    team_id: str
    account_id: Any
    owner_token: str


def lag_events(base_url: str, token: str, team_id: str) -> int | None:
    try:
        response = httpx.get(f"{base_url}/v1/teams/{team_id}/balance",
                             headers={"Authorization": f"Bearer {token}"},
                             timeout=HTTP_TIMEOUT_SECONDS)
    except httpx.HTTPError:
        return None
    return int(response.json()["lag_events"]) if response.status_code == 200 else None


def commit_time(database_url: str, usage_id: str) -> float:
    """The commit instant (epoch seconds) of the transaction that recorded `usage_id`."""
    deadline = time.monotonic() + COMMIT_LOOKUP_TIMEOUT_SECONDS
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                f"SELECT pg_xact_commit_timestamp(xmin) FROM public.{KEYS_TABLE} "
                "WHERE scope = %s AND key = %s", (USAGE_SCOPE, usage_id)).fetchone()
            if row is not None and row[0] is not None:
                committed: datetime = row[0]
                return committed.timestamp()
            if time.monotonic() > deadline:
                raise SystemExit(f"no committed idempotency key for {usage_id} in "
                                 f"{COMMIT_LOOKUP_TIMEOUT_SECONDS:.0f}s")
            time.sleep(POLL_SECONDS)


async def log_in(page: Page, stack: Stack) -> None:
    dashboard = f"{stack.base_url}/dashboard/teams/{stack.team_id}"
    await page.goto(dashboard)
    await page.wait_for_url(f"{stack.base_url}/login?**")
    await page.get_by_label("Token").fill(stack.owner_token)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(dashboard)
    await page.goto(f"{dashboard}?window={WINDOW}")
    await page.locator("#live-status[data-state=live]").wait_for()


async def page_requests(page: Page) -> int:
    return int((await page.locator("#kpi-requests").inner_text()).strip().replace(",", ""))


async def measure(stack: Stack, database_url: str, nats_url: str, samples: int,
                  pause_seconds: float) -> Samples:
    result = Samples()
    run = uuid4().hex[:8]
    publisher = await UsagePublisher.connect(nats_url)
    async with publisher, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM_PATH,
                                                   args=CHROMIUM_ARGS, headless=True)
        try:
            page = await browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            await log_in(page, stack)
            await page.evaluate(OBSERVER_JS)
            for n in range(samples):
                await asyncio.sleep(pause_seconds)
                result.healthz.append(float(await page.evaluate(HEALTHZ_JS)))
                expected = await page_requests(page) + 1
                await page.evaluate(ARM_JS, f"{expected:,}")
                usage_id = f"dashboard-latency-{run}-{n}"
                record = UsageRecord(usage_id=usage_id, account_id=stack.account_id,
                                     occurred_at=datetime.now(UTC), model="bench-model",
                                     success=True, input_tokens=1000, output_tokens=200,
                                     cached_input_tokens=0)
                published = time.time()
                await publisher.publish_usage(record)
                await page.wait_for_function("() => window.__benchLatency.shownAt !== null",
                                             timeout=SAMPLE_TIMEOUT_MS)
                seen: dict[str, Any] = await page.evaluate("() => window.__benchLatency")
                shown = float(seen["shownAt"]) / 1000
                committed = await asyncio.to_thread(commit_time, database_url, usage_id)
                result.publish_to_commit.append((committed - published) * 1000)
                result.commit_to_browser.append((shown - committed) * 1000)
                result.publish_to_browser.append((shown - published) * 1000)
                if seen["fetchStartMsAgo"] is not None:
                    fetch_started = shown - float(seen["fetchStartMsAgo"]) / 1000
                    result.commit_to_live_fetch.append((fetch_started - committed) * 1000)
                    result.live_fetch.append(float(seen["fetchMs"]))
                console.print(f"sample {n + 1}/{samples}: commit -> browser "
                              f"{result.commit_to_browser[-1]:.0f} ms", highlight=False)
        finally:
            await browser.close()
    return result


def run(samples: int, pause_seconds: float) -> Samples:
    settings = IngestSettings()
    with bench_servers() as servers:
        track_commit_timestamps(servers.postgres)
        database_url = servers.database(DATABASE_NAME)
        asyncio.run(recreate_stream(servers.nats_url, settings))
        ledger: Ledger = open_ledger(database_url)
        stop_projections = threading.Event()
        projections: threading.Thread | None = None
        consumer: ConsumerThread | None = None
        server: uvicorn.Server | None = None
        serving: threading.Thread | None = None
        try:
            account = priced_accounts(ledger, ACCOUNTS)[0]
            team_id = str(ledger.get_account(account.account_id).team_id)
            token = Tokens(ledger).issue(kind="user", subject=OWNER, name="bench", scopes=[],
                                         expires_at=None, actor=BOOTSTRAP_ACTOR).secret
            # Whatever creates tables is made here, one after the other (PostgreSQL refuses
            # concurrent CREATE ... IF NOT EXISTS of the same catalogue rows).
            consumer = ConsumerThread(database_url, servers.nats_url, settings)
            app = create_app(ledger, database_url, nats_url=servers.nats_url)
            projections = threading.Thread(
                target=run_projections, name="projections",
                args=(database_url, servers.nats_url, stop_projections), daemon=True)
            projections.start()
            port = free_port()
            server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                                   log_level="warning", access_log=False,
                                                   lifespan="on"))
            serving = threading.Thread(target=server.run, name="uvicorn", daemon=True)
            serving.start()
            started = server
            wait_until(lambda: started.started, "the app starting", STARTUP_TIMEOUT_SECONDS)
            stack = Stack(f"http://127.0.0.1:{port}", team_id, account.account_id, token)
            wait_until(lambda: lag_events(stack.base_url, token, team_id) == 0,
                       "the projections catching up", CATCH_UP_TIMEOUT_SECONDS)
            return asyncio.run(measure(stack, database_url, servers.nats_url, samples,
                                       pause_seconds))
        finally:
            if server is not None and serving is not None:
                server.should_exit = True
                serving.join(SHUTDOWN_TIMEOUT_SECONDS)
            if consumer is not None:
                consumer.stop()
            stop_projections.set()
            if projections is not None:
                projections.join(SHUTDOWN_TIMEOUT_SECONDS)
            ledger.close()


def report(result: Samples, samples: int, pause_seconds: float) -> None:
    table = Table(title=f"Dashboard live latency: {samples} usage records, one at a time, "
                        f"{pause_seconds:g} s apart, in ms (goal: commit -> browser p99 < "
                        f"{GOAL_P99_MS:.0f} ms)")
    for column in ("measure", "n", "min", "p50", "p90", "p99", "max"):
        first = column == "measure"
        table.add_column(column, justify="left" if first else "right", no_wrap=first)
    rows = (("publish -> commit", result.publish_to_commit),
            ("commit -> browser", result.commit_to_browser),
            ("  commit -> fetch start", result.commit_to_live_fetch),
            ("  /live fetch", result.live_fetch),
            ("publish -> browser", result.publish_to_browser),
            ("baseline: /healthz fetch", result.healthz))
    for name, values in rows:
        table.add_row(name, str(len(values)), f"{min(values, default=float('nan')):.1f}",
                      *(f"{percentile(values, f):.1f}" for f in (0.5, 0.9, 0.99)),
                      f"{max(values, default=float('nan')):.1f}")
    console.print(table)
    p99 = percentile(result.commit_to_browser, 0.99)
    ratios = {f"p{int(f * 100)}": percentile(result.commit_to_browser, f)
              / percentile(result.healthz, f) for f in (0.5, 0.99)}
    console.print(f"commit -> browser / healthz: p50 {ratios['p50']:.1f}x, "
                  f"p99 {ratios['p99']:.1f}x; goal p99 < {GOAL_P99_MS:.0f} ms: "
                  f"{'met' if p99 < GOAL_P99_MS else 'NOT met'} ({p99:.0f} ms)", highlight=False)
    console.print(json.dumps({name: {"p50": percentile(values, 0.5),
                                     "p99": percentile(values, 0.99)}
                              for name, values in (("commit_to_browser",
                                                    result.commit_to_browser),
                                                   ("publish_to_browser",
                                                    result.publish_to_browser),
                                                   ("healthz", result.healthz))}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=SAMPLES_DEFAULT)
    parser.add_argument("--pause-seconds", type=float, default=PAUSE_SECONDS_DEFAULT,
                        help="pause before each sample")
    args = parser.parse_args()
    if not 1 <= args.samples <= SAMPLES_MAX:
        parser.error(f"--samples must be 1 to {SAMPLES_MAX}")
    if not 0 <= args.pause_seconds <= PAUSE_SECONDS_MAX:
        parser.error(f"--pause-seconds must be 0 to {PAUSE_SECONDS_MAX:g}")
    if not Path(CHROMIUM_PATH).exists():
        raise SystemExit(f"{CHROMIUM_PATH} is missing: sudo apt-get install -y chromium")
    console.print(f"machine: {machine()}", highlight=False)
    result = run(args.samples, args.pause_seconds)
    report(result, args.samples, args.pause_seconds)


if __name__ == "__main__":
    main()
