"""`ledger serve`, and the HTTP part of `ledger up`: the API (and the dashboard) on uvicorn.

`ledger serve` uses the servers the other commands use: LEDGER_DATABASE_URL / LEDGER_NATS_URL,
else those of the `ledger up` running in the data folder. `ledger up` runs the same app through
`http_up_runner` (listed in `adapters.runtime.processes.UP_RUNNERS`) on its own servers, prints
the URL (`ledger up` itself issues and prints the first operator token). Both listen
on 127.0.0.1:8080 by default (LEDGER_HTTP_HOST, LEDGER_HTTP_PORT): put a TLS proxy in front
before exposing it. Logs are one JSON line per request (no tokens, no bodies).

Both serve with LEDGER_HTTP_WORKERS processes (`ledger serve --workers`; default one per CPU,
at most `workers.WORKERS_DEFAULT_MAX`): see `adapters.http.workers`. With one, the app runs in
this process (in `ledger up`, on a thread of its own).

uvicorn runs with its fastest options available here: the `httptools` parser and the `uvloop`
event loop when those packages are installed ("auto"), else the pure-Python ones.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
from pathlib import Path

import uvicorn
from rich.console import Console

from adapters.http.worker import uvicorn_config
from adapters.http.workers import (
    WORKERS_DEFAULT_MAX,
    WORKERS_ENV,
    WORKERS_MAX,
    WorkerGroup,
    workers_setting,
)
from adapters.runtime.collector import tune_collector
from adapters.runtime.processes import Runtime, thread_runner

console = Console(stderr=True)

HOST_DEFAULT = "127.0.0.1"
PORT_DEFAULT = 8080
PORT_ENV = "LEDGER_HTTP_PORT"
# Under the data folder: the HTTP workers' metrics files (prometheus-client multiprocess mode).
HTTP_METRICS_FOLDER = "http-metrics"
HOST_ENV = "LEDGER_HTTP_HOST"


def _run_in_up(runtime: Runtime, stop: threading.Event) -> None:
    """The API and dashboard of `ledger up`, until `stop` is set (runs in a worker thread, so
    uvicorn leaves the signals to `ledger up`)."""
    host = os.environ.get(HOST_ENV, HOST_DEFAULT)
    port = int(os.environ.get(PORT_ENV, str(PORT_DEFAULT)))
    workers = workers_setting()
    listening = _listen(host, port)
    if listening is None:
        stop.wait()
        return
    with listening:
        _announce(host, port, workers)
        if workers > 1:
            _run_workers(listening, host, port, workers, runtime.database_url,
                         runtime.nats_url or None, runtime.data_dir / HTTP_METRICS_FOLDER, stop)
        else:
            _run_in_thread(listening, host, port, runtime, stop)


def _run_in_thread(listening: socket.socket, host: str, port: int, runtime: Runtime,
                   stop: threading.Event) -> None:
    from adapters.http.app import create_app
    from adapters.runtime.composition import open_ledger

    ledger = open_ledger(runtime.database_url)
    try:
        app = create_app(ledger, runtime.database_url, nats_url=runtime.nats_url or None)
        server = uvicorn.Server(uvicorn_config(app, host, port))

        def stop_when_asked() -> None:
            stop.wait()
            server.should_exit = True

        threading.Thread(target=stop_when_asked, name="ledger-http-stop", daemon=True).start()
        server.run(sockets=[listening])
    finally:
        ledger.close()


def _run_workers(listening: socket.socket, host: str, port: int, workers: int,
                 database_url: str, nats_url: str | None, metrics_dir: Path,
                 stop: threading.Event) -> None:
    """`workers` processes on `listening` until `stop` is set; the tables they use are
    created here first, once (several processes creating them at once would race)."""
    from adapters.http.app import prepare_database
    from adapters.runtime.composition import open_ledger

    open_ledger(database_url).close()  # the event store's tables
    prepare_database(database_url)
    group = WorkerGroup(listening, host, port, workers, database_url=database_url,
                        nats_url=nats_url, metrics_dir=metrics_dir)
    group.start()
    group.run_until(stop)


def _announce(host: str, port: int, workers: int) -> None:
    console.print(f"[bold]HTTP API[/bold]  http://{host}:{port}  (API under /v1, OpenAPI at "
                  f"/openapi.json, dashboard at http://{host}:{port}/login; {workers} worker "
                  f"process{'es' if workers > 1 else ''})")


def _listen(host: str, port: int) -> socket.socket | None:
    """The listening socket, or None with a message when the address is taken: the rest of
    `ledger up` (ingest, projections) keeps running, and says how to serve HTTP elsewhere
    (uvicorn would exit the whole process instead)."""
    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as error:
        listening.close()
        console.print(f"[red]HTTP API not started: {host}:{port} is not available ({error}).[/red]"
                      f" Set {PORT_ENV} (or {HOST_ENV}) and start `ledger up` again, or run "
                      "`ledger serve --port <port>` in another terminal.")
        return None
    return listening


http_up_runner = thread_runner(_run_in_up)


def run_serve(args: argparse.Namespace) -> int:
    from adapters.http.app import create_app
    from adapters.runtime.composition import configured_runtime, open_ledger
    from adapters.runtime.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    runtime = configured_runtime(Settings.from_env())
    workers = workers_setting(
        {WORKERS_ENV: str(args.workers)} if args.workers is not None else None)
    if workers > 1:
        listening = _listen(args.host, args.port)
        if listening is None:
            return 1
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda _signum, _frame: stop.set())
        metrics_dir = Path(tempfile.mkdtemp(prefix="ledger-http-metrics-"))
        try:
            with listening:
                _announce(args.host, args.port, workers)
                _run_workers(listening, args.host, args.port, workers, runtime.database_url,
                             runtime.nats_url or None, metrics_dir, stop)
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        return 0
    ledger = open_ledger(runtime.database_url)
    try:
        app = create_app(ledger, runtime.database_url, nats_url=runtime.nats_url or None)
        _announce(args.host, args.port, workers)
        tune_collector()  # POST /v1/usage +17-20%, reads unchanged (BENCHMARKS.md)
        uvicorn.Server(uvicorn_config(app, args.host, args.port)).run()
    finally:
        ledger.close()
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = subparsers.add_parser("serve", help="run the HTTP API and dashboard (uvicorn)")
    serve.add_argument("--host", default=os.environ.get(HOST_ENV, HOST_DEFAULT),
                       help=f"address to listen on (default {HOST_DEFAULT}, or ${HOST_ENV})")
    serve.add_argument("--port", type=int,
                       default=int(os.environ.get(PORT_ENV, str(PORT_DEFAULT))),
                       help=f"port (default {PORT_DEFAULT}, or ${PORT_ENV})")
    serve.add_argument("--workers", type=int, default=None,
                       help=f"HTTP worker processes, 1 to {WORKERS_MAX} (default: one per "
                            f"CPU, at most {WORKERS_DEFAULT_MAX}, or ${WORKERS_ENV})")
    serve.set_defaults(handler=run_serve)
