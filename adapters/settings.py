"""Configuration from the environment, in one place, with the names documented in the README.

LEDGER_DATABASE_URL   PostgreSQL URL (postgresql://user:password@host:port/dbname). Unset: the
                      embedded server under LEDGER_DATA_DIR.
LEDGER_NATS_URL       NATS URL (nats://host:port). Unset: the embedded server.
LEDGER_DATA_DIR       Folder for embedded servers' files (default ./.ledger-data).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

DEFAULT_DATA_DIR = ".ledger-data"
POSTGRES_POOL_SIZE = 10
POSTGRES_LOCK_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    nats_url: str | None
    data_dir: Path

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=os.environ.get("LEDGER_DATABASE_URL") or None,
            nats_url=os.environ.get("LEDGER_NATS_URL") or None,
            data_dir=Path(os.environ.get("LEDGER_DATA_DIR") or DEFAULT_DATA_DIR),
        )


def eventsourcing_env(database_url: str, *, schema: str = "public") -> dict[str, str]:
    """The eventsourcing library's settings for our PostgreSQL recorder at `database_url`."""
    parsed = urlparse(database_url)
    if parsed.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"LEDGER_DATABASE_URL must start with postgresql://, got {parsed.scheme}")
    return {
        "PERSISTENCE_MODULE": "adapters.postgres_recorder:LedgerPostgresFactory",
        "APPLICATION_RECORDER_TOPIC": "adapters.postgres_recorder:LedgerPostgresRecorder",
        "POSTGRES_DBNAME": (parsed.path or "/postgres").lstrip("/") or "postgres",
        "POSTGRES_HOST": parsed.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parsed.port or 5432),
        "POSTGRES_USER": unquote(parsed.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parsed.password or ""),
        "POSTGRES_POOL_SIZE": str(POSTGRES_POOL_SIZE),
        "POSTGRES_LOCK_TIMEOUT": str(POSTGRES_LOCK_TIMEOUT_SECONDS),
        "POSTGRES_SCHEMA": schema,
        "CREATE_TABLE": "y",
    }
