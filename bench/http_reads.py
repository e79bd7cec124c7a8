"""HTTP read latency: balance and usage reads at a fixed rate against /healthz in the same run.

Setup: an embedded PostgreSQL (durable), a team with accounts and a day of usage recorded
through the service layer and projected, an operator token, and the API served by uvicorn in
its own process (as `ledger serve` runs it). The load comes from a second process: an open-loop
generator that starts requests on a fixed schedule (`--rate` per second, spread evenly over the
three kinds: balance, usage?window=month, /healthz) whether or not earlier ones finished, so a
slow server shows as latency instead of being hidden by the client waiting (coordinated
omission). Latency is measured from each request's scheduled start.

Goal (issue 11): p99 of the reads under 20 ms at 500 requests/s, next to /healthz's p99 as the
floor of the HTTP stack on this machine. On this 2-core machine measure it with `wrk` (below):
`uv run --locked python bench/http_reads.py --wrk --paced 500 --seconds 10`.

On this 2-core machine the open-loop generator's own client (httpx) saturates before the server
does once requests queue (its pool is scanned per request: at 500/s it fell to ~50/s and its
latencies were minutes; it warns when it does not keep the rate), so `--wrk` measures with Debian's
`wrk` instead: closed loop, `--connections` at once, each route in turn, /healthz first as the
same-run baseline: `uv run --locked python bench/http_reads.py --wrk --seconds 15`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest_common import REPO_ROOT, bench_servers, machine, priced_accounts

console = Console()

RATE_DEFAULT = 500
# Below this share of the asked rate, the open-loop generator fell behind its own schedule and
# its latencies measure its queue (a warning says so).
RATE_KEPT_SHARE_MIN = 0.9
SECONDS_DEFAULT = 30.0
WARMUP_SECONDS_DEFAULT = 5.0
ACCOUNTS = 20
USAGE_RECORDS = 20_000
USAGE_BATCH = 1000
SERVER_READY_TIMEOUT_SECONDS = 60.0
REQUEST_TIMEOUT_SECONDS = 10.0
CONNECTIONS_MAX = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def prepare(database_url: str) -> tuple[str, str, str, str]:
    """A team with a day of usage, projected; returns (team id, the owner's token, an account
    id, a service token with scope authorization:read)."""
    from adapters.runtime.composition import open_ledger
    from adapters.runtime.projection_process import open_runner
    from domain.usage import UsageRecord
    from services.ledger import Ledger
    from services.tokens import Tokens

    ledger: Ledger = open_ledger(database_url)
    try:
        accounts = priced_accounts(ledger, ACCOUNTS)
        team_id = str(ledger.get_account(accounts[0].account_id).team_id)
        start = datetime.now(UTC) - timedelta(hours=20)
        for first in range(0, USAGE_RECORDS, USAGE_BATCH):
            ledger.record_usage_batch([UsageRecord(
                usage_id=f"bench-{n}", account_id=accounts[n % ACCOUNTS].account_id,
                occurred_at=start + timedelta(seconds=n * 3), model=f"model-{n % 4}",
                success=n % 17 != 0, input_tokens=1200, output_tokens=300,
                cached_input_tokens=100) for n in range(first, first + USAGE_BATCH)])
        # The bench team's owner reads its balance, as a dashboard would.
        from services.actor import Actor

        token = Tokens(ledger).issue(kind="user", subject="bench-owner", name="bench",
                                     scopes=[], expires_at=None,
                                     actor=Actor.operator("bench")).secret
        # The gateway asks "may this account spend?" with a service token.
        service_token = Tokens(ledger).issue(
            kind="service", subject="bench-gateway", name="bench gateway",
            scopes=["authorization:read"], expires_at=None,
            actor=Actor.operator("bench")).secret
    finally:
        ledger.close()
    with open_runner(database_url) as runner:
        runner.catch_up()
    return team_id, token, str(accounts[0].account_id), service_token


def serve(database_url: str, nats_url: str, port: int, workers: int
          ) -> subprocess.Popen[bytes]:
    """`ledger serve --workers N` (the API and the dashboard, as shipped), its logs quiet."""
    env = {**os.environ, "LEDGER_DATABASE_URL": database_url, "LEDGER_NATS_URL": nats_url}
    extra = ["--workers", str(workers)] if workers > 1 else []  # older checkouts: no option
    return subprocess.Popen([sys.executable, "-c", SERVE_CODE, "serve", "--port", str(port),
                             *extra], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# `ledger serve` through its entry point, from this checkout.
SERVE_CODE = "import sys; from adapters.cli.main import main; sys.exit(main(sys.argv[1:]))"


def wait_ready(base: str) -> None:
    deadline = time.monotonic() + SERVER_READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the API at {base} did not answer within {SERVER_READY_TIMEOUT_SECONDS}s")


async def load(base: str, token: str, team_id: str, rate: int, seconds: float,
               warmup_seconds: float) -> dict[str, Any]:
    paths = {"balance": f"/v1/teams/{team_id}/balance",
             "usage": f"/v1/teams/{team_id}/usage?window=month",
             "healthz": "/healthz"}
    kinds = list(paths)
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    errors: dict[str, int] = {k: 0 for k in kinds}
    limits = httpx.Limits(max_connections=CONNECTIONS_MAX,
                          max_keepalive_connections=CONNECTIONS_MAX)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=REQUEST_TIMEOUT_SECONDS,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        async def one(kind: str, scheduled: float, measured: bool) -> None:
            try:
                answer = await client.get(paths[kind])
                ok = answer.status_code == 200
            except httpx.HTTPError:
                ok = False
            elapsed_ms = (time.perf_counter() - scheduled) * 1000
            if measured:
                if ok:
                    samples[kind].append(elapsed_ms)
                else:
                    errors[kind] += 1

        total = int(rate * (warmup_seconds + seconds))
        interval = 1.0 / rate
        begin = time.perf_counter()
        tasks = []
        for n in range(total):
            scheduled = begin + n * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            measured = n * interval >= warmup_seconds
            tasks.append(asyncio.create_task(one(kinds[n % 3], scheduled, measured)))
        await asyncio.gather(*tasks)
        achieved = total / (time.perf_counter() - begin)
    return {"samples": samples, "errors": errors, "achieved_rate": achieved}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def generator_process(base: str, token: str, team_id: str, rate: int, seconds: float,
                      warmup_seconds: float, out: Any) -> None:
    out.send(asyncio.run(load(base, token, team_id, rate, seconds, warmup_seconds)))


WRK_CONNECTIONS_DEFAULT = 8
WRK_THREADS = 1
WRK_TIMEOUT_SECONDS = 5


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User + system CPU of the processes and of their children (PostgreSQL's backends)."""
    total = 0.0
    for process in processes:
        for one in [process, *process.children(recursive=True)]:
            try:
                times = one.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
    return total


def postmaster(folder: Path) -> psutil.Process:
    """The bench's own PostgreSQL (other PostgreSQL servers may run on the machine)."""
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and cmdline[0].endswith("postgres") and str(folder) in " ".join(cmdline):
            return process
    raise SystemExit(f"no PostgreSQL of {folder} found")


def wrk_routes(base: str, token: str, team_id: str, connections: int,
               seconds: float, account_id: str, service_token: str,
               server: list[psutil.Process], database: list[psutil.Process],
               paced_rate: int | None = None, folder: Path | None = None
               ) -> list[tuple[str, str]]:
    """Closed-loop load from Debian's `wrk` (C, its own process): each route in turn with the
    same connections; its latency distribution and requests/s, as wrk prints them, and the CPU
    the API server and PostgreSQL spent per request (less sensitive than latency to other work
    on a shared machine). `paced_rate`: each connection waits between its requests (wrk's
    `delay()` hook) so that all together send about that many requests/s: latency at a given
    load rather than at saturation (measured from each request's send: a stalled server
    delays the next sends, so this still understates queueing, unlike an open-loop generator)."""
    if shutil.which("wrk") is None:
        raise SystemExit("--wrk needs Debian's wrk: apt-get install -y wrk")
    script: list[str] = []
    if paced_rate:
        assert folder is not None
        pace = folder / "pace.lua"
        pace.write_text(f"function delay() return {connections * 1000 // paced_rate} end\n")
        script = ["-s", str(pace)]
    routes = [("healthz (baseline)", "/healthz", token),
              ("balance", f"/v1/teams/{team_id}/balance", token),
              ("usage month", f"/v1/teams/{team_id}/usage?window=month", token),
              ("may spend (service token)", f"/v1/accounts/{account_id}/authorization",
               service_token)]
    printed = []
    for name, path, bearer in routes:
        api_before, db_before = cpu_seconds(server), cpu_seconds(database)
        answer = subprocess.run(
            ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds:.0f}s",
             f"--timeout={WRK_TIMEOUT_SECONDS}s", "--latency", *script,
             "-H", f"Authorization: Bearer {bearer}", base + path],
            capture_output=True, text=True, check=True)
        api, db = cpu_seconds(server) - api_before, cpu_seconds(database) - db_before
        done = re.search(r"(\d+) requests in", answer.stdout)
        requests = int(done.group(1)) if done else 0
        per_request = (f"{(api + db) / requests * 1000:.2f} ms (API server "
                       f"{api / requests * 1000:.2f}, PostgreSQL {db / requests * 1000:.2f})"
                       if requests else "n/a")
        printed.append((name, answer.stdout + f"CPU per request (API server + PostgreSQL): "
                        f"{per_request}\n"))
    return printed


def print_against_healthz(printed: list[tuple[str, str]]) -> None:
    """Each route's requests/s, p50, p99 and CPU per request, and as a ratio to /healthz's in
    the same run (the first route), with the load average: figures from a shared machine."""
    def figures(output: str) -> tuple[float, float, float, float]:
        rate = re.search(r"Requests/sec:\s+([0-9.]+)", output)
        p50 = re.search(r"50%\s+([0-9.]+)(us|ms|s)", output)
        p99 = re.search(r"99%\s+([0-9.]+)(us|ms|s)", output)
        cpu = re.search(r"CPU per request.*?: ([0-9.]+) ms", output)

        def ms(found: re.Match[str] | None) -> float:
            if found is None:
                return float("nan")
            return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]
        return (float(rate.group(1)) if rate else float("nan"), ms(p50), ms(p99),
                float(cpu.group(1)) if cpu else float("nan"))

    table = Table(title="against /healthz in the same run; load average after: "
                  + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    for column in ("route", "req/s", "p50 ms", "p99 ms", "CPU ms/req", "CPU vs healthz",
                   "req/s vs healthz"):
        table.add_column(column)
    base = figures(printed[0][1])
    for name, output in printed:
        rate, p50, p99, cpu = figures(output)
        table.add_row(name, f"{rate:,.0f}", f"{p50:.2f}", f"{p99:.2f}", f"{cpu:.2f}",
                      f"{cpu / base[3]:.2f}x", f"{rate / base[0]:.2f}x")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wrk", action="store_true",
                        help="closed-loop load from Debian's wrk instead of the open-loop "
                             "generator (whose httpx client saturates first on 2 cores)")
    parser.add_argument("--connections", type=int, default=WRK_CONNECTIONS_DEFAULT,
                        help="--wrk: concurrent connections")
    parser.add_argument("--rate", type=int, default=RATE_DEFAULT, help="requests/s, all kinds")
    parser.add_argument("--seconds", type=float, default=SECONDS_DEFAULT)
    parser.add_argument("--warmup-seconds", type=float, default=WARMUP_SECONDS_DEFAULT)
    parser.add_argument("--paced", type=int, default=None, metavar="RATE",
                        help="--wrk: pace the connections to about RATE requests/s in all "
                             "(latency at that load instead of at saturation)")
    parser.add_argument("--workers", type=int, default=1,
                        help="HTTP worker processes of the served API (LEDGER_HTTP_WORKERS)")
    args = parser.parse_args()
    console.print(f"machine: {machine()}; load average before: "
                  f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}; {args.workers} HTTP "
                  f"worker(s)")
    with bench_servers() as servers:
        database_url = servers.database("bench_http")
        team_id, token, account_id, service_token = prepare(database_url)
        port = free_port()
        server = serve(database_url, servers.nats_url, port, args.workers)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base)
            if args.wrk:
                printed = wrk_routes(base, token, team_id, args.connections, args.seconds,
                                     account_id, service_token, [psutil.Process(server.pid)],
                                     [postmaster(servers.folder)], args.paced,
                                     servers.folder)
                for name, output in printed:
                    console.print(f"[bold]{name}[/bold] ({args.connections} connections)")
                    console.print(output)
                print_against_healthz(printed)
                return
            receive, send = multiprocessing.Pipe(duplex=False)
            generator = multiprocessing.Process(target=generator_process, args=(
                base, token, team_id, args.rate, args.seconds, args.warmup_seconds, send))
            generator.start()
            result = receive.recv()
            generator.join()
        finally:
            server.terminate()
            server.wait()
    table = Table(title=f"HTTP reads at {args.rate} requests/s "
                  f"(achieved {result['achieved_rate']:,.0f}/s), {args.seconds:.0f} s")
    for column in ("route", "requests", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms"):
        table.add_column(column)
    for kind, values in result["samples"].items():
        table.add_row(kind, str(len(values)), str(result["errors"][kind]),
                      *(f"{percentile(values, f):.1f}" for f in (0.5, 0.9, 0.99)),
                      f"{max(values, default=float('nan')):.1f}")
    console.print(table)
    if result["achieved_rate"] < RATE_KEPT_SHARE_MIN * args.rate:
        console.print(f"[bold red]the generator did not keep the rate[/] (achieved "
                      f"{result['achieved_rate']:,.0f} of {args.rate:,}/s): these latencies "
                      "include its own queue, not only the server's; measure with --wrk")
    console.print(json.dumps({k: {"p50": percentile(v, 0.5), "p99": percentile(v, 0.99)}
                              for k, v in result["samples"].items()}))


if __name__ == "__main__":
    main()
