"""The composition root: the one place that picks concrete adapters and builds the services.

`running_servers()` answers "which PostgreSQL and NATS?": the configured ones, or embedded ones
started under the data folder (and kept there between runs). Everything else takes URLs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from adapters.embedded import EmbeddedNats, EmbeddedPostgres
from adapters.settings import Settings, eventsourcing_env
from services.ledger import Ledger

EMBEDDED_DATABASE_NAME = "ledger"


@dataclass(frozen=True)
class Servers:
    database_url: str
    nats_url: str
    embedded: bool


def open_ledger(database_url: str) -> Ledger:
    return Ledger(env=eventsourcing_env(database_url))


@contextmanager
def running_servers(settings: Settings, *, need_nats: bool = True) -> Iterator[Servers]:
    """Yield server URLs, starting embedded servers for whatever is not configured."""
    started: list[EmbeddedPostgres | EmbeddedNats] = []
    try:
        database_url = settings.database_url
        if database_url is None:
            postgres = EmbeddedPostgres(settings.data_dir.resolve() / "postgres").start()
            started.append(postgres)
            database_url = postgres.create_database(EMBEDDED_DATABASE_NAME)
        nats_url = settings.nats_url or ""
        if not nats_url and need_nats:
            nats = EmbeddedNats(settings.data_dir.resolve() / "nats").start()
            started.append(nats)
            nats_url = nats.url
        yield Servers(database_url=database_url, nats_url=nats_url, embedded=bool(started))
    finally:
        for server in reversed(started):
            server.stop()
