"""Configuration from the environment, in one place, with the names documented in the README.

LEDGER_DATABASE_URL   PostgreSQL URL (postgresql://user:password@host:port/dbname). Unset: the
                      embedded server under LEDGER_DATA_DIR.
LEDGER_NATS_URL       NATS URL(s) of the ledger's own user (nats://user:password@host:port,
                      comma-separated for a cluster). Unset: the embedded server.
LEDGER_PRODUCER_NATS_URL  NATS URL of the producer user (publishes usage only), used by
                      `ledger demo` and printed by `ledger credentials producer`. Unset: the
                      embedded server's producer, else LEDGER_NATS_URL.
LEDGER_DATA_DIR       Folder for embedded servers' files (default ./.ledger-data).

Values are checked when read: a malformed URL is a `ConfigurationError` naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

DEFAULT_DATA_DIR = ".ledger-data"
POSTGRES_POOL_SIZE = 10
POSTGRES_LOCK_TIMEOUT_SECONDS = 10
# How long a command waits for a server that does not answer before it says so.
CONNECT_TIMEOUT_SECONDS = 5
POSTGRES_SCHEMES = ("postgresql", "postgres")
# Every ledger session plans each statement for its own parameters. psycopg and eventsourcing
# prepare statements, and PostgreSQL caches a generic plan for one after five executions, chosen
# from the tables' size at that moment: a process started on a fresh database kept sequential
# scans for the idempotency-key lookup and for event reads as the tables grew (measured on
# 2026-12-04: 1,000 keys looked up in 3.0-3.5 s at 60,000 keys, 1.6-6 ms when planned afresh;
# an event read 30-37 ms at 300,000 events). Planning each time costs 2-5% of the service
# layer's rate (bench/plan_cache_mode.py). Given to libpq as PGOPTIONS, so that the library's
# pool and our own connections all carry it; an operator's own PGOPTIONS is kept, and one that
# sets plan_cache_mode itself wins. The setting exists since PostgreSQL 12.
POSTGRES_SESSION_OPTIONS = "-c plan_cache_mode=force_custom_plan"
POSTGRES_OPTIONS_VARIABLE = "PGOPTIONS"
NATS_SCHEMES = ("nats", "tls")


class ConfigurationError(ValueError):
    """Bad configuration or input: the message names what to fix, in one line."""


def bounded_number(env: Mapping[str, str] | None, name: str, default: float, low: float,
                   high: float, unit: str) -> float:
    """The number setting `name` (default when unset or empty), refused outside [low, high]
    with a message that names it, its range and its unit."""
    raw = (env if env is not None else os.environ).get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of {unit}, got {raw[:50]!r}") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be {low:g} to {high:g} {unit}, got {raw[:50]!r}")
    return value


def check_database_url(url: str, name: str = "LEDGER_DATABASE_URL") -> str:
    parsed = urlparse(url)
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if parsed.scheme not in POSTGRES_SCHEMES or not parsed.hostname or port == -1:
        raise ConfigurationError(f"{name} must look like postgresql://user:password@host:port/"
                                 f"database, got {_redacted(url)!r}")
    return url


def nats_servers(url: str, name: str = "LEDGER_NATS_URL") -> list[str]:
    """The servers of a NATS URL (several separated by commas), each checked."""
    servers = [part.strip() for part in url.split(",") if part.strip()]
    for server in servers:
        parsed = urlparse(server)
        try:
            port = parsed.port
        except ValueError:
            port = -1
        if parsed.scheme not in NATS_SCHEMES or not parsed.hostname or port == -1:
            servers = []
            break
    if not servers:
        raise ConfigurationError(f"{name} must be nats://user:password@host:port (several "
                                 f"separated by commas), got {_redacted(url)!r}")
    return servers


def _redacted(url: str) -> str:
    """A URL as it may be printed: without its password."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


def redacted(url: str) -> str:
    return ",".join(_redacted(part) for part in url.split(","))


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name if it has none): what one log
    line or one line of a command's output says about it."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    nats_url: str | None
    data_dir: Path
    producer_nats_url: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        database_url = os.environ.get("LEDGER_DATABASE_URL") or None
        nats_url = os.environ.get("LEDGER_NATS_URL") or None
        producer_url = os.environ.get("LEDGER_PRODUCER_NATS_URL") or None
        if database_url is not None:
            check_database_url(database_url)
        if nats_url is not None:
            nats_servers(nats_url)
        if producer_url is not None:
            nats_servers(producer_url, "LEDGER_PRODUCER_NATS_URL")
        return cls(database_url=database_url, nats_url=nats_url,
                   data_dir=Path(os.environ.get("LEDGER_DATA_DIR") or DEFAULT_DATA_DIR),
                   producer_nats_url=producer_url)


def apply_postgres_session_options() -> None:
    """Make every PostgreSQL session this process opens from now on plan afresh (see
    POSTGRES_SESSION_OPTIONS). Idempotent."""
    current = os.environ.get(POSTGRES_OPTIONS_VARIABLE, "")
    if "plan_cache_mode" not in current:
        os.environ[POSTGRES_OPTIONS_VARIABLE] = f"{current} {POSTGRES_SESSION_OPTIONS}".strip()


def eventsourcing_env(database_url: str, *, schema: str = "public") -> dict[str, str]:
    """The eventsourcing library's settings for our PostgreSQL recorder at `database_url`.
    Every ledger process opens its event store through here before its other connections, so
    this is also where its sessions get their options (`apply_postgres_session_options`)."""
    apply_postgres_session_options()
    parsed = urlparse(check_database_url(database_url))
    return {
        "PERSISTENCE_MODULE": "adapters.postgres.event_store:LedgerPostgresFactory",
        "APPLICATION_RECORDER_TOPIC": "adapters.postgres.event_store:LedgerPostgresRecorder",
        "POSTGRES_DBNAME": (parsed.path or "/postgres").lstrip("/") or "postgres",
        "POSTGRES_HOST": parsed.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parsed.port or 5432),
        "POSTGRES_USER": unquote(parsed.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parsed.password or ""),
        "POSTGRES_POOL_SIZE": str(POSTGRES_POOL_SIZE),
        "POSTGRES_LOCK_TIMEOUT": str(POSTGRES_LOCK_TIMEOUT_SECONDS),
        "POSTGRES_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT_SECONDS),
        "POSTGRES_SCHEMA": schema,
        "CREATE_TABLE": "y",
    }
