"""The composition root: the one place that picks concrete adapters and builds the services.

Which PostgreSQL and NATS? `running_servers()` is for `ledger up` only: the configured ones, or
embedded ones it starts (and owns) under the data folder. Every other command attaches with
`attached_servers()`: the configured ones, or those of the `ledger up` running on the data folder,
read from its servers file; it never starts or stops a server (docs/operations.md).

One `ledger up` per data folder: `data_folder_lock()` holds an OS file lock (flock) on
`<data folder>/ledger.lock` for the life of the process; the kernel releases it when the process
dies, however it dies, so a stale lock cannot exist. Other commands test the same lock to know
whether a ledger is running there.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from adapters.nats.ingest_settings import IngestSettings
from adapters.runtime.embedded_nats import EmbeddedNats
from adapters.runtime.embedded_postgres import EmbeddedPostgres
from adapters.runtime.processes import Runtime
from adapters.runtime.server_files import (
    PRIVATE_FOLDER_MODE,
    TRAVERSE_ONLY_FOLDER_MODE,
    write_private,
)
from adapters.runtime.settings import ConfigurationError, Settings, eventsourcing_env
from services.ledger import Ledger

EMBEDDED_DATABASE_NAME = "ledger"
LOCK_FILE = "ledger.lock"
SERVERS_FILE = "servers.json"


class LedgerNotRunningError(ConfigurationError):
    """A command needs the servers of a running `ledger up` and there is none."""


@dataclass(frozen=True)
class Servers:
    database_url: str
    nats_url: str
    embedded: bool
    producer_nats_url: str = ""
    owned: tuple[EmbeddedPostgres | EmbeddedNats, ...] = field(default=(), repr=False)

    def stopped_server(self) -> str | None:
        """A one-line account of the first embedded server that has exited, if any."""
        for server in self.owned:
            code = server.exit_code()
            if code is not None:
                name = "PostgreSQL" if isinstance(server, EmbeddedPostgres) else "NATS"
                return (f"the embedded {name} server exited (code {code}); see "
                        f"{server.log_path}")
        return None


def open_ledger(database_url: str) -> Ledger:
    return Ledger(env=eventsourcing_env(database_url))


def servers_file(data_dir: Path) -> Path:
    return data_dir.resolve() / SERVERS_FILE


def prepare_data_dir(data_dir: Path) -> Path:
    """The data folder, private: 0700, or 0711 when we are root (PostgreSQL's system user must
    pass through it to its own folder, without listing it)."""
    folder = data_dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(TRAVERSE_ONLY_FOLDER_MODE if os.geteuid() == 0 else PRIVATE_FOLDER_MODE)
    return folder


@contextmanager
def data_folder_lock(data_dir: Path) -> Iterator[None]:
    """Hold `<data folder>/ledger.lock` exclusively, or say who holds it."""
    path = data_dir.resolve() / LOCK_FILE
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by children
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "?"
            raise ConfigurationError(
                f"another `ledger up` (pid {holder}) is running on {data_dir.resolve()}; stop "
                "it first, or give this one another LEDGER_DATA_DIR") from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(descriptor)


def ledger_is_running(data_dir: Path) -> bool:
    """Whether a `ledger up` holds the data folder's lock right now."""
    path = data_dir.resolve() / LOCK_FILE
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


def write_servers_file(data_dir: Path, servers: Servers) -> Path:
    """Where other commands find the running servers; it holds credentials, hence 0600."""
    path = servers_file(data_dir)
    write_private(path, json.dumps({"database_url": servers.database_url,
                                    "nats_url": servers.nats_url,
                                    "producer_nats_url": servers.producer_nats_url,
                                    "pid": os.getpid()}, indent=2) + "\n")
    return path


@contextmanager
def running_servers(settings: Settings, *, need_nats: bool = True) -> Iterator[Servers]:
    """Yield server URLs, starting embedded servers for whatever is not configured (`ledger up`
    only, with the data folder's lock held); they stop when the block ends, or die with us."""
    started: list[EmbeddedPostgres | EmbeddedNats] = []
    data_dir = settings.data_dir.resolve()
    try:
        # NATS first: it starts in a moment, and producers are acknowledged (the stream keeps
        # their records) while PostgreSQL is still starting or recovering.
        nats_url = settings.nats_url or ""
        producer_url = settings.producer_nats_url or nats_url
        if not nats_url and need_nats:
            nats = EmbeddedNats(data_dir / "nats")
            started.append(nats)
            nats.start()
            nats_url, producer_url = nats.url, nats.producer_url
        database_url = settings.database_url
        if database_url is None:
            postgres = EmbeddedPostgres(data_dir / "postgres")
            started.append(postgres)
            postgres.start()
            database_url = postgres.create_database(EMBEDDED_DATABASE_NAME)
        yield Servers(database_url=database_url, nats_url=nats_url, embedded=bool(started),
                      producer_nats_url=producer_url, owned=tuple(started))
    finally:
        for server in reversed(started):
            server.stop()


def attached_servers(settings: Settings, *, need_database: bool = True,
                     need_nats: bool = False) -> Servers:
    """The configured servers, completed from the servers file of the `ledger up` running on
    the data folder. Never starts a server: without one, says how to get one."""
    database_url, nats_url = settings.database_url, settings.nats_url
    producer_url = settings.producer_nats_url
    missing_database = need_database and database_url is None
    missing_nats = need_nats and nats_url is None
    if missing_database or missing_nats or (not need_nats and nats_url is None):
        written = _running_ledger_servers(settings.data_dir,
                                          required=missing_database or missing_nats)
        database_url = database_url or written.get("database_url")
        nats_url = nats_url or written.get("nats_url")
        producer_url = producer_url or written.get("producer_nats_url")
    return Servers(database_url=database_url or "", nats_url=nats_url or "", embedded=False,
                   producer_nats_url=producer_url or nats_url or "")


def _running_ledger_servers(data_dir: Path, *, required: bool) -> dict[str, str]:
    path = servers_file(data_dir)
    if ledger_is_running(data_dir) and path.exists():
        try:
            written: dict[str, str] = json.loads(path.read_text())
        except ValueError:
            raise ConfigurationError(f"{path} is damaged; restart `ledger up`") from None
        return written
    if not required:
        return {}
    raise LedgerNotRunningError(
        f"no `ledger up` is running on {data_dir.resolve()}: start it there (or set "
        "LEDGER_DATA_DIR to its folder), or set LEDGER_DATABASE_URL and LEDGER_NATS_URL")


def configured_runtime(settings: Settings, *, producer: bool = False) -> Runtime:
    """URLs from the environment, else those of the `ledger up` running on the data folder
    (never a server of our own). `producer`: the NATS URL is the producer credential."""
    servers = attached_servers(settings, need_database=True, need_nats=True)
    return Runtime(database_url=servers.database_url,
                   nats_url=servers.producer_nats_url if producer else servers.nats_url,
                   data_dir=settings.data_dir.resolve(), ingest=IngestSettings.from_env())
