"""`ledger serve`: the HTTP API (and the dashboard) on uvicorn.

It uses the servers the other commands use: LEDGER_DATABASE_URL / LEDGER_NATS_URL, else those of
the `ledger up` running in the data folder. It listens on 127.0.0.1 by default: put a TLS proxy in
front before exposing it. Logs are one JSON line per request (no tokens, no bodies).
"""

from __future__ import annotations

import argparse
import logging
import os

from rich.console import Console

console = Console(stderr=True)

HOST_DEFAULT = "127.0.0.1"
PORT_DEFAULT = 8080
PORT_ENV = "LEDGER_HTTP_PORT"
HOST_ENV = "LEDGER_HTTP_HOST"


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
        # uvicorn's access log prints raw paths and query strings; ours logs route templates.
        uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_config=None)
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
