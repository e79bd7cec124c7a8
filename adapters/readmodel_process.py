"""Wiring of the projection runner: the Ledger's log and mapper, the PostgreSQL store, NATS.

`run_projections(database_url, nats_url, stop_event)` is what `ledger project` and `ledger up`
run: it catches up with the log, then follows it (LISTEN/NOTIFY, with a polling fallback) until
`stop_event` is set, publishing each committed change on `ledger.views.*`. `ledger up` starts it
through `projections_up_runner`, listed in `adapters.runtime_services.UP_RUNNERS`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from adapters.readmodel_postgres import LIVE_SCHEMA, PostgresNotificationLog, PostgresViewStore
from adapters.runtime_services import Runtime, thread_runner
from adapters.settings import eventsourcing_env
from adapters.views_publisher import NatsViewsPublisher
from projections.decoding import EventDecoder
from projections.runner import ChangePublisher, ProjectionRunner
from services.ledger import Ledger

log = logging.getLogger(__name__)


def ledger_decoder(database_url: str) -> EventDecoder:
    """A decoder configured exactly like the Ledger application that wrote the log."""
    ledger = Ledger(env=eventsourcing_env(database_url))
    try:
        return EventDecoder(ledger.mapper)
    finally:
        ledger.close()


@contextmanager
def open_runner(database_url: str, *, schema: str = LIVE_SCHEMA,
                publisher: ChangePublisher | None = None) -> Iterator[ProjectionRunner]:
    decoder = ledger_decoder(database_url)
    log_source = PostgresNotificationLog(database_url)
    store = PostgresViewStore(database_url, schema)
    try:
        yield ProjectionRunner(log_source, store, decoder, publisher)
    finally:
        store.close()
        log_source.close()


def run_projections(database_url: str, nats_url: str | None,
                    stop_event: threading.Event) -> None:
    """Run the projections until `stop_event` is set (blocking; call it in a thread if needed)."""
    publisher = NatsViewsPublisher(nats_url) if nats_url else None
    try:
        with open_runner(database_url, publisher=publisher) as runner:
            log.info("projections start at log position %d", runner.position)
            runner.run_forever(stop_event)
    finally:
        if publisher is not None:
            publisher.close()


def _run_in_up(runtime: Runtime, stop_event: threading.Event) -> None:
    run_projections(runtime.database_url, runtime.nats_url or None, stop_event)


projections_up_runner = thread_runner(_run_in_up)
