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

A worker that starts while PostgreSQL is unreachable (restarting, say: the group starts a worker
again whenever one exits) waits for it, trying again by DATABASE_BACKOFF for up to
DATABASE_WAIT_SECONDS with one log line per attempt, and then exits with code 1 and one line
saying why: never a traceback for a database that is away for a moment.

uvicorn, in this process's main thread, stops on SIGTERM or SIGINT after letting the requests
in flight finish (up to GRACEFUL_SHUTDOWN_SECONDS). If the parent dies, the worker gets SIGTERM
from the kernel where util-linux `setpriv` is there (`die_with_parent`), and in any case from
itself within PARENT_CHECK_SECONDS (a thread watches its parent pid).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import uvicorn

from adapters.runtime.collector import tune_collector
from adapters.runtime.processes import SERVER_FAILURES
from adapters.runtime.settings import apply_postgres_session_options, first_line, redacted
from services.backoff import Backoff

if TYPE_CHECKING:
    from fastapi import FastAPI

    from services.ledger import Ledger

# How long a stopping server lets requests in flight finish.
GRACEFUL_SHUTDOWN_SECONDS = 10
DATABASE_URL_ENV = "LEDGER_DATABASE_URL"
NATS_URL_ENV = "LEDGER_NATS_URL"
# As `ledger up` logs (adapters.cli.main): one line per record.
LOG_FORMAT = "%(asctime)s %(name)s %(message)s"
PARENT_CHECK_SECONDS = 1.0
# A worker starting while PostgreSQL is away waits this long for it before it gives up.
DATABASE_WAIT_SECONDS = 60.0
DATABASE_BACKOFF = Backoff(first_seconds=0.2, longest_seconds=5.0)

log = logging.getLogger("ledger.http.worker")


class DatabaseUnreachableError(RuntimeError):
    """PostgreSQL did not answer a starting worker within DATABASE_WAIT_SECONDS."""


def open_app(database_url: str, nats_url: str | None) -> tuple[Ledger, FastAPI]:
    """The worker's Ledger and app, waiting for the database while it is unreachable."""
    from adapters.http.app import create_app
    from adapters.runtime.composition import open_ledger

    deadline = time.monotonic() + DATABASE_WAIT_SECONDS
    failures = 0
    while True:
        ledger: Ledger | None = None
        try:
            ledger = open_ledger(database_url)
            return ledger, create_app(ledger, database_url, nats_url=nats_url)
        except SERVER_FAILURES as error:
            if ledger is not None:
                with contextlib.suppress(*SERVER_FAILURES):
                    ledger.close()
            failures += 1
            delay = DATABASE_BACKOFF.delay_seconds(failures)
            reason = redacted(first_line(error))
            if time.monotonic() + delay > deadline:
                raise DatabaseUnreachableError(
                    f"the database at {DATABASE_URL_ENV} did not answer within "
                    f"{DATABASE_WAIT_SECONDS:.0f}s: {reason}") from None
            log.warning("HTTP worker %d: the database is not reachable (%s); trying again in "
                        "%.1fs", os.getpid(), reason, delay)
            time.sleep(delay)


def uvicorn_config(app: Any, host: str, port: int) -> uvicorn.Config:
    """uvicorn with its fastest options available here (`httptools`, `uvloop` when installed:
    "auto"); our middleware logs route templates, so uvicorn's access log (raw paths and query
    strings) is off."""
    return uvicorn.Config(app, host=host, port=port, access_log=False, log_config=None,
                          loop="auto", http="auto",
                          timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)


def serve_on(listening: socket.socket, host: str, port: int) -> None:
    """Serve the app on `listening` until uvicorn is told to stop (SIGTERM, SIGINT)."""
    database_url = os.environ[DATABASE_URL_ENV]
    ledger, app = open_app(database_url, os.environ.get(NATS_URL_ENV) or None)
    try:
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
    apply_postgres_session_options()  # before the views pool or the ledger connects
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    stop_when_orphaned(os.getppid())
    try:
        serve_on(socket.socket(fileno=args.fd), args.host, args.port)
    except DatabaseUnreachableError as error:
        log.error("HTTP worker %d stops: %s", os.getpid(), error)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
