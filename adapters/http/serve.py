"""`ledger serve`, and the HTTP part of `ledger up`: the API (and the dashboard) on uvicorn.

`ledger serve` uses the servers the other commands use: LEDGER_DATABASE_URL / LEDGER_NATS_URL,
else those of the `ledger up` running in the data folder. `ledger up` runs the same app through
`http_up_runner` (listed in `adapters.runtime.processes.UP_RUNNERS`) on its own servers, prints
the URL (`ledger up` itself issues and prints the first operator token). Both listen
on 127.0.0.1:8080 by default (LEDGER_HTTP_HOST, LEDGER_HTTP_PORT): put a TLS proxy in front
before exposing it. Logs are one JSON line per request (no tokens, no bodies).

uvicorn runs with its fastest options available here: the `httptools` parser and the `uvloop`
event loop when those packages are installed ("auto"), else the pure-Python ones.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import threading
from typing import Any

import uvicorn
from rich.console import Console

from adapters.runtime.processes import Runtime, thread_runner

console = Console(stderr=True)

HOST_DEFAULT = "127.0.0.1"
PORT_DEFAULT = 8080
PORT_ENV = "LEDGER_HTTP_PORT"
HOST_ENV = "LEDGER_HTTP_HOST"
# How long `ledger up` lets requests in flight finish when it stops.
UP_GRACEFUL_SHUTDOWN_SECONDS = 10


def _uvicorn_config(app: Any, host: str, port: int) -> uvicorn.Config:
    # uvicorn's access log prints raw paths and query strings; ours logs route templates.
    return uvicorn.Config(app, host=host, port=port, access_log=False, log_config=None,
                          loop="auto", http="auto",
                          timeout_graceful_shutdown=UP_GRACEFUL_SHUTDOWN_SECONDS)


def _run_in_up(runtime: Runtime, stop: threading.Event) -> None:
    """The API and dashboard of `ledger up`, until `stop` is set (runs in a worker thread, so
    uvicorn leaves the signals to `ledger up`)."""
    from adapters.http.app import create_app
    from adapters.runtime.composition import open_ledger

    host = os.environ.get(HOST_ENV, HOST_DEFAULT)
    port = int(os.environ.get(PORT_ENV, str(PORT_DEFAULT)))
    ledger = open_ledger(runtime.database_url)
    try:
        app = create_app(ledger, runtime.database_url, nats_url=runtime.nats_url or None)
        listening = _listen(host, port)
        if listening is None:
            stop.wait()
            return
        server = uvicorn.Server(_uvicorn_config(app, host, port))

        def stop_when_asked() -> None:
            stop.wait()
            server.should_exit = True

        threading.Thread(target=stop_when_asked, name="ledger-http-stop", daemon=True).start()
        console.print(f"[bold]HTTP API[/bold]  http://{host}:{port}  (API under /v1, OpenAPI at "
                      f"/openapi.json, dashboard at http://{host}:{port}/login)")
        server.run(sockets=[listening])
    finally:
        ledger.close()


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
    import uvicorn

    from adapters.http.app import create_app
    from adapters.runtime.composition import configured_runtime, open_ledger
    from adapters.runtime.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    runtime = configured_runtime(Settings.from_env())
    ledger = open_ledger(runtime.database_url)
    try:
        app = create_app(ledger, runtime.database_url, nats_url=runtime.nats_url or None)
        console.print(f"[bold]ledger serve[/bold]  http://{args.host}:{args.port}  "
                      f"(API under /v1, OpenAPI at /openapi.json, dashboard at /login)")
        uvicorn.Server(_uvicorn_config(app, args.host, args.port)).run()
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
    serve.set_defaults(handler=run_serve)
