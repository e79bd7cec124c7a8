"""One HTTP worker process: the app on uvicorn, on a listening socket inherited from its parent.

`adapters.http.workers.WorkerGroup` starts `python -m adapters.http.worker --fd N` once per
worker, every one on the same socket (the kernel hands each new connection to one of them). A
worker opens its own Ledger, connection pool and dashboard subscription; everything a request
needs that outlives it is in PostgreSQL (tokens and teams are version-checked per request,
usage ids are idempotency keys, sessions and token last use are rows), so any worker may answer
any request. Its settings come from its environment, set by the parent:

    LEDGER_DATABASE_URL, LEDGER_NATS_URL   the servers (as `ledger serve` reads them)
    PROMETHEUS_MULTIPROC_DIR               where prometheus-client's multiprocess mode keeps
                                           this worker's metrics (read by every /metrics)

uvicorn, in this process's main thread, stops on SIGTERM or SIGINT after letting the requests
in flight finish (up to GRACEFUL_SHUTDOWN_SECONDS). If the parent dies, the worker gets SIGTERM
from the kernel where util-linux `setpriv` is there (`die_with_parent`), and in any case from
itself within PARENT_CHECK_SECONDS (a thread watches its parent pid).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

import uvicorn

from adapters.runtime.collector import tune_collector

# How long a stopping server lets requests in flight finish.
GRACEFUL_SHUTDOWN_SECONDS = 10
DATABASE_URL_ENV = "LEDGER_DATABASE_URL"
NATS_URL_ENV = "LEDGER_NATS_URL"
# As `ledger up` logs (adapters.cli.main): one line per record.
LOG_FORMAT = "%(asctime)s %(name)s %(message)s"
PARENT_CHECK_SECONDS = 1.0


def uvicorn_config(app: Any, host: str, port: int) -> uvicorn.Config:
    """uvicorn with its fastest options available here (`httptools`, `uvloop` when installed:
    "auto"); our middleware logs route templates, so uvicorn's access log (raw paths and query
    strings) is off."""
    return uvicorn.Config(app, host=host, port=port, access_log=False, log_config=None,
                          loop="auto", http="auto",
                          timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)


def serve_on(listening: socket.socket, host: str, port: int) -> None:
    """Serve the app on `listening` until uvicorn is told to stop (SIGTERM, SIGINT)."""
    from adapters.http.app import create_app
    from adapters.runtime.composition import open_ledger

    database_url = os.environ[DATABASE_URL_ENV]
    ledger = open_ledger(database_url)
    try:
        app = create_app(ledger, database_url, nats_url=os.environ.get(NATS_URL_ENV) or None)
        tune_collector()  # as `ledger serve` with one worker (adapters.runtime.collector)
        uvicorn.Server(uvicorn_config(app, host, port)).run(sockets=[listening])
    finally:
        ledger.close()


def stop_when_orphaned(parent_pid: int) -> None:
    """SIGTERM to this process (uvicorn's graceful stop) once its parent is gone."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="ledger-http-parent", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one HTTP worker of `ledger serve`/`ledger up`")
    parser.add_argument("--fd", type=int, required=True, help="the inherited listening socket")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    stop_when_orphaned(os.getppid())
    serve_on(socket.socket(fileno=args.fd), args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
