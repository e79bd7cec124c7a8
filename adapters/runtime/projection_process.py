"""Wiring of the projection runner: the Ledger's log and mapper, the PostgreSQL store, NATS.

`run_projections(database_url, nats_url, stop_event)` is what `ledger project` and `ledger up`
run: it catches up with the log, then follows it (LISTEN/NOTIFY, with a polling fallback) until
`stop_event` is set. Each committed batch leaves its `ledger.views.*` messages in the read
models' outbox, and a relay in a thread of this process (adapters/nats/views_relay.py) puts them
on the JetStream stream `LEDGER_VIEWS`, woken by the runner after each commit. `ledger up` starts
it through `projections_up_runner`, listed in `adapters.runtime.processes.UP_RUNNERS`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from adapters.nats.views_relay import NatsViewsRelay
from adapters.postgres.notification_log import PostgresNotificationLog
from adapters.postgres.view_backfill import backfill_holders_and_packages
from adapters.postgres.view_outbox import PostgresViewOutbox
from adapters.postgres.view_schema import LIVE_SCHEMA
from adapters.postgres.view_store import PostgresViewStore
from adapters.runtime.processes import Runtime, thread_runner
from adapters.runtime.settings import eventsourcing_env
from projections.decoding import EventDecoder
from projections.ports import ChangePublisher
from projections.runner import ProjectionRunner
from services.ledger import Ledger

log = logging.getLogger(__name__)
# How often the projections' connections are checked for a server that went away.
CONNECTION_CHECK_SECONDS = 1.0


def ledger_decoder(database_url: str) -> EventDecoder:
    """A decoder configured exactly like the Ledger application that wrote the log."""
    ledger = Ledger(env=eventsourcing_env(database_url))
    try:
        return EventDecoder(ledger.mapper)
    finally:
        ledger.close()


@contextmanager
def _opened(database_url: str, schema: str) -> Iterator[tuple[PostgresNotificationLog,
                                                             PostgresViewStore, EventDecoder]]:
    decoder = ledger_decoder(database_url)
    log_source = PostgresNotificationLog(database_url)
    try:
        store = PostgresViewStore(database_url, schema)
    except BaseException:
        log_source.close()
        raise
    try:
        # Read models upgraded from before version 5: holders and packages, once.
        backfill_holders_and_packages(store.conn, schema, decoder.decode)
        yield log_source, store, decoder
    finally:
        store.close()
        log_source.close()


@contextmanager
def open_runner(database_url: str, *, schema: str = LIVE_SCHEMA,
                publisher: ChangePublisher | None = None) -> Iterator[ProjectionRunner]:
    with _opened(database_url, schema) as (log_source, store, decoder):
        yield ProjectionRunner(log_source, store, decoder, publisher)


class ProjectionConnectionLostError(psycopg.OperationalError):
    """The projections' database connection broke (a server restart): open them again."""


def _watch_connections(connections: list[psycopg.Connection[Any]], outer: threading.Event,
                       inner: threading.Event, lost: list[bool]) -> None:
    """The runner retries a failed batch forever on the connections it holds; a connection
    that broke never comes back, so stop it and say so (its caller opens new ones)."""
    while not outer.wait(CONNECTION_CHECK_SECONDS) and not inner.is_set():
        if any(conn.broken or conn.closed for conn in connections):
            lost.append(True)
            break
    inner.set()


def run_projections(database_url: str, nats_url: str | None,
                    stop_event: threading.Event) -> None:
    """Run the projections until `stop_event` is set (blocking; call it in a thread if needed).
    Raises ProjectionConnectionLostError if the database connection breaks: `ledger up`
    starts the projections again (adapters.runtime.processes), `ledger project` exits."""
    relay: NatsViewsRelay | None = None
    try:
        with _opened(database_url, LIVE_SCHEMA) as (log_source, store, decoder):
            if nats_url:  # after the store: it creates the outbox table
                outbox = PostgresViewOutbox(database_url)
                relay = NatsViewsRelay(nats_url, outbox, on_close=outbox.close)
            runner = ProjectionRunner(log_source, store, decoder, relay)
            log.info("projections start at log position %d", runner.position)
            inner, lost = threading.Event(), list[bool]()
            watcher = threading.Thread(target=_watch_connections, name="projections-watch",
                                       args=([log_source.conn, store.conn], stop_event, inner,
                                             lost), daemon=True)
            watcher.start()
            try:
                runner.run_forever(inner)
            finally:
                inner.set()
                watcher.join()
            if lost:
                raise ProjectionConnectionLostError(
                    f"the projections lost their database connection at log position "
                    f"{runner.position}")
    finally:
        if relay is not None:
            relay.close()


def _run_in_up(runtime: Runtime, stop_event: threading.Event) -> None:
    run_projections(runtime.database_url, runtime.nats_url or None, stop_event)


projections_up_runner = thread_runner(_run_in_up)
